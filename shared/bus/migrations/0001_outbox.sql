-- Events waiting to be published: written in the same transaction as the state change they
-- describe, deleted by the relay only once the broker has confirmed them.
CREATE TABLE outbox (
    position    bigserial PRIMARY KEY,
    event_id    uuid NOT NULL UNIQUE,
    routing_key text NOT NULL,
    body        bytea NOT NULL,
    request_id  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Events a consumer has applied, so a redelivered duplicate is acknowledged and skipped.
CREATE TABLE processed_events (
    consumer     text NOT NULL,
    event_id     uuid NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX processed_events_age ON processed_events (processed_at);
