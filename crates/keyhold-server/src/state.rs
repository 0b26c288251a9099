//! The server's shared state: registry, audit trail, the orchestration service over
//! audited key providers, an in-memory view of tenants (so the encrypt and decrypt paths
//! do not query the database), a cache of verified tokens, usage counts and metrics.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use keyhold_audit::{Auditor, Event, UsageCounter};
use keyhold_core::{Clock, DataKey, EncryptedDataKey, EncryptionContext, KeyRef, Region, TenantId};
use keyhold_onboarding::RealmCatalog;
use keyhold_onboarding::external_id;
use keyhold_provider::{KeyDescription, KeyProvider, ProviderError, Rotation};
use keyhold_provider_aws::TenantRouter;
use keyhold_registry::{Registry, Tenant, TenantMode, TenantState};
use keyhold_service::Keyhold;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// What the encrypt and decrypt paths need to know of a tenant.
#[derive(Debug, Clone)]
pub struct TenantView {
    /// The tenant.
    pub tenant: Tenant,
    /// Its keys in realm order (home region first).
    pub keys: Arc<[KeyRef]>,
    /// When it was read from the registry (ms since the Unix epoch).
    pub loaded_ms: u64,
}

/// How long a tenant's in-memory view is trusted before the registry is read again, so a
/// change made through another instance (suspension, deletion, new keys) is seen within
/// this bound.
pub const TENANT_VIEW_TTL_MS: u64 = 5_000;

/// Shared state behind every handler.
pub struct AppState {
    /// The registry.
    pub registry: Registry,
    /// The audit trail.
    pub auditor: Auditor,
    /// Orchestration over the audited providers.
    pub keyhold: Keyhold,
    /// The audited providers (also used by validation).
    pub providers: Vec<Arc<dyn KeyProvider>>,
    /// The realm catalog.
    pub catalog: RealmCatalog,
    /// The admin public key (verifies admin and tenant-admin tokens).
    pub admin_public_key: Vec<u8>,
    /// The IAM principal keyhold runs as, for generated policies and their analysis.
    pub platform_principal: Option<String>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Per-minute usage counts.
    pub usage: UsageCounter,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The AWS KMS router: BYOK tenants' calls go through their assumed roles.
    pub aws: Option<Arc<TenantRouter>>,
    tenants: RwLock<HashMap<TenantId, Arc<TenantView>>>,
    tokens: RwLock<HashMap<String, (Principal, u64)>>,
}

impl AppState {
    /// Assembles the state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        registry: Registry,
        keyhold_for: impl FnOnce(Vec<Arc<dyn KeyProvider>>) -> Keyhold,
        providers: Vec<Arc<dyn KeyProvider>>,
        catalog: RealmCatalog,
        admin_public_key: Vec<u8>,
        platform_principal: Option<String>,
        clock: Arc<dyn Clock>,
        aws: Option<Arc<TenantRouter>>,
    ) -> Self {
        let auditor = Auditor::new(registry.clone());
        let metrics = Arc::new(Metrics::default());
        let audited: Vec<Arc<dyn KeyProvider>> =
            providers.into_iter().map(|p| audited(p, &auditor, &metrics, &clock)).collect();
        Self {
            keyhold: keyhold_for(audited.clone()),
            registry,
            auditor,
            providers: audited,
            catalog,
            admin_public_key,
            platform_principal,
            clock,
            usage: UsageCounter::new(),
            metrics,
            aws,
            tenants: RwLock::new(HashMap::new()),
            tokens: RwLock::new(HashMap::new()),
        }
    }

    /// For a BYOK tenant, makes sure its role is registered with the AWS router (so its
    /// calls use the assumed role's credentials); returns that tenant's own provider.
    pub async fn register_role(&self, tenant: &Tenant) -> Option<Arc<dyn KeyProvider>> {
        let (TenantMode::Byok, Some(role), Some(aws)) = (tenant.mode, &tenant.role_arn, &self.aws) else {
            return None;
        };
        let p = aws.assume_for(&tenant.id, role, &external_id(&tenant.id)).await;
        Some(audited(p, &self.auditor, &self.metrics, &self.clock))
    }

    /// The providers validation uses for `tenant`: a BYOK tenant's own first.
    pub async fn validation_providers(&self, tenant: &Tenant) -> Vec<Arc<dyn KeyProvider>> {
        match self.register_role(tenant).await {
            Some(own) => std::iter::once(own).chain(self.providers.iter().cloned()).collect(),
            None => self.providers.clone(),
        }
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_millis()
    }

    /// The tenant and its keys, from memory or the registry.
    pub async fn tenant_view(&self, id: &TenantId) -> Result<Arc<TenantView>, ApiError> {
        let now = self.now_ms();
        if let Some(v) = self.tenants.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(id)
            && now.saturating_sub(v.loaded_ms) < TENANT_VIEW_TTL_MS
        {
            return Ok(v.clone());
        }
        let tenant = self.registry.tenant(id).await?.ok_or_else(|| ApiError::tenant_not_found(id.as_str()))?;
        let realm = self.catalog.get(tenant.realm.as_str()).ok();
        let stored = self.registry.keys(id).await?;
        let mut keys = Vec::new();
        if let Some(realm) = realm {
            for region in &realm.regions {
                if let Some(k) = stored.iter().find(|k| &k.region == region)
                    && let Ok(r) = KeyRef::parse(&k.key)
                {
                    keys.push(r);
                }
            }
        }
        self.register_role(&tenant).await;
        if matches!(tenant.state, TenantState::Suspended | TenantState::Deleted) {
            // Another instance may have suspended or deleted it: drop our cached keys too.
            self.keyhold.flush_tenant(id);
        }
        let view = Arc::new(TenantView { tenant, keys: keys.into(), loaded_ms: now });
        self.tenants.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone(), view.clone());
        Ok(view)
    }

    /// Forgets the in-memory view of a tenant (after any change to it).
    pub fn forget_tenant(&self, id: &TenantId) {
        self.tenants.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
    }

    /// Moves a tenant to `to`, records it in the audit trail, refreshes the view, and on
    /// suspension or deletion drops its cached data keys.
    pub async fn change_state(
        &self,
        tenant: &Tenant,
        to: TenantState,
        reason: Option<&str>,
    ) -> Result<Tenant, ApiError> {
        let now = self.now_ms();
        let updated = if to == TenantState::Deleted {
            self.registry.delete_tenant(&tenant.id, reason.unwrap_or("deleted"), now).await?
        } else {
            self.registry.set_tenant_state(&tenant.id, to, reason, now).await?
        };
        self.forget_tenant(&tenant.id);
        if let (TenantState::Deleted, Some(aws)) = (to, &self.aws) {
            aws.forget(&tenant.id);
        }
        if matches!(to, TenantState::Suspended | TenantState::Deleted) {
            self.keyhold.flush_tenant(&tenant.id);
        }
        self.audit(
            &tenant.id,
            &Event::TenantState {
                from: tenant.state.to_string(),
                to: to.to_string(),
                reason: reason.map(str::to_owned),
            },
        )
        .await;
        Ok(updated)
    }

    /// Appends to a tenant's audit trail. A failure to record is counted in the metrics
    /// and does not fail the request that caused it.
    pub async fn audit(&self, tenant: &TenantId, event: &Event) {
        if self.auditor.record(tenant, self.now_ms(), event).await.is_err() {
            self.metrics.audit_failure();
        }
    }

    /// A verified principal for `token`, if it was verified before and has not expired.
    pub fn cached_principal(&self, token: &str, now_s: u64) -> Option<Principal> {
        let tokens = self.tokens.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens.get(token).filter(|(_, exp)| *exp > now_s).map(|(p, _)| p.clone())
    }

    /// Remembers a verified token until it expires (bounded: expired entries are swept
    /// when the map grows).
    pub fn cache_principal(&self, token: &str, principal: Principal, exp_s: u64, now_s: u64) {
        let mut tokens = self.tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tokens.len() >= 10_000 {
            tokens.retain(|_, (_, exp)| *exp > now_s);
        }
        if tokens.len() < 10_000 {
            tokens.insert(token.to_owned(), (principal, exp_s));
        }
    }

    /// Writes the finished minutes' usage counts to the audit trail.
    pub async fn flush_usage(&self, all: bool) {
        for (tenant, event) in self.usage.drain(self.now_ms(), all) {
            self.audit(&tenant, &event).await;
        }
    }
}

fn audited(
    inner: Arc<dyn KeyProvider>,
    auditor: &Auditor,
    metrics: &Arc<Metrics>,
    clock: &Arc<dyn Clock>,
) -> Arc<dyn KeyProvider> {
    Arc::new(Audited { inner, auditor: auditor.clone(), metrics: metrics.clone(), clock: clock.clone() })
}

/// A provider whose every call is written to the tenant's audit trail (the tenant is the
/// encryption context's `tenant`) and counted in the metrics.
struct Audited {
    inner: Arc<dyn KeyProvider>,
    auditor: Auditor,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl Audited {
    async fn record<T>(
        &self,
        operation: &'static str,
        key: &KeyRef,
        context: Option<&EncryptionContext>,
        started: Instant,
        result: &Result<T, ProviderError>,
    ) {
        let outcome = match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code().to_owned(),
        };
        self.metrics.provider_call(operation, if result.is_ok() { "ok" } else { "error" });
        let Some(tenant) = context.and_then(|c| c.get(keyhold_core::RESERVED_TENANT_KEY)) else { return };
        let Ok(tenant) = TenantId::parse(tenant) else { return };
        let event = Event::ProviderCall {
            operation: operation.to_owned(),
            key: key.to_string(),
            region: self.inner.region_of(key).map(|r| r.to_string()),
            context: context.map(|c| c.as_map().clone()).unwrap_or_default(),
            outcome,
            latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        };
        if self.auditor.record(&tenant, self.clock.now_millis(), &event).await.is_err() {
            self.metrics.audit_failure();
        }
    }
}

#[async_trait]
impl KeyProvider for Audited {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn accepts(&self, key: &KeyRef) -> bool {
        self.inner.accepts(key)
    }

    fn key_for(&self, edk: &EncryptedDataKey) -> Option<KeyRef> {
        self.inner.key_for(edk)
    }

    fn region_of(&self, key: &KeyRef) -> Option<Region> {
        self.inner.region_of(key)
    }

    fn wraps_in_region(&self, provider_id: &str, provider_info: &[u8], region: &Region) -> bool {
        self.inner.wraps_in_region(provider_id, provider_info, region)
    }

    async fn generate_data_key(
        &self,
        key: &KeyRef,
        len: usize,
        context: &EncryptionContext,
    ) -> Result<(DataKey, EncryptedDataKey), ProviderError> {
        let started = Instant::now();
        let r = self.inner.generate_data_key(key, len, context).await;
        self.record("GenerateDataKey", key, Some(context), started, &r).await;
        r
    }

    async fn wrap(
        &self,
        key: &KeyRef,
        data_key: &DataKey,
        context: &EncryptionContext,
    ) -> Result<EncryptedDataKey, ProviderError> {
        let started = Instant::now();
        let r = self.inner.wrap(key, data_key, context).await;
        self.record("Encrypt", key, Some(context), started, &r).await;
        r
    }

    async fn unwrap(&self, edk: &EncryptedDataKey, context: &EncryptionContext) -> Result<DataKey, ProviderError> {
        let started = Instant::now();
        let r = self.inner.unwrap(edk, context).await;
        if let Some(key) = self.inner.key_for(edk) {
            self.record("Decrypt", &key, Some(context), started, &r).await;
        }
        r
    }

    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, ProviderError> {
        let started = Instant::now();
        let r = self.inner.describe(key).await;
        self.record("DescribeKey", key, None, started, &r).await;
        r
    }

    async fn rotation(&self, key: &KeyRef) -> Result<Rotation, ProviderError> {
        self.inner.rotation(key).await
    }

    async fn key_policy(&self, key: &KeyRef) -> Result<Option<String>, ProviderError> {
        self.inner.key_policy(key).await
    }
}
