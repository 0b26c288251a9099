-- Lifecycle events: every tenant and key state change and every health finding, stored
-- durably, in the transaction of the change it reports where there is one. Ids come from
-- event_seq, whose one row is updated in the inserting transaction: the row lock (the
-- write lock, on SQLite) is held until commit, so ids are assigned in commit order and a
-- reader paging with ?after= never skips an event committed later under a smaller id.
-- dedupe names an event that must exist once however many instances report it.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    tenant_id  TEXT,
    kind       TEXT NOT NULL,
    at_ms      BIGINT NOT NULL,
    data       TEXT NOT NULL,
    dedupe     TEXT UNIQUE
);
CREATE INDEX events_by_tenant ON events (tenant_id, id);
CREATE INDEX events_by_kind ON events (kind, id);
CREATE TABLE event_seq (
    one   INTEGER PRIMARY KEY CHECK (one = 1),
    next  BIGINT NOT NULL
);
INSERT INTO event_seq (one, next) VALUES (1, 0);
