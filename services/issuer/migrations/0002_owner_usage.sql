-- An upper bound of each owner's active opaque tokens, so a create checks its quota without
-- counting them: every insert adds to it, nothing subtracts (revocation and expiry only make
-- the true count smaller). When it would pass the quota, the tokens are counted and it is reset
-- to the true count.
CREATE TABLE owner_usage (
    tenant  text NOT NULL,
    subject text NOT NULL,
    issued  integer NOT NULL,
    PRIMARY KEY (tenant, subject)
);
-- Existing owners start from their true count.
INSERT INTO owner_usage (tenant, subject, issued)
SELECT tenant, subject, count(*) FROM tokens
WHERE kind IN ('opaque', 'databricks', 'jobmanager')
  AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
GROUP BY tenant, subject;
