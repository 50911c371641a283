-- Todos, scoped by owner. `version` starts at 1 and grows by one per change (the ETag).
CREATE TABLE todos (
    id          uuid        PRIMARY KEY,
    owner       text        NOT NULL CHECK (char_length(owner) BETWEEN 1 AND 200),
    title       text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 1000),
    completed   boolean     NOT NULL DEFAULT false,
    "order"     integer,
    version     bigint      NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The list order: "order" (nulls last), then created_at, then id; always per owner.
CREATE INDEX todos_owner_list_order_idx ON todos (owner, "order" ASC NULLS LAST, created_at, id);
