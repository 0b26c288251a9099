//! The server's shared state: the lifecycle layer (which holds the registry, the audit
//! journal, the service core and the tenant views), the admin key, and the cache of
//! verified tokens. Nothing here decides anything about a tenant.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use keyhold_lifecycle::{Lifecycle, Metrics};

use crate::auth::Principal;

/// Shared state behind every handler.
pub struct AppState {
    /// The tenant lifecycle layer: every handler calls one of its functions.
    pub lifecycle: Arc<Lifecycle>,
    /// The admin public key (verifies admin and tenant-admin tokens).
    pub admin_public_key: Vec<u8>,
    tokens: RwLock<HashMap<String, (Principal, u64)>>,
}

impl AppState {
    /// Assembles the state.
    pub fn new(lifecycle: Arc<Lifecycle>, admin_public_key: Vec<u8>) -> Self {
        Self { lifecycle, admin_public_key, tokens: RwLock::new(HashMap::new()) }
    }

    /// Now, in ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.lifecycle.now_ms()
    }

    /// The metrics (the lifecycle's, with the requests the edge counts).
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.lifecycle.metrics()
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
}
