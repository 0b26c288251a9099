-- Webhook endpoints (a tenant's, or platform-wide when tenant_id is NULL) and the durable
-- delivery queue. A delivery is queued in the transaction that stores its event, for
-- every enabled endpoint whose filter takes the event's type (types: NULL for all, else
-- ",type,type,"). Instances claim due deliveries with a lease (FOR UPDATE SKIP LOCKED on
-- PostgreSQL), so one instance sends each at a time; every attempt is logged.
CREATE TABLE webhook_endpoints (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT,
    url                  TEXT NOT NULL,
    types                TEXT,
    secret               TEXT NOT NULL,
    old_secret           TEXT,
    old_secret_until_ms  BIGINT,
    created_ms           BIGINT NOT NULL,
    disabled_ms          BIGINT,
    disabled_reason      TEXT
);
CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant_id);
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    endpoint_id     TEXT NOT NULL,
    event_id        BIGINT NOT NULL,
    created_ms      BIGINT NOT NULL,
    next_ms         BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,
    lease_until_ms  BIGINT,
    last_status     INTEGER,
    last_error      TEXT,
    done_ms         BIGINT,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_ms);
CREATE TABLE webhook_attempts (
    delivery_id  BIGINT NOT NULL,
    endpoint_id  TEXT NOT NULL,
    event_id     BIGINT NOT NULL,
    attempt      INTEGER NOT NULL,
    at_ms        BIGINT NOT NULL,
    status       INTEGER,
    error        TEXT,
    latency_ms   BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, at_ms);
