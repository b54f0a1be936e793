-- The audit trail: one row for every event this service emits (issuance, revocation, key and
-- tenant operations), written in the same transaction as the change. Events never carry a
-- secret, so neither does this table. Append-only: updates and deletes are refused.
CREATE TABLE audit_log (
    position    bigserial PRIMARY KEY,
    event_id    uuid NOT NULL,
    occurred_at timestamptz NOT NULL,
    tenant      text NOT NULL,
    action      text NOT NULL,
    source      text NOT NULL,
    actor       text,
    request_id  text,
    data        jsonb NOT NULL
);
CREATE INDEX audit_log_tenant_time ON audit_log (tenant, occurred_at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
