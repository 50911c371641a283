-- Idempotency-Key results, stored in the same transaction as the change they record,
-- replayed for 24 hours, then purged.
CREATE TABLE idempotency_keys (
    owner         text        NOT NULL,
    key           text        NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    request_hash  bytea       NOT NULL,
    status_code   smallint    NOT NULL,
    response_body bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, key)
);

CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
