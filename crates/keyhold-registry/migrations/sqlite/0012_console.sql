-- The console's sign-in: one-time links an admin mints (for a tenant's administrator, or
-- for the admin when tenant_id is NULL), and the sessions they become. Only SHA-256
-- digests of the secrets are stored: a copy of the registry signs nobody in.
CREATE TABLE console_links (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    used_ms     BIGINT
);
CREATE TABLE console_sessions (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT,
    csrf        TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_ms);
CREATE INDEX console_links_expiry ON console_links (expires_ms);
