-- The W3C `traceparent` of the request that made the change (NULL when it had none), so
-- the events published from the outbox continue the request's trace.
ALTER TABLE outbox ADD COLUMN traceparent text;
