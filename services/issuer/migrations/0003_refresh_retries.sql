-- Refresh grace retries are bounded: each retry of a used refresh token is counted here.
ALTER TABLE tokens ADD COLUMN retries integer NOT NULL DEFAULT 0;
-- A grace retry re-signs the same claims. ECDSA signatures differ every time, so the retried
-- refresh token is the same token (same jti) under another signature: its keyed hash is kept
-- here, pointing at the token, so it refreshes like the first copy. Never a secret in clear.
CREATE TABLE refresh_aliases (
    secret_hash bytea PRIMARY KEY,
    token_id    uuid NOT NULL REFERENCES tokens (id) ON DELETE CASCADE
);
