//! The server's shared state: the lifecycle layer (which holds the registry, the audit
//! journal, the service core and the tenant views), the admin key, the edge's limits, the
//! directory of service identities, and the cache of verified tokens. Nothing here decides
//! anything about a tenant.
//!
//! **Service directory.** Every registered service with its purposes and accepted keys,
//! read from the registry in one query and trusted for at most
//! [`keyhold_lifecycle::TENANT_VIEW_TTL_MS`]: a service removed, narrowed or rotated
//! through any instance is enforced by every instance within that bound, and a flood of
//! tokens naming unknown services costs no registry query.
//!
//! **Token cache.** A verified token is remembered by its SHA-256 digest (never the token
//! itself) with its expiry and the key that verified it, so a request skips the signature
//! check but never the directory: a cached service token is honoured only while its
//! service and that key are still accepted, with the purposes the directory holds now. The
//! cache holds at most [`TOKEN_CACHE_BYTES`] bytes of entries.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use keyhold_core::TenantId;
use keyhold_lifecycle::{Lifecycle, Metrics, TENANT_VIEW_TTL_MS};
use keyhold_registry::{Purposes, RegistryError, ServiceIdentity};

use crate::conn::Limits;

/// How long `/metrics` reuses its count of tenants per state.
pub const TENANT_GAUGE_TTL_MS: u64 = 5_000;

/// How soon a token naming a service the directory does not know sends keyhold back to
/// the registry.
pub const UNKNOWN_SERVICE_RELOAD_MS: u64 = 1_000;

/// The most bytes the verified-token cache holds (entries are about 100 bytes).
pub const TOKEN_CACHE_BYTES: usize = 8 << 20;

/// Shared state behind every handler.
pub struct AppState {
    /// The tenant lifecycle layer: every handler calls one of its functions.
    pub lifecycle: Arc<Lifecycle>,
    /// The admin public key (verifies admin and tenant-admin tokens).
    pub admin_public_key: Vec<u8>,
    /// The edge's timeouts and limits.
    pub limits: Limits,
    /// Webhook delivery settings (which URLs endpoints may have).
    pub webhooks: crate::webhooks::WebhookConfig,
    /// What the console needs of the configuration.
    pub console: crate::console::ConsoleConfig,
    /// Requests in flight ([`Limits::max_in_flight`] at most).
    in_flight: std::sync::atomic::AtomicUsize,
    services: RwLock<Arc<Directory>>,
    services_reload: tokio::sync::Mutex<()>,
    /// Bumped by every change made through this instance: a reload that read the
    /// registry before the change does not replace the directory with what it read.
    services_generation: std::sync::atomic::AtomicU64,
    /// The tenants per state for `/metrics`, read at most every few seconds.
    tenant_gauge: std::sync::Mutex<Gauge>,
    tenant_gauge_reload: tokio::sync::Mutex<()>,
    tokens: RwLock<TokenCache>,
}

/// A service as the directory holds it.
#[derive(Debug)]
pub struct ServiceEntry {
    /// Its name.
    pub name: Arc<str>,
    /// What it may use, now.
    pub purposes: Arc<Purposes>,
    /// Its keys: (id, public key, accepted until ms; `None` = no expiry).
    pub keys: Vec<(Arc<str>, Vec<u8>, Option<u64>)>,
}

impl ServiceEntry {
    /// Whether the key `id` is accepted at `now_ms`.
    pub fn accepts(&self, id: &str, now_ms: u64) -> bool {
        self.keys.iter().any(|(k, _, exp)| k.as_ref() == id && exp.is_none_or(|e| e > now_ms))
    }
}

#[derive(Debug, Default)]
struct Directory {
    loaded_ms: Option<u64>,
    by_name: HashMap<String, Arc<ServiceEntry>>,
}

impl Directory {
    /// What this directory can say of `name` at `now`, if it is fresh enough to say it: a
    /// known name is trusted for the view bound; an unknown one sends keyhold back to the
    /// registry at most once a second (a service just registered is seen within a second,
    /// and a flood of made-up names costs one query a second).
    fn lookup(&self, name: &str, now: u64) -> Option<Option<Arc<ServiceEntry>>> {
        let age = now.saturating_sub(self.loaded_ms?);
        match self.by_name.get(name) {
            Some(e) if age < TENANT_VIEW_TTL_MS => Some(Some(e.clone())),
            None if age < UNKNOWN_SERVICE_RELOAD_MS => Some(None),
            _ => None,
        }
    }
}

/// What a cached token proved.
#[derive(Debug, Clone)]
pub enum Proven {
    /// An admin token.
    Admin,
    /// A tenant admin's token.
    TenantAdmin(TenantId),
    /// A service token, verified by its key `key_id`.
    Service {
        /// The service.
        name: Arc<str>,
        /// The key that verified it.
        key_id: Arc<str>,
    },
}

#[derive(Debug, Default)]
struct TokenCache {
    entries: HashMap<[u8; 32], (Proven, u64)>,
    bytes: usize,
    /// When expired entries were last swept (s): at most one sweep a second, so a full
    /// cache costs one pass per second, not one per request.
    swept_s: u64,
}

fn entry_bytes(p: &Proven) -> usize {
    let variable = match p {
        Proven::Admin => 0,
        Proven::TenantAdmin(t) => t.as_str().len(),
        Proven::Service { key_id, .. } => key_id.len(),
    };
    32 + std::mem::size_of::<(Proven, u64)>() + variable + 16
}

impl AppState {
    /// Assembles the state.
    pub fn new(lifecycle: Arc<Lifecycle>, admin_public_key: Vec<u8>, limits: Limits) -> Self {
        let in_flight = std::sync::atomic::AtomicUsize::new(0);
        Self {
            lifecycle,
            admin_public_key,
            limits,
            webhooks: crate::webhooks::WebhookConfig::default(),
            console: crate::console::ConsoleConfig::default(),
            in_flight,
            services: RwLock::new(Arc::new(Directory::default())),
            services_reload: tokio::sync::Mutex::new(()),
            services_generation: std::sync::atomic::AtomicU64::new(0),
            tenant_gauge: std::sync::Mutex::new((None, Vec::new())),
            tenant_gauge_reload: tokio::sync::Mutex::new(()),
            tokens: RwLock::new(TokenCache::default()),
        }
    }

    /// A place among the requests in flight, or `None` when [`Limits::max_in_flight`] are.
    pub fn enter_in_flight(&self) -> Option<InFlight<'_>> {
        use std::sync::atomic::Ordering;
        let max = self.limits.max_in_flight.max(1);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| InFlight(&self.in_flight))
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.lifecycle.now_ms()
    }

    /// The metrics (the lifecycle's, with the requests the edge counts).
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.lifecycle.metrics()
    }

    /// The service `name` as the directory holds it (read again from the registry when
    /// older than the view bound); `None` when no such service is registered.
    /// `now` is the caller's reading of the clock (the request already took one).
    pub async fn service(&self, name: &str, now: u64) -> Result<Option<Arc<ServiceEntry>>, RegistryError> {
        if let Some(found) = self.services.read().unwrap_or_else(std::sync::PoisonError::into_inner).lookup(name, now) {
            return Ok(found);
        }
        // The registry's future is large: boxed, it stays out of every request's future.
        Box::pin(self.reload_services(name, now)).await
    }

    /// Reads the directory from the registry again, and `name`'s entry in it.
    async fn reload_services(&self, name: &str, now: u64) -> Result<Option<Arc<ServiceEntry>>, RegistryError> {
        // One reload at a time: the others wait for it and use its result.
        let _reload = self.services_reload.lock().await;
        if let Some(found) = self.services.read().unwrap_or_else(std::sync::PoisonError::into_inner).lookup(name, now) {
            return Ok(found);
        }
        let generation = self.services_generation.load(std::sync::atomic::Ordering::Acquire);
        let all = self.lifecycle.registry().services().await?;
        let dir = Arc::new(Directory { loaded_ms: Some(now), by_name: all.into_iter().map(directory_entry).collect() });
        let mut current = self.services.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A change made meanwhile through this instance may not be in what was read: then
        // the directory stays empty and the next request reads the registry again.
        if self.services_generation.load(std::sync::atomic::Ordering::Acquire) == generation {
            *current = dir.clone();
        }
        Ok(dir.by_name.get(name).cloned())
    }

    /// Forgets the directory (after a change made through this instance), so the next
    /// request reads the registry.
    pub fn forget_services(&self) {
        let mut current = self.services.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.services_generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        *current = Arc::new(Directory::default());
    }

    /// The number of tenants in each state, for `/metrics`: read from the registry at most
    /// every [`TENANT_GAUGE_TTL_MS`] (one reader at a time, the others answer with the
    /// previous counts), so scraping, or a flood of unauthenticated scrapes, never loads the
    /// registry.
    pub async fn tenant_gauge(&self) -> Vec<(&'static str, usize)> {
        let now = self.now_ms();
        let fresh = |g: &Gauge| g.0.is_some_and(|at| now.saturating_sub(at) < TENANT_GAUGE_TTL_MS);
        {
            let g = self.tenant_gauge.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if fresh(&g) {
                return g.1.clone();
            }
        }
        let Ok(_reload) = self.tenant_gauge_reload.try_lock() else {
            return self.tenant_gauge.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone();
        };
        let counts = match self.lifecycle.registry().tenant_states().await {
            Ok(c) => c,
            Err(_) => return self.tenant_gauge.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone(),
        };
        let counts: Vec<(&'static str, usize)> = keyhold_registry::TenantState::ALL
            .iter()
            .map(|s| (s.as_str(), counts.iter().find(|(t, _)| t == s).map_or(0, |(_, n)| *n)))
            .collect();
        *self.tenant_gauge.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (Some(now), counts.clone());
        counts
    }

    /// What the token with `digest` proved, if it was verified before and has not expired.
    pub fn cached_token(&self, digest: &[u8; 32], now_s: u64) -> Option<Proven> {
        let cache = self.tokens.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.entries.get(digest).filter(|(_, exp)| *exp > now_s).map(|(p, _)| p.clone())
    }

    /// Remembers a verified token until it expires, within [`TOKEN_CACHE_BYTES`]: when
    /// full, expired entries are swept, and if it is still full the token is not cached
    /// (it is verified again next time).
    pub fn cache_token(&self, digest: [u8; 32], proven: Proven, exp_s: u64, now_s: u64) {
        let size = entry_bytes(&proven);
        let mut cache = self.tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.bytes + size > TOKEN_CACHE_BYTES && cache.swept_s < now_s {
            cache.swept_s = now_s;
            cache.entries.retain(|_, (_, exp)| *exp > now_s);
            cache.bytes = cache.entries.values().map(|(p, _)| entry_bytes(p)).sum();
        }
        if cache.bytes + size > TOKEN_CACHE_BYTES {
            return;
        }
        if let Some((old, _)) = cache.entries.insert(digest, (proven, exp_s)) {
            cache.bytes -= entry_bytes(&old);
        }
        cache.bytes += size;
    }

    /// How many tokens and bytes the cache holds.
    pub fn token_cache_size(&self) -> (usize, usize) {
        let cache = self.tokens.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        (cache.entries.len(), cache.bytes)
    }
}

/// Tenants per state, and when they were counted (ms since the Unix epoch).
type Gauge = (Option<u64>, Vec<(&'static str, usize)>);

/// A request's place among those in flight, given back on drop.
#[derive(Debug)]
pub struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn directory_entry(s: ServiceIdentity) -> (String, Arc<ServiceEntry>) {
    let entry = ServiceEntry {
        name: s.name.as_str().into(),
        purposes: Arc::new(s.purposes),
        keys: s.keys.into_iter().map(|k| (Arc::from(k.id), k.public_key, k.expires_ms)).collect(),
    };
    (s.name, Arc::new(entry))
}
