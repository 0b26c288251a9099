-- The audit signing key's Ed25519 signature over each trail's head (tenant, seq, hash), so
-- that a trail rewritten by someone with database access but without the key is detected.
-- NULL for heads written before this migration: they verify as unsigned until the next
-- event is appended.
ALTER TABLE audit_heads ADD COLUMN sig BLOB;
