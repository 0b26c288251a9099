-- The cluster-wide probe schedule: one row per tenant the monitor watches, claimed by one
-- instance at a time (a lease; FOR UPDATE SKIP LOCKED on PostgreSQL), so every tenant's
-- keys are probed once per interval across the cluster, not once per instance. key_traffic
-- records, per key, when real traffic last generated and decrypted with it successfully:
-- a key that did both within the interval needs no probe.
CREATE TABLE probe_schedule (
    tenant_id       TEXT PRIMARY KEY,
    due_ms          BIGINT NOT NULL,
    lease_until_ms  BIGINT,
    last_ms         BIGINT
);
CREATE INDEX probe_schedule_due ON probe_schedule (due_ms);
CREATE TABLE key_traffic (
    tenant_id         TEXT NOT NULL,
    key_arn           TEXT NOT NULL,
    generate_ok_ms    BIGINT NOT NULL DEFAULT 0,
    decrypt_ok_ms     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, key_arn)
);
