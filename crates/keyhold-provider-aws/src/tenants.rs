//! BYOK for many tenants in one process: [`TenantRouter`] is one [`KeyProvider`] that
//! sends each call to the provider of the tenant it is for (the encryption context's
//! `tenant`): an [`AwsKms`] that assumed that tenant's role, when the tenant registered one,
//! else the platform's own [`AwsKms`] (CMK tenants, whose key policies grant the platform
//! principal directly). Calls without a context (`describe`, rotation, policy) go to the
//! platform provider; validation of a BYOK tenant asks [`TenantRouter::for_tenant`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use aws_config::SdkConfig;
use keyhold_core::{DataKey, EncryptedDataKey, EncryptionContext, KeyRef, RESERVED_TENANT_KEY, Region, TenantId};
use keyhold_provider::{KeyDescription, KeyProvider, ProviderError, Rotation};

use crate::{AssumeRole, AwsKms, AwsKmsConfig, PROVIDER_ID, load_sdk_config};

/// Routes calls to per-tenant assumed-role providers.
pub struct TenantRouter {
    base: SdkConfig,
    config: AwsKmsConfig,
    platform: Arc<AwsKms>,
    tenants: RwLock<HashMap<String, (String, Arc<AwsKms>)>>,
}

impl TenantRouter {
    /// Over the standard AWS configuration.
    pub async fn from_env(config: AwsKmsConfig) -> Self {
        Self::new(&load_sdk_config(&config).await, config)
    }

    /// Over `base` (its credentials are the platform's; they call STS for BYOK tenants).
    pub fn new(base: &SdkConfig, config: AwsKmsConfig) -> Self {
        Self {
            base: base.clone(),
            config,
            platform: Arc::new(AwsKms::new(base, config)),
            tenants: RwLock::new(HashMap::new()),
        }
    }

    /// Registers `tenant`'s role (assumed with `external_id`), once; a changed role
    /// replaces the provider. Returns the tenant's provider.
    pub async fn assume_for(&self, tenant: &TenantId, role_arn: &str, external_id: &str) -> Arc<AwsKms> {
        if let Some((role, p)) = self.read().get(tenant.as_str())
            && role == role_arn
        {
            return p.clone();
        }
        let role = AssumeRole::for_tenant(tenant, role_arn, external_id);
        let provider = Arc::new(AwsKms::assume_role_with(&self.base, &role, self.config).await);
        self.tenants
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant.as_str().to_owned(), (role_arn.to_owned(), provider.clone()));
        provider
    }

    /// A provider for `tenant` through `role_arn` that its calls are not routed to (the
    /// registered one if the role is the same): for validating a role before it serves.
    pub async fn assume_unregistered(&self, tenant: &TenantId, role_arn: &str, external_id: &str) -> Arc<AwsKms> {
        if let Some((role, p)) = self.read().get(tenant.as_str())
            && role == role_arn
        {
            return p.clone();
        }
        let role = AssumeRole::for_tenant(tenant, role_arn, external_id);
        Arc::new(AwsKms::assume_role_with(&self.base, &role, self.config).await)
    }

    /// Forgets `tenant`'s role (on deletion).
    pub fn forget(&self, tenant: &TenantId) {
        self.tenants.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(tenant.as_str());
    }

    /// The provider `tenant`'s calls go to.
    pub fn for_tenant(&self, tenant: &str) -> Arc<AwsKms> {
        self.read().get(tenant).map_or_else(|| self.platform.clone(), |(_, p)| p.clone())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, (String, Arc<AwsKms>)>> {
        self.tenants.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn route(&self, context: &EncryptionContext) -> Arc<AwsKms> {
        match context.get(RESERVED_TENANT_KEY) {
            Some(t) => self.for_tenant(t),
            None => self.platform.clone(),
        }
    }
}

#[async_trait]
impl KeyProvider for TenantRouter {
    fn name(&self) -> &'static str {
        PROVIDER_ID
    }

    fn accepts(&self, key: &KeyRef) -> bool {
        self.platform.accepts(key)
    }

    fn key_for(&self, edk: &EncryptedDataKey) -> Option<KeyRef> {
        self.platform.key_for(edk)
    }

    fn region_of(&self, key: &KeyRef) -> Option<Region> {
        self.platform.region_of(key)
    }

    fn wraps_in_region(&self, provider_id: &str, provider_info: &[u8], region: &Region) -> bool {
        self.platform.wraps_in_region(provider_id, provider_info, region)
    }

    async fn generate_data_key(
        &self,
        key: &KeyRef,
        len: usize,
        context: &EncryptionContext,
    ) -> Result<(DataKey, EncryptedDataKey), ProviderError> {
        self.route(context).generate_data_key(key, len, context).await
    }

    async fn wrap(
        &self,
        key: &KeyRef,
        data_key: &DataKey,
        context: &EncryptionContext,
    ) -> Result<EncryptedDataKey, ProviderError> {
        self.route(context).wrap(key, data_key, context).await
    }

    async fn unwrap(&self, edk: &EncryptedDataKey, context: &EncryptionContext) -> Result<DataKey, ProviderError> {
        self.route(context).unwrap(edk, context).await
    }

    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, ProviderError> {
        self.platform.describe(key).await
    }

    async fn rotation(&self, key: &KeyRef) -> Result<Rotation, ProviderError> {
        self.platform.rotation(key).await
    }

    async fn key_policy(&self, key: &KeyRef) -> Result<Option<String>, ProviderError> {
        self.platform.key_policy(key).await
    }
}
