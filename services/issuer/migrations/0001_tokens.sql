-- Every credential the issuer has issued. Secrets are never stored: opaque tokens and refresh
-- JWTs only as HMAC-SHA256 under the pepper (secret_hash); access JWTs not at all.
CREATE TABLE tokens (
    id           uuid PRIMARY KEY,          -- for JWTs, the jti
    display_id   text UNIQUE,               -- the Databricks token_id (64 hex), else NULL
    tenant       text NOT NULL,
    subject      text NOT NULL,
    kind         text NOT NULL
                 CHECK (kind IN ('opaque', 'databricks', 'jobmanager', 'jwt_access', 'jwt_refresh')),
    name         text,
    permissions  text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,               -- NULL: never expires
    last_used_at timestamptz,
    revoked_at   timestamptz,
    created_by   text,
    family_id    uuid,                      -- refresh family (JWTs)
    kid          text,                      -- signing key (JWTs)
    secret_hash  bytea UNIQUE,
    -- Refresh rotation: when this refresh token was used, and the claims of the pair it got,
    -- so a retry inside the grace window is answered with the same pair (re-signed).
    used_at      timestamptz,
    replaced_by  json            -- json, not jsonb: claim order must survive (Tapis fixes it)
);
CREATE INDEX tokens_owner_newest ON tokens (tenant, subject, created_at DESC, id DESC);
CREATE INDEX tokens_tenant_newest ON tokens (tenant, created_at DESC, id DESC);
CREATE INDEX tokens_family ON tokens (family_id) WHERE family_id IS NOT NULL;
CREATE INDEX tokens_kid ON tokens (tenant, kid) WHERE kid IS NOT NULL;
