-- The transactional outbox: every committed change of a todo writes one event here, in
-- the same statement as the change (so in its transaction, whichever path wrote it).
-- `id` is the insertion order, which is not the commit order (two transactions may
-- commit the other way round). `seq` is the commit order: a relay assigns it, one relay
-- at a time (under an advisory lock), to rows it can see, so a row that commits later
-- always gets a larger `seq` than every row seen before it. Readers of the events (the
-- replicas' cache invalidation, the live feed, the NATS publisher) go by `seq`.
CREATE TABLE outbox (
    id          bigserial   PRIMARY KEY,
    seq         bigint      UNIQUE,
    owner       text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('created', 'updated', 'deleted')),
    todo_id     uuid        NOT NULL,
    -- The replica whose writer made the change: its own caches are current already.
    replica     uuid        NOT NULL,
    -- The todo as stored (JSON), or {"id": …} for a deletion.
    payload     text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- What the relay still has to sequence.
CREATE INDEX outbox_unsequenced_idx ON outbox (id) WHERE seq IS NULL;
-- An owner's events in order (the live feed's resume).
CREATE INDEX outbox_owner_seq_idx ON outbox (owner, seq) WHERE seq IS NOT NULL;

-- One row: the highest `seq` assigned, the highest published to NATS, and the highest
-- purged (a feed asked to resume from before it is told to list again).
CREATE TABLE outbox_state (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_seq       bigint  NOT NULL DEFAULT 0,
    published_seq  bigint  NOT NULL DEFAULT 0,
    purged_seq     bigint  NOT NULL DEFAULT 0
);
INSERT INTO outbox_state DEFAULT VALUES;
