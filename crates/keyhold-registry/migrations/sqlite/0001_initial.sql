-- keyhold registry, SQLite: tenants, their keys per region, service identities, and the
-- per-tenant hash-chained audit trail. Times are milliseconds since the Unix epoch.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    realm       TEXT NOT NULL,
    mode        TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);

CREATE TABLE tenant_keys (
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    region         TEXT NOT NULL,
    key_arn        TEXT NOT NULL,
    state          TEXT NOT NULL,
    last_check_ms  BIGINT,
    findings       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, region)
);

CREATE TABLE service_identities (
    name        TEXT PRIMARY KEY NOT NULL,
    public_key  BLOB NOT NULL,
    purposes    TEXT NOT NULL,
    created_ms  BIGINT NOT NULL
);

CREATE TABLE audit_events (
    tenant_id  TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    at_ms      BIGINT NOT NULL,
    body       TEXT NOT NULL,
    prev_hash  BLOB NOT NULL,
    hash       BLOB NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

-- The newest event of each trail: appends serialize on it, and verification compares
-- against it, so a deleted last event is noticed.
CREATE TABLE audit_heads (
    tenant_id  TEXT PRIMARY KEY NOT NULL,
    seq        BIGINT NOT NULL,
    hash       BLOB NOT NULL
);
