//! A key provider whose every call is in the tenant's audit trail before its result is
//! used: the request path's providers are wrapped in [`Audited`].
//!
//! A successful call is recorded with its encryption context (capped at
//! [`keyhold_core::MAX_CONTEXT_BYTES`] before any call is made); a failed one with the
//! SHA-256 of its serialized context instead, so a caller cannot make keyhold store what it
//! likes, and identical failures are aggregated by the [`Journal`]. If the record cannot
//! be written the call's result is withheld ([`ProviderError::AuditUnavailable`]): a data
//! key unwrapped but not recorded is dropped (zeroized) unused.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use aws_lc_rs::digest;
use keyhold_audit::Event;
use keyhold_core::{DataKey, EncryptedDataKey, EncryptionContext, KeyRef, RESERVED_TENANT_KEY, Region, TenantId};
use keyhold_provider::{KeyDescription, KeyProvider, ProviderError, Rotation};

use crate::journal::Journal;
use crate::limits::Limiter;
use crate::metrics::Metrics;

/// Wraps `inner` so its calls are audited through `journal` and counted in `metrics`.
pub fn audited(
    inner: Arc<dyn KeyProvider>,
    journal: &Arc<Journal>,
    metrics: &Arc<Metrics>,
    limiter: &Arc<Limiter>,
    traffic: &Arc<Traffic>,
) -> Arc<dyn KeyProvider> {
    Arc::new(Audited {
        inner,
        journal: journal.clone(),
        metrics: metrics.clone(),
        limiter: limiter.clone(),
        traffic: traffic.clone(),
    })
}

/// Successful real traffic per (tenant, key) since the last flush: when it last generated
/// (or wrapped) and last decrypted, so the monitor can skip keys traffic proves healthy.
pub struct Traffic {
    seen: std::sync::Mutex<std::collections::HashMap<(TenantId, String), (u64, u64)>>,
    clock: Arc<dyn keyhold_core::Clock>,
}

impl Traffic {
    /// An empty record over `clock`.
    pub fn new(clock: Arc<dyn keyhold_core::Clock>) -> Self {
        Self { seen: std::sync::Mutex::new(std::collections::HashMap::new()), clock }
    }

    fn note(&self, tenant: &TenantId, key: &KeyRef, decrypt: bool) {
        let now = self.clock.now_millis();
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = seen.entry((tenant.clone(), key.to_string())).or_insert((0, 0));
        if decrypt {
            e.1 = now;
        } else {
            e.0 = now;
        }
    }

    /// Takes what was seen since the last call.
    pub fn take(&self) -> Vec<keyhold_registry::KeyTraffic> {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        seen.into_iter().map(|((t, k), (g, d))| (t, k, g, d)).collect()
    }
}

/// A provider whose every call is written to the tenant's audit trail (the tenant is the
/// encryption context's `tenant`) and counted in the metrics, within the tenant's budget
/// of key-service calls.
pub struct Audited {
    inner: Arc<dyn KeyProvider>,
    journal: Arc<Journal>,
    metrics: Arc<Metrics>,
    limiter: Arc<Limiter>,
    traffic: Arc<Traffic>,
}

impl Audited {
    /// Takes one call from the budget of the tenant `context` names; over it, no call is
    /// made ([`ProviderError::BudgetExceeded`]).
    fn budget(&self, context: &EncryptionContext) -> Result<(), ProviderError> {
        match context.get(RESERVED_TENANT_KEY) {
            Some(tenant) => self.limiter.admit_kms(tenant).map_err(|retry_after_s| {
                self.metrics.provider_call("BudgetExceeded", "refused");
                ProviderError::BudgetExceeded { retry_after_s }
            }),
            None => Ok(()),
        }
    }

    /// Records the call; on failure to record, the result is replaced by
    /// [`ProviderError::AuditUnavailable`].
    async fn record<T>(
        &self,
        operation: &'static str,
        key: &KeyRef,
        context: Option<&EncryptionContext>,
        started: Instant,
        result: Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        self.metrics.provider_call(operation, if result.is_ok() { "ok" } else { "error" });
        let tenant = context.and_then(|c| c.get(RESERVED_TENANT_KEY)).and_then(|t| TenantId::parse(t).ok());
        if let (Some(t), Ok(_)) = (&tenant, &result)
            && matches!(operation, "GenerateDataKey" | "Encrypt" | "Decrypt")
        {
            self.traffic.note(t, key, operation == "Decrypt");
        }
        let Some(tenant) = tenant else {
            // Calls without a tenant (describe during validation) have no trail to go to;
            // validation records its findings itself.
            return result;
        };
        let region = self.inner.region_of(key).map(|r| r.to_string());
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let written = match &result {
            Ok(_) => {
                let event = Event::ProviderCall {
                    operation: operation.to_owned(),
                    key: key.to_string(),
                    region,
                    context: context.map(|c| c.as_map().clone()),
                    context_digest: None,
                    outcome: "ok".to_owned(),
                    latency_us,
                    count: 1,
                    last_ms: None,
                };
                self.journal.record(&tenant, &event).await.map(|_| ())
            }
            Err(e) => {
                let digest = context.map(context_digest).unwrap_or_default();
                self.journal
                    .record_failure(&tenant, operation, key.as_str(), region, e.code(), digest, latency_us)
                    .await
            }
        };
        match written {
            Ok(()) => result,
            Err(_) => Err(ProviderError::AuditUnavailable),
        }
    }
}

/// The SHA-256 (hex) of a context's serialization.
pub fn context_digest(context: &EncryptionContext) -> String {
    let mut d = digest::Context::new(&digest::SHA256);
    for (k, v) in context.iter() {
        for field in [k, v] {
            d.update(&(field.len() as u64).to_be_bytes());
            d.update(field.as_bytes());
        }
    }
    d.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect()
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
        self.budget(context)?;
        let started = Instant::now();
        let r = self.inner.generate_data_key(key, len, context).await;
        self.record("GenerateDataKey", key, Some(context), started, r).await
    }

    async fn wrap(
        &self,
        key: &KeyRef,
        data_key: &DataKey,
        context: &EncryptionContext,
    ) -> Result<EncryptedDataKey, ProviderError> {
        self.budget(context)?;
        let started = Instant::now();
        let r = self.inner.wrap(key, data_key, context).await;
        self.record("Encrypt", key, Some(context), started, r).await
    }

    async fn unwrap(&self, edk: &EncryptedDataKey, context: &EncryptionContext) -> Result<DataKey, ProviderError> {
        self.budget(context)?;
        let started = Instant::now();
        let r = self.inner.unwrap(edk, context).await;
        match self.inner.key_for(edk) {
            Some(key) => self.record("Decrypt", &key, Some(context), started, r).await,
            None => r,
        }
    }

    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, ProviderError> {
        let started = Instant::now();
        let r = self.inner.describe(key).await;
        self.record("DescribeKey", key, None, started, r).await
    }

    async fn rotation(&self, key: &KeyRef) -> Result<Rotation, ProviderError> {
        self.inner.rotation(key).await
    }

    async fn key_policy(&self, key: &KeyRef) -> Result<Option<String>, ProviderError> {
        self.inner.key_policy(key).await
    }
}
