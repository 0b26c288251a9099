-- Key history: every key ever attached to a tenant, per region, with its status
-- (active: encrypts and decrypts; decrypt_only: replaced, still decrypts its messages;
-- retired: never used again). One active key per (tenant, region); a key belongs to one
-- tenant. Tenants get a version (bumped by every change, for compare-and-set) and the
-- typed cause of their last transition.
CREATE TABLE key_history (
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    region         TEXT NOT NULL,
    key_arn        TEXT NOT NULL,
    status         TEXT NOT NULL,
    state          TEXT NOT NULL,
    last_check_ms  INTEGER,
    findings       TEXT NOT NULL,
    attached_ms    INTEGER NOT NULL,
    status_ms      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, region, key_arn)
);
CREATE UNIQUE INDEX key_history_one_owner ON key_history (key_arn);
CREATE UNIQUE INDEX key_history_one_active ON key_history (tenant_id, region) WHERE status = 'active';
INSERT INTO key_history (tenant_id, region, key_arn, status, state, last_check_ms, findings, attached_ms, status_ms)
    SELECT tenant_id, region, key_arn, 'active', state, last_check_ms, findings,
           COALESCE(last_check_ms, 0), COALESCE(last_check_ms, 0)
    FROM tenant_keys;
DROP TABLE tenant_keys;
ALTER TABLE tenants ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN cause TEXT;
