CREATE TABLE tenants (
    id              text PRIMARY KEY,
    issuer          text NOT NULL,
    alg             text NOT NULL CHECK (alg IN ('RS256', 'ES256', 'EdDSA')),
    access_ttl      integer NOT NULL CHECK (access_ttl > 0),
    refresh_ttl     integer NOT NULL CHECK (refresh_ttl > 0),
    token_quota     integer NOT NULL CHECK (token_quota > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- The scheduled rotation claims a tenant by moving this forward under a row lock.
    last_rotated_at timestamptz NOT NULL DEFAULT now()
);

-- Private keys are stored only as AES-256-GCM ciphertext (see services/keys/crypto.py).
CREATE TABLE signing_keys (
    kid           text PRIMARY KEY,
    tenant        text NOT NULL REFERENCES tenants (id),
    alg           text NOT NULL,
    state         text NOT NULL CHECK (state IN ('pending', 'active', 'retired', 'revoked')),
    public_jwk    jsonb NOT NULL,
    public_pem    text NOT NULL,
    sealed_key    bytea NOT NULL,
    kek_id        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    activates_at  timestamptz NOT NULL,
    retired_at    timestamptz,
    revoked_at    timestamptz,
    -- The latest exp this key may have signed (a watermark moved ahead of every signature):
    -- a retired key stays in the JWKS until then. NULL: nothing signed yet.
    max_exp       timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (tenant) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_pending ON signing_keys (tenant) WHERE state = 'pending';
CREATE INDEX signing_keys_tenant ON signing_keys (tenant, created_at);
