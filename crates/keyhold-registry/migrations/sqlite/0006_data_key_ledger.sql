-- The data-key ledger. Every data key keyhold generates is recorded before its first use
-- (data_keys, keyed by an id derived from its encrypted form) with the root keys that
-- wrap it (data_key_wraps); instances add the messages and bytes they encrypted under it
-- periodically. Re-encrypted messages are recorded once each (by message id), with the
-- data key they were under, so retries are not counted twice. A tenant's data-key
-- generation is bumped by a forced rotation: no instance reuses a data key cached under
-- an older generation.
ALTER TABLE tenants ADD COLUMN dek_generation BIGINT NOT NULL DEFAULT 0;
CREATE TABLE data_keys (
    tenant_id     TEXT NOT NULL,
    id            TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    last_used_ms  BIGINT,
    messages      BIGINT NOT NULL DEFAULT 0,
    bytes         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE data_key_wraps (
    tenant_id  TEXT NOT NULL,
    data_key   TEXT NOT NULL,
    key_arn    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, data_key, key_arn)
);
CREATE INDEX data_key_wraps_by_key ON data_key_wraps (tenant_id, key_arn);
CREATE TABLE reencrypted_messages (
    tenant_id   TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    data_key    TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, message_id)
);
CREATE INDEX reencrypted_by_data_key ON reencrypted_messages (tenant_id, data_key);
