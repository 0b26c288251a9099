-- Whether a data key's counts are complete. Each data key is used by the one instance that
-- generated it (its owner). An instance records when each flush took its counts
-- (ledger_instances.flushed_ms) and closes a data key once its last counts are written
-- (evicted from its cache, or at a clean shutdown). A data key under a replaced key is
-- settled when closed, or when its owner flushed after the key was replaced (nothing is
-- encrypted under a replaced key after the tenant-view bound); an instance killed before
-- that leaves its data keys unsettled, and retirement then needs force. Data keys from
-- before this migration count as settled.
ALTER TABLE data_keys ADD COLUMN owner TEXT;
ALTER TABLE data_keys ADD COLUMN closed_ms BIGINT;
UPDATE data_keys SET closed_ms = created_ms;
CREATE TABLE ledger_instances (
    id          TEXT PRIMARY KEY,
    started_ms  BIGINT NOT NULL,
    flushed_ms  BIGINT NOT NULL
);
