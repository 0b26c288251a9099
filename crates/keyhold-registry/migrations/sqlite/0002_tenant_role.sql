-- BYOK tenants: the role in the tenant's account that keyhold assumes.
ALTER TABLE tenants ADD COLUMN role_arn TEXT;
