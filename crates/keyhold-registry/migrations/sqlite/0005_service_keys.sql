-- Service identities with a key lifecycle: each service may have several Ed25519 keys, the
-- newest without an expiry and older ones accepted until `expires_ms` (the overlap of a
-- rotation). `service_identities.public_key` keeps the newest key, for older readers.
CREATE TABLE service_keys (
    service     TEXT NOT NULL REFERENCES service_identities (name) ON DELETE CASCADE,
    key_id      TEXT NOT NULL,
    public_key  BLOB NOT NULL,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT,
    PRIMARY KEY (service, key_id)
);

INSERT INTO service_keys (service, key_id, public_key, created_ms, expires_ms)
    SELECT name, lower(hex(public_key)), public_key, created_ms, NULL FROM service_identities;
