//! The tenant lifecycle: everything a tenant's state depends on, and the only place that
//! changes it. The HTTP edge, the CLI and any console call this layer; they decide
//! nothing themselves.
//!
//! - **Tenants and their key history** ([`Lifecycle::create_tenant`],
//!   [`Lifecycle::attach_key`], [`Lifecycle::validate`], [`Lifecycle::delete_tenant`]):
//!   per region every key ever attached, `active`, `decrypt_only` (replaced; still
//!   decrypts what it protects) or `retired`. A key belongs to one tenant.
//! - **Transitions** ([`Lifecycle::transition`]) are compare-and-set in the registry on
//!   the tenant's state and version, carry a typed [`Cause`], and emit exactly one
//!   [`Event::TenantState`] through the [`Journal`]. They come only from validation, probes
//!   and admin actions, never from what a request carries.
//! - **Serving** ([`Lifecycle::encrypt`], [`Lifecycle::decrypt`]): refuses tenants that are
//!   not active, asks only keys of the tenant's history, and on a refusal by an active key
//!   runs an immediate probe of the tenant's active keys (coalesced per tenant): the probe
//!   decides, so a forged or stale message suspends no one while a genuine revocation is
//!   enforced at once. A refusal by a `decrypt_only` key fails that request only.
//! - **Probes** ([`monitor`]): the health monitor, a real round trip per active key;
//!   recorded in the trail when the outcome changes, plus a periodic summary.
//! - **The journal** ([`journal`]): the audit trail's one writer; fails closed.
//! - **Key change** ([`Lifecycle::reencrypt`], [`Lifecycle::key_change`],
//!   [`Lifecycle::retire_key`], [`Lifecycle::rotate_data_keys`], [`Lifecycle::set_role`]):
//!   re-encryption (never a header rewrite), progress from the data-key [`ledger`],
//!   retirement refused while messages remain, forced data-key rotation.
//!
//! **Revocation bound.** A tenant that revokes access is refused on this instance from the
//! first request that meets the refusal (or the next probe, whichever comes first); other
//! instances sharing the registry see the suspension when their tenant view expires
//! ([`TENANT_VIEW_TTL_MS`]). Without traffic: KMS propagation + one probe interval.

#![forbid(unsafe_code)]

mod audited;
mod crypto;
mod error;
pub mod events;
pub mod journal;
mod keychange;
mod keys;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod monitor;
pub mod propagation;
mod streaming;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;

use keyhold_audit::{Auditor, Event};
use keyhold_core::{Clock, KeyRef, RealmId, TenantId};
use keyhold_onboarding::{Realm, RealmCatalog, external_id};
use keyhold_provider::KeyProvider;
use keyhold_provider_aws::TenantRouter;
use keyhold_provider_local::LocalKms;
use keyhold_registry::{Cause, KeyStatus, Registry, Tenant, TenantKey, TenantMode, TenantState};
use keyhold_service::{Keyhold, Settings};

pub use audited::{audited, context_digest};
pub use crypto::{Caller, Decrypted};
pub use error::LifecycleError;
pub use events::Detail;
pub use journal::Journal;
pub use keychange::{KeyChange, RoleOutcome, SETTLE_MS, reencryption_record};
use keys::check_mode_role;
pub use keys::{AttachOutcome, MAX_KEY_REF, MAX_ROLE_ARN, check_role_arn};
pub use metrics::Metrics;
pub use streaming::StreamDecryption;

/// How long a tenant's in-memory view is trusted before the registry is read again, so a
/// change made through another instance (suspension, deletion, new keys) is seen within
/// this bound.
pub const TENANT_VIEW_TTL_MS: u64 = 5_000;

/// What the encrypt and decrypt paths need to know of a tenant.
#[derive(Debug)]
pub struct TenantView {
    /// The tenant.
    pub tenant: Tenant,
    /// Its active keys in realm order (home region first): what encrypts.
    pub active: Arc<[KeyRef]>,
    /// Every key decryption may ask: active and decrypt-only keys of its history.
    pub allowed: Arc<[KeyRef]>,
    /// Keys retired from its history (never asked).
    pub retired: Arc<[KeyRef]>,
    /// When it was read from the registry (ms since the Unix epoch).
    pub loaded_ms: u64,
}

/// What a [`Lifecycle`] is built from.
pub struct Parts {
    /// The registry.
    pub registry: Registry,
    /// The audit trail over the registry.
    pub auditor: Auditor,
    /// The key providers, unwrapped (the lifecycle audits them itself).
    pub providers: Vec<Arc<dyn KeyProvider>>,
    /// The embedded local provider, for crypto-shredding local tenants' keys.
    pub local: Option<Arc<LocalKms>>,
    /// The AWS KMS router: BYOK tenants' calls go through their assumed roles.
    pub aws: Option<Arc<TenantRouter>>,
    /// The realm catalog.
    pub catalog: RealmCatalog,
    /// The IAM principal keyhold runs as, for generated policies and their analysis.
    pub platform_principal: Option<String>,
    /// Service-layer settings.
    pub settings: Settings,
    /// The region this instance runs in (decryption asks its keys first).
    pub local_region: Option<keyhold_core::Region>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Per-tenant and per-service limits.
    pub limits: limits::TenantLimits,
}

/// The tenant lifecycle layer.
pub struct Lifecycle {
    registry: Registry,
    journal: Arc<Journal>,
    keyhold: Keyhold,
    ledger: Arc<ledger::RegistryLedger>,
    /// The audited providers (serving and validation).
    providers: Vec<Arc<dyn KeyProvider>>,
    /// The same providers unaudited: probes record their outcome changes themselves.
    raw: Vec<Arc<dyn KeyProvider>>,
    local: Option<Arc<LocalKms>>,
    aws: Option<Arc<TenantRouter>>,
    catalog: RealmCatalog,
    platform_principal: Option<String>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    views: RwLock<HashMap<TenantId, Arc<TenantView>>>,
    /// Per tenant: when its last request-triggered probe started (probes coalesce).
    probe_gates: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
    /// Per tenant: key attaches and validations run one at a time.
    key_locks: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>>,
    /// Tenants whose key-change progress is being checked (`true`: check again after).
    progress: Mutex<HashMap<TenantId, bool>>,
    /// Per-tenant and per-service limits.
    limiter: Arc<limits::Limiter>,
    /// Successful real traffic per key, for the monitor.
    traffic: Arc<audited::Traffic>,
    /// Revocations (tenant, version) this instance recorded its receipt for.
    receipted: Mutex<std::collections::HashSet<(TenantId, u64)>>,
    probes: monitor::ProbeMemory,
    /// The layer itself, to run work that must finish in a task of its own.
    me: Weak<Lifecycle>,
}

impl Lifecycle {
    /// Assembles the layer.
    pub fn new(parts: Parts) -> Arc<Self> {
        Arc::new_cyclic(|me| Self::assemble(parts, me.clone()))
    }

    fn assemble(parts: Parts, me: Weak<Lifecycle>) -> Self {
        let metrics = Arc::new(Metrics::default());
        let journal = Arc::new(Journal::new(parts.auditor, metrics.clone(), parts.clock.clone()));
        let limiter = Arc::new(limits::Limiter::new(parts.limits));
        let traffic = Arc::new(audited::Traffic::new(parts.clock.clone()));
        let audited_providers: Vec<Arc<dyn KeyProvider>> =
            parts.providers.iter().map(|p| audited(p.clone(), &journal, &metrics, &limiter, &traffic)).collect();
        let ledger = Arc::new(ledger::RegistryLedger::new(parts.registry.clone(), parts.clock.clone()));
        let mut keyhold =
            Keyhold::new(audited_providers.clone(), parts.settings, parts.clock.clone()).with_ledger(ledger.clone());
        if let Some(r) = parts.local_region {
            keyhold = keyhold.with_local_region(r);
        }
        Self {
            registry: parts.registry,
            journal,
            keyhold,
            ledger,
            providers: audited_providers,
            raw: parts.providers,
            local: parts.local,
            aws: parts.aws,
            catalog: parts.catalog,
            platform_principal: parts.platform_principal,
            clock: parts.clock,
            metrics,
            views: RwLock::new(HashMap::new()),
            probe_gates: Mutex::new(HashMap::new()),
            key_locks: Mutex::new(HashMap::new()),
            probes: monitor::ProbeMemory::default(),
            progress: Mutex::new(HashMap::new()),
            receipted: Mutex::new(std::collections::HashSet::new()),
            limiter,
            traffic,
            me,
        }
    }

    /// Runs `f` in a task of its own and waits for it: work that changes state (a
    /// transition and its event, a probe, a flush) finishes even if the request that
    /// started it is cancelled (the client went away).
    async fn detached<T, Fut>(&self, f: impl FnOnce(Arc<Lifecycle>) -> Fut) -> Result<T, LifecycleError>
    where
        Fut: std::future::Future<Output = Result<T, LifecycleError>> + Send + 'static,
        T: Send + 'static,
    {
        let me = self.me.upgrade().ok_or_else(|| LifecycleError::Internal("the lifecycle layer is gone".into()))?;
        tokio::spawn(f(me)).await.map_err(|e| LifecycleError::Internal(format!("a lifecycle task failed: {e}")))?
    }

    /// The clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The audit journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The service core (cache statistics, settings).
    pub fn keyhold(&self) -> &Keyhold {
        &self.keyhold
    }

    /// The metrics the layer keeps (provider calls, audit failures; the edge adds
    /// requests).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The realm catalog.
    pub fn catalog(&self) -> &RealmCatalog {
        &self.catalog
    }

    /// The platform principal, if configured.
    pub fn platform_principal(&self) -> Option<&str> {
        self.platform_principal.as_deref()
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_millis()
    }

    /// Creates a tenant (`pending` until its keys validate); `actor` is recorded.
    pub async fn create_tenant(
        &self,
        actor: &str,
        id: &TenantId,
        realm: &str,
        mode: TenantMode,
        role_arn: Option<&str>,
    ) -> Result<Tenant, LifecycleError> {
        let (actor, id, realm, role_arn) =
            (actor.to_owned(), id.clone(), realm.to_owned(), role_arn.map(str::to_owned));
        self.detached(
            move |me| async move { me.create_tenant_now(&actor, &id, &realm, mode, role_arn.as_deref()).await },
        )
        .await
    }

    async fn create_tenant_now(
        &self,
        actor: &str,
        id: &TenantId,
        realm: &str,
        mode: TenantMode,
        role_arn: Option<&str>,
    ) -> Result<Tenant, LifecycleError> {
        let realm = self.catalog.get(realm).map_err(|e| LifecycleError::Invalid(e.to_string()))?;
        let realm_id = RealmId::parse(realm.id.as_str()).map_err(|e| LifecycleError::Invalid(e.to_string()))?;
        check_mode_role(mode, role_arn)?;
        self.journal.check(id)?;
        let created = Event::TenantState {
            from: "none".into(),
            to: TenantState::Pending.to_string(),
            cause: Cause::Created.to_string(),
            reason: None,
        };
        // The tenant and the first event of its trail in one transaction.
        let event = events::created(id, &realm_id, mode);
        let t = match self
            .journal
            .auditor()
            .create_tenant(id, &realm_id, mode, role_arn, self.now_ms(), &created, &[event])
            .await
        {
            Ok(t) => t,
            Err(keyhold_audit::AuditError::Registry(e)) => return Err(e.into()),
            Err(_) => return Err(LifecycleError::AuditUnavailable),
        };
        self.admin_event(actor, id, "create_tenant", Some(format!("realm {} mode {}", t.realm, t.mode))).await;
        Ok(t)
    }

    /// Chooses a pending tenant's realm and mode (and a BYOK tenant's role) before any key
    /// is attached: what a tenant's administrator picks in the onboarding wizard.
    pub async fn configure(
        &self,
        actor: &str,
        id: &TenantId,
        realm: &str,
        mode: TenantMode,
        role_arn: Option<&str>,
    ) -> Result<Tenant, LifecycleError> {
        let (actor, id, realm, role_arn) =
            (actor.to_owned(), id.clone(), realm.to_owned(), role_arn.map(str::to_owned));
        self.detached(move |me| async move {
            let realm = me.catalog.get(&realm).map_err(|e| LifecycleError::Invalid(e.to_string()))?;
            let realm_id = RealmId::parse(realm.id.as_str()).map_err(|e| LifecycleError::Invalid(e.to_string()))?;
            check_mode_role(mode, role_arn.as_deref())?;
            let (_guard, t) = me.lock_live(&id).await?;
            if t.state != TenantState::Pending || !me.registry.keys(&id).await?.is_empty() {
                return Err(LifecycleError::SetupFixed(id.clone()));
            }
            me.journal.check(&id)?;
            me.admin_event(&actor, &id, "configure", Some(format!("realm {realm_id} mode {mode}"))).await;
            let event = events::configured(&id, &realm_id, mode);
            let changed =
                me.registry.configure_tenant(&id, &realm_id, mode, role_arn.as_deref(), me.now_ms(), &[event]).await?;
            if !changed {
                return Err(LifecycleError::SetupFixed(id.clone()));
            }
            me.forget_view(&id);
            tracing::info!(tenant = %id, realm = %realm_id, mode = %mode, "tenant configured");
            me.tenant(&id).await
        })
        .await
    }

    /// One tenant, from the registry, deleted ones included (a deleted tenant's record and
    /// audit trail stay in the registry).
    pub async fn tenant(&self, id: &TenantId) -> Result<Tenant, LifecycleError> {
        self.registry.tenant(id).await?.ok_or_else(|| LifecycleError::TenantNotFound(id.clone()))
    }

    /// One tenant that is not deleted: a deleted tenant is gone
    /// ([`LifecycleError::TenantDeleted`]).
    pub async fn live_tenant(&self, id: &TenantId) -> Result<Tenant, LifecycleError> {
        let t = self.tenant(id).await?;
        if t.state == TenantState::Deleted {
            return Err(LifecycleError::TenantDeleted(id.clone()));
        }
        Ok(t)
    }

    /// A tenant's key history (every key attached and not destroyed).
    pub async fn key_history(&self, id: &TenantId) -> Result<Vec<TenantKey>, LifecycleError> {
        Ok(self.registry.keys(id).await?)
    }

    /// The tenant's realm.
    pub fn realm_of(&self, t: &Tenant) -> Result<&Realm, LifecycleError> {
        self.catalog
            .get(t.realm.as_str())
            .map_err(|e| LifecycleError::NotConfigured(format!("the tenant's realm is not in the catalog: {e}")))
    }

    /// Deletes a tenant: every key reference is destroyed and its cached data keys
    /// dropped at once; a `local` tenant's keys are also scheduled for deletion in the
    /// local provider (unusable at once, offline included; destroyed after the 7-day
    /// waiting period). A CMK or BYOK tenant shreds its data by deleting its own KMS keys.
    pub async fn delete_tenant(&self, actor: &str, id: &TenantId) -> Result<Tenant, LifecycleError> {
        let (actor, id) = (actor.to_owned(), id.clone());
        self.detached(move |me| async move { me.delete_tenant_now(&actor, &id).await }).await
    }

    async fn delete_tenant_now(&self, actor: &str, id: &TenantId) -> Result<Tenant, LifecycleError> {
        // Attaches of this tenant wait: none can add a key between the deletion's read of
        // the history and its end.
        let (_guard, t) = self.lock_live(id).await?;
        self.journal.check(id)?;
        self.admin_event(actor, id, "delete_tenant", None).await;
        let reason = "deleted by an admin";
        let event = events::transition(&t, TenantState::Deleted, Cause::Deleted, Some(reason), &Detail::default());
        let (deleted, keys) = self.registry.delete_tenant(&t, Some(reason), self.now_ms(), &[event]).await?;
        self.after_transition(&t, TenantState::Deleted, Cause::Deleted, Some(reason)).await;
        if t.mode == TenantMode::Local
            && let Some(local) = &self.local
        {
            let mut failed = Vec::new();
            for k in &keys {
                let Ok(key) = KeyRef::parse(k) else { continue };
                if local.schedule_key_deletion(&key, 7).is_ok() {
                    continue;
                }
                // Already pending deletion, or already gone: shredded either way.
                match local.describe_key(&key) {
                    Ok(d) if matches!(d.state, keyhold_provider::KeyState::PendingDeletion { .. }) => {}
                    Err(keyhold_provider::ProviderError::KeyNotFound { .. }) => {}
                    _ => failed.push(k.clone()),
                }
            }
            if !failed.is_empty() {
                return Err(LifecycleError::ShredIncomplete { tenant: id.clone(), keys: failed });
            }
        }
        Ok(deleted)
    }

    /// Moves `from` (as read) to `to` with `cause`, compare-and-set, storing its lifecycle
    /// event in the same transaction; emits one [`Event::TenantState`] to the audit trail;
    /// refreshes the view and, on suspension or deletion, drops the tenant's cached data
    /// keys at once.
    pub async fn transition(
        &self,
        from: &Tenant,
        to: TenantState,
        cause: Cause,
        reason: Option<&str>,
    ) -> Result<Tenant, LifecycleError> {
        let (from, reason) = (from.clone(), reason.map(str::to_owned));
        self.detached(move |me| async move {
            me.transition_now(&from, to, cause, reason.as_deref(), &Detail::default()).await
        })
        .await
    }

    /// As [`Lifecycle::transition`], with where and why (`detail`) for its event.
    async fn transition_now(
        &self,
        from: &Tenant,
        to: TenantState,
        cause: Cause,
        reason: Option<&str>,
        detail: &Detail,
    ) -> Result<Tenant, LifecycleError> {
        let event = events::transition(from, to, cause, reason, detail);
        let updated = self.registry.transition(from, to, cause, reason, self.now_ms(), &[event]).await?;
        self.after_transition(from, to, cause, reason).await;
        Ok(updated)
    }

    /// What follows a committed transition: the view refreshed, cached keys dropped on
    /// suspension or deletion, the one event written.
    async fn after_transition(&self, from: &Tenant, to: TenantState, cause: Cause, reason: Option<&str>) {
        let (tenant, was, cause_s, why) =
            (from.id.as_str(), from.state.as_str(), cause.to_string(), reason.unwrap_or(""));
        match to {
            TenantState::Suspended => {
                tracing::warn!(tenant, from = was, to = "suspended", cause = cause_s, reason = why, "tenant suspended");
            }
            TenantState::Active if matches!(from.state, TenantState::Suspended | TenantState::Degraded) => {
                tracing::info!(tenant, from = was, to = "active", cause = cause_s, reason = why, "tenant resumed");
            }
            TenantState::Degraded => {
                tracing::warn!(tenant, from = was, to = "degraded", cause = cause_s, reason = why, "tenant degraded");
            }
            _ => tracing::info!(
                tenant,
                from = was,
                to = to.as_str(),
                cause = cause_s,
                reason = why,
                "tenant state changed"
            ),
        }
        self.forget_view(&from.id);
        if matches!(to, TenantState::Suspended | TenantState::Deleted) {
            // The compare-and-set moved the tenant to the next version.
            self.revoked(&from.id, from.version + 1).await;
        }
        if let (TenantState::Deleted, Some(aws)) = (to, &self.aws) {
            aws.forget(&from.id);
        }
        self.journal
            .record_or_queue(
                &from.id,
                Event::TenantState {
                    from: from.state.to_string(),
                    to: to.to_string(),
                    cause: cause.to_string(),
                    reason: reason.map(str::to_owned),
                },
            )
            .await;
    }

    /// Records an administrative action in the tenant's trail.
    pub async fn admin_event(&self, actor: &str, tenant: &TenantId, action: &str, detail: Option<String>) {
        // What a caller sent is recorded at most this long: the trail is evidence, not storage.
        const MAX_DETAIL: usize = 512;
        let detail = detail.map(|mut d| {
            if d.len() > MAX_DETAIL {
                let mut cut = MAX_DETAIL;
                while !d.is_char_boundary(cut) {
                    cut -= 1;
                }
                d.truncate(cut);
                d.push('…');
            }
            d
        });
        self.journal
            .record_or_queue(tenant, Event::AdminAction { actor: actor.to_owned(), action: action.to_owned(), detail })
            .await;
    }

    /// The tenant and its keys, from memory or the registry.
    pub async fn tenant_view(&self, id: &TenantId) -> Result<Arc<TenantView>, LifecycleError> {
        let now = self.now_ms();
        // One reference-count increment on the hot path: the fresh view is returned as
        // taken from the map.
        let previous = match self.views.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(id).cloned() {
            Some(v) if now.saturating_sub(v.loaded_ms) < TENANT_VIEW_TTL_MS => return Ok(v),
            stale => stale,
        };
        // The registry's futures are large: boxed, they stay out of every request's
        // future (which is moved and boxed whole on each request).
        Box::pin(self.load_view(id, previous, now)).await
    }

    /// Reads a tenant's view from the registry (its `previous` one, if any, as read).
    async fn load_view(
        &self,
        id: &TenantId,
        previous: Option<Arc<TenantView>>,
        now: u64,
    ) -> Result<Arc<TenantView>, LifecycleError> {
        let tenant = self.tenant(id).await?;
        let history = self.registry.keys(id).await?;
        let mut active = Vec::new();
        if let Ok(realm) = self.catalog.get(tenant.realm.as_str()) {
            for region in &realm.regions {
                if let Some(k) = history.iter().find(|k| &k.region == region && k.status == KeyStatus::Active)
                    && let Ok(r) = KeyRef::parse(&k.key)
                {
                    active.push(r);
                }
            }
        }
        let allowed: Vec<KeyRef> = history
            .iter()
            .filter(|k| k.status != KeyStatus::Retired)
            .filter_map(|k| KeyRef::parse(&k.key).ok())
            .collect();
        let retired: Vec<KeyRef> = history
            .iter()
            .filter(|k| k.status == KeyStatus::Retired)
            .filter_map(|k| KeyRef::parse(&k.key).ok())
            .collect();
        self.register_role(&tenant).await;
        let removed = previous.as_ref().is_some_and(|p| p.allowed.iter().any(|k| !allowed.contains(k)));
        if removed || matches!(tenant.state, TenantState::Suspended | TenantState::Deleted) {
            // Another instance suspended or deleted it, or a key left its history: drop
            // our cached keys too.
            self.keyhold.flush_tenant(id);
        }
        let view = Arc::new(TenantView {
            tenant,
            active: active.into(),
            allowed: allowed.into(),
            retired: retired.into(),
            loaded_ms: now,
        });
        self.views.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone(), view.clone());
        Ok(view)
    }

    /// Forgets the in-memory view of a tenant (after any change to it).
    pub fn forget_view(&self, id: &TenantId) {
        self.views.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
    }

    /// For a BYOK tenant, makes sure its role is registered with the AWS router (so its
    /// calls use the assumed role's credentials).
    async fn register_role(&self, tenant: &Tenant) {
        if let (TenantMode::Byok, Some(role), Some(aws)) = (tenant.mode, &tenant.role_arn, &self.aws) {
            aws.assume_for(&tenant.id, role, &external_id(&tenant.id)).await;
        }
    }

    /// Writes what the journal holds in memory (usage counts, aggregated failures,
    /// queued events); `all` also closes open aggregation windows (at shutdown).
    pub async fn flush(&self, all: bool) {
        let journal = self.journal.clone();
        // In a task of its own: a cancelled caller must not drop what the flush holds.
        let _ = tokio::spawn(async move { journal.flush(all).await }).await;
        self.flush_ledger().await;
        self.report_audit_outages().await;
        self.sweep_revocations().await;
        let seen = self.traffic.take();
        if let Err(e) = self.registry.record_key_traffic(&seen).await {
            // Lost: those keys are probed as if no traffic had proved them.
            tracing::debug!(error = %e, "key traffic not recorded");
        }
    }

    /// Stores an `audit.unavailable` event for each audit outage that ended (the trail is
    /// writable again, so the event can be stored); kept for the next flush otherwise.
    async fn report_audit_outages(&self) {
        let ended = self.journal.ended_outages();
        let mut failed = Vec::new();
        for (tenant, from, to) in ended {
            let event = events::audit_unavailable(&tenant, from, to);
            if self.registry.add_event(&event, self.now_ms()).await.is_err() {
                failed.push((tenant, from, to));
            }
        }
        if !failed.is_empty() {
            self.journal.restore_outages(failed);
        }
    }

    /// At shutdown, once no request is served any more: everything held in memory is
    /// written, and this instance's data keys are closed in the ledger (they take no
    /// more uses, and their counts are written; if the flush failed they stay unsettled).
    pub async fn shutdown(&self) {
        self.flush(true).await;
        let ledger = self.ledger.clone();
        let r = tokio::spawn(async move {
            ledger.flush().await?;
            ledger.close_all().await
        })
        .await;
        if !matches!(r, Ok(Ok(()))) {
            tracing::warn!("the data-key ledger could not be closed at shutdown; its data keys stay unsettled");
        }
    }

    /// Adds this instance's data-key use counts to the ledger (they are kept and retried
    /// at the next flush if the registry fails).
    pub async fn flush_ledger(&self) {
        let ledger = self.ledger.clone();
        let r = tokio::spawn(async move { ledger.flush().await }).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "the data-key ledger's counts could not be written; kept for the next flush");
        }
    }

    /// Takes the tenant's key lock (attaches, validations and deletion of one tenant run
    /// one at a time on an instance) and reads the tenant, refusing a deleted one.
    async fn lock_live(&self, id: &TenantId) -> Result<(tokio::sync::OwnedMutexGuard<()>, Tenant), LifecycleError> {
        let guard = Self::tenant_lock(&self.key_locks, id).lock_owned().await;
        Ok((guard, self.live_tenant(id).await?))
    }

    fn tenant_lock<T: Default>(map: &Mutex<HashMap<TenantId, Arc<T>>>, id: &TenantId) -> Arc<T> {
        map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(id.clone()).or_default().clone()
    }
}
