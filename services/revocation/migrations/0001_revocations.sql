-- The revocation sequence: one row, updated inside every revoking transaction. Its row lock
-- serialises revocations, so seq N+1 can only be assigned after seq N has committed: a reader
-- that sees current seq M sees every revocation with seq <= M (no later "hole" can fill in).
CREATE TABLE revocation_counter (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint NOT NULL
);
INSERT INTO revocation_counter (singleton, seq) VALUES (true, 0);

-- Kept apart from the counter so pruning never waits on (or blocks) a revocation.
CREATE TABLE revocation_pruning (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through bigint NOT NULL
);
INSERT INTO revocation_pruning (singleton, pruned_through) VALUES (true, 0);

CREATE TABLE revocations (
    seq        bigint PRIMARY KEY,
    tenant     text NOT NULL,
    token_id   text NOT NULL,
    jti        text,
    display_id text,
    subject    text,
    kind       text,
    family_id  text,
    kid        text,
    expires_at timestamptz,
    revoked_at timestamptz NOT NULL,
    reason     text,
    actor      text,
    -- Revoking twice is one revocation.
    UNIQUE (tenant, token_id)
);
CREATE INDEX revocations_expiry ON revocations (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX revocations_tenant_seq ON revocations (tenant, seq);
