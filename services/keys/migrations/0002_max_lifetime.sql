-- The longest a credential minted in the tenant may live, in seconds (CONTRACTS.md §0):
-- 2 years by default, as Databricks. Nothing mints past it, whoever asks.
ALTER TABLE tenants ADD COLUMN max_lifetime integer NOT NULL DEFAULT 63072000
    CHECK (max_lifetime > 0);
