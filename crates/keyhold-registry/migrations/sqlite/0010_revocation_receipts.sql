-- Revocation receipts: when each instance dropped a tenant's cached keys after the tenant
-- was suspended or deleted (the tenant's version of that state), so the tenant can be
-- told when the last running instance confirmed.
CREATE TABLE revocation_receipts (
    tenant_id   TEXT NOT NULL,
    version     BIGINT NOT NULL,
    instance    TEXT NOT NULL,
    dropped_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, version, instance)
);
