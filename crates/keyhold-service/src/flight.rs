//! Single flight for cache misses: when many requests miss the same cache entry at once
//! (a fresh process, an expired decrypt entry under load), one of them calls the key
//! provider and the others wait for it, then find its result in the cache. Without this,
//! every concurrent miss is a KMS call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

type Lock = Arc<tokio::sync::Mutex<()>>;

/// In-flight provider calls, by cache entry id.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<[u8; 32], Lock>>,
}

/// Held while a provider call for one entry is in flight.
pub(crate) struct Flight<'a> {
    flights: &'a Flights,
    id: [u8; 32],
    lock: Lock,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Flights {
    /// Waits until no other call for `id` is in flight, then holds the slot.
    pub(crate) async fn enter(&self, id: &[u8; 32]) -> Flight<'_> {
        let lock = self.map.lock().unwrap_or_else(PoisonError::into_inner).entry(*id).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        Flight { flights: self, id: *id, lock, _guard: guard }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.map.lock().unwrap_or_else(PoisonError::into_inner);
        // Waiters keep their own handle; a later arrival starts afresh and hits the cache.
        if map.get(&self.id).is_some_and(|l| Arc::ptr_eq(l, &self.lock)) {
            map.remove(&self.id);
        }
    }
}
