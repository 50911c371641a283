-- Stored idempotent replies become transport-neutral: what the first request did
-- (`outcome`: created or updated) instead of an HTTP status, and a request hash of the
-- parsed command (`hash_scheme` 2) instead of method, path and raw body (scheme 1).
-- Rows stored before keep scheme 1 and no outcome: they are replayed without comparing
-- hashes (no request can reproduce the old one) and their outcome is read from
-- `status_code` until they expire after 24 hours. The column default stays 1, so rows
-- that replicas of the previous release insert during a rolling update are read right;
-- this release writes every column, the status included, for those replicas.
ALTER TABLE idempotency_keys
    ADD COLUMN outcome text CHECK (outcome IN ('created', 'updated')),
    ADD COLUMN hash_scheme smallint NOT NULL DEFAULT 1;
