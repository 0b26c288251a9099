//! The materials cache: reusing data keys is what makes customer-managed keys cost nothing
//! per record.
//!
//! * **Encryption materials** are cached per tenant and [`EntryId`] (a digest the caller
//!   derives from tenant, purpose, key set, algorithm suite and encryption context) and
//!   reused until the first of [`CacheConfig::max_messages`] (default
//!   5,000,000), [`CacheConfig::max_age`] (default 24 h) or [`CacheConfig::max_bytes`];
//!   then the caller generates a fresh data key.
//! * **Decryption materials** are cached per tenant and [`EntryId`] (a digest of the
//!   tenant, the encrypted data key and the context) for [`CacheConfig::decrypt_ttl`]. The TTL is one term
//!   of the revocation bound: after a tenant revokes its key, a node that has not yet been
//!   told can go on decrypting from cache for at most this long.
//!
//! Both are partitioned by tenant: every lookup names its tenant and an entry is only
//! returned to the tenant it was stored for. Both are bounded in size (the oldest entry of
//! a shard is evicted), and flushed per tenant with [`MaterialsCache::flush_tenant`].
//! Values are held as `Arc<V>`: dropping the last reference drops the value, and data-key
//! types zeroize on drop, so an evicted data key is wiped as soon as no request still uses it.
//!
//! Concurrency: entries live in independently locked shards; a hit takes one shard's read
//! lock and updates the entry's usage with atomics. There is no global lock on the hot
//! path. Time comes from an injected [`Clock`].

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keyhold_core::{Clock, TenantId};

const SHARDS: usize = 32;

/// Cache limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Messages one data key may encrypt (default 5,000,000).
    pub max_messages: u64,
    /// How long one data key may encrypt (default 24 hours).
    pub max_age: Duration,
    /// Plaintext bytes one data key may encrypt (default 2^50, about 1 PiB).
    pub max_bytes: u64,
    /// How long an unwrapped data key may be reused for decryption (default 30 s).
    pub decrypt_ttl: Duration,
    /// Most entries each of the two caches holds (default 10,000).
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_messages: 5_000_000,
            max_age: Duration::from_secs(24 * 60 * 60),
            max_bytes: 1 << 50,
            decrypt_ttl: Duration::from_secs(30),
            max_entries: 10_000,
        }
    }
}

/// The identity of a cache entry: a collision-resistant digest, computed by the caller,
/// of everything that must match for reuse, the tenant included. The tenant is also kept
/// in the entry and compared on every hit, so an entry can only ever be returned to the
/// tenant it was stored for.
pub type EntryId = [u8; 32];

struct Entry<V> {
    tenant: TenantId,
    value: Arc<V>,
    created_ms: u64,
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// One independently locked part of a cache. Aligned to two cache lines so that threads
/// working on different shards never contend for the same line (false sharing).
#[repr(align(128))]
struct Shard<K, V> {
    map: RwLock<HashMap<K, Entry<V>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Sharded<K, V> {
    shards: Vec<Shard<K, V>>,
    hasher: RandomState,
    per_shard: usize,
}

impl<K: Hash + Eq + Clone, V> Sharded<K, V> {
    fn new(max_entries: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| Shard { map: RwLock::new(HashMap::new()), hits: AtomicU64::new(0), misses: AtomicU64::new(0) })
            .collect();
        Self { shards, hasher: RandomState::new(), per_shard: max_entries.div_ceil(SHARDS).max(1) }
    }

    fn shard(&self, key: &K) -> &Shard<K, V> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        // `i < SHARDS == self.shards.len()`.
        #[allow(clippy::indexing_slicing, reason = "index reduced modulo the shard count")]
        &self.shards[i]
    }

    /// Looks `key` up for `tenant`; counts a hit, and a miss only when `count_miss` (a
    /// lookup repeated after waiting for another caller's fill is not a second miss).
    fn get(
        &self,
        tenant: &TenantId,
        key: &K,
        count_miss: bool,
        usable: impl FnOnce(&Entry<V>) -> bool,
    ) -> Option<Arc<V>> {
        let shard = self.shard(key);
        let found = {
            let map = shard.map.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            map.get(key).filter(|e| e.tenant == *tenant && usable(e)).map(|e| e.value.clone())
        };
        if found.is_some() {
            shard.hits.fetch_add(1, Ordering::Relaxed);
        } else if count_miss {
            shard.misses.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    fn put(&self, key: K, entry: Entry<V>) {
        let shard = self.shard(&key);
        let mut map = shard.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            let oldest = map.iter().min_by_key(|(_, e)| e.created_ms).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(key, entry);
    }

    fn remove_if(&self, f: impl Fn(&K, &Entry<V>) -> bool) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut map = shard.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let before = map.len();
            map.retain(|k, e| !f(k, e));
            removed += before - map.len();
        }
        removed
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.map.read().map_or(0, |m| m.len())).sum()
    }

    fn stats(&self) -> (u64, u64) {
        self.shards
            .iter()
            .fold((0, 0), |(h, m), s| (h + s.hits.load(Ordering::Relaxed), m + s.misses.load(Ordering::Relaxed)))
    }
}

/// Hit and miss counts, and current sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Encryption lookups served from cache.
    pub encrypt_hits: u64,
    /// Encryption lookups that needed new materials.
    pub encrypt_misses: u64,
    /// Decryption lookups served from cache.
    pub decrypt_hits: u64,
    /// Decryption lookups that needed an unwrap.
    pub decrypt_misses: u64,
    /// Encryption entries held.
    pub encrypt_entries: usize,
    /// Decryption entries held.
    pub decrypt_entries: usize,
}

/// The two caches. `E` is the encryption-materials type, `D` the decryption-materials type.
pub struct MaterialsCache<E, D> {
    config: CacheConfig,
    clock: Arc<dyn Clock>,
    encrypt: Sharded<EntryId, E>,
    decrypt: Sharded<EntryId, D>,
}

impl<E, D> MaterialsCache<E, D> {
    /// An empty cache.
    pub fn new(config: CacheConfig, clock: Arc<dyn Clock>) -> Self {
        Self { encrypt: Sharded::new(config.max_entries), decrypt: Sharded::new(config.max_entries), config, clock }
    }

    /// The limits in force.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Materials to encrypt one message of `plaintext_len` bytes, if a cached data key may
    /// still be used for it. The message is counted against the key's limits.
    pub fn get_encrypt(&self, tenant: &TenantId, id: &EntryId, plaintext_len: u64) -> Option<Arc<E>> {
        self.lookup_encrypt(tenant, id, plaintext_len, true)
    }

    /// As [`MaterialsCache::get_encrypt`] after waiting for another caller's fill: a miss
    /// here is not counted again.
    pub fn recheck_encrypt(&self, tenant: &TenantId, id: &EntryId, plaintext_len: u64) -> Option<Arc<E>> {
        self.lookup_encrypt(tenant, id, plaintext_len, false)
    }

    fn lookup_encrypt(&self, tenant: &TenantId, id: &EntryId, plaintext_len: u64, count_miss: bool) -> Option<Arc<E>> {
        let now = self.clock.now_millis();
        let max_age = duration_ms(self.config.max_age);
        self.encrypt.get(tenant, id, count_miss, |e| {
            if now.saturating_sub(e.created_ms) >= max_age {
                return false;
            }
            let messages = e.messages.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            let bytes = e.bytes.fetch_add(plaintext_len, Ordering::Relaxed).saturating_add(plaintext_len);
            messages <= self.config.max_messages && bytes <= self.config.max_bytes
        })
    }

    /// Caches fresh encryption materials, counting the message they are first used for.
    pub fn put_encrypt(&self, tenant: TenantId, id: EntryId, value: Arc<E>, plaintext_len: u64) {
        let entry = Entry {
            tenant,
            value,
            created_ms: self.clock.now_millis(),
            messages: AtomicU64::new(1),
            bytes: AtomicU64::new(plaintext_len),
        };
        self.encrypt.put(id, entry);
    }

    /// A cached unwrapped data key, if younger than the decrypt TTL.
    pub fn get_decrypt(&self, tenant: &TenantId, id: &EntryId) -> Option<Arc<D>> {
        self.lookup_decrypt(tenant, id, true)
    }

    /// As [`MaterialsCache::get_decrypt`] after waiting for another caller's fill: a miss
    /// here is not counted again.
    pub fn recheck_decrypt(&self, tenant: &TenantId, id: &EntryId) -> Option<Arc<D>> {
        self.lookup_decrypt(tenant, id, false)
    }

    fn lookup_decrypt(&self, tenant: &TenantId, id: &EntryId, count_miss: bool) -> Option<Arc<D>> {
        let now = self.clock.now_millis();
        let ttl = duration_ms(self.config.decrypt_ttl);
        self.decrypt.get(tenant, id, count_miss, |e| now.saturating_sub(e.created_ms) < ttl)
    }

    /// Caches an unwrapped data key.
    pub fn put_decrypt(&self, tenant: TenantId, id: EntryId, value: Arc<D>) {
        let entry = Entry {
            tenant,
            value,
            created_ms: self.clock.now_millis(),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        };
        self.decrypt.put(id, entry);
    }

    /// Drops every entry of `tenant` from both caches; returns how many.
    pub fn flush_tenant(&self, tenant: &TenantId) -> usize {
        self.encrypt.remove_if(|_, e| e.tenant == *tenant) + self.decrypt.remove_if(|_, e| e.tenant == *tenant)
    }

    /// Drops entries that can no longer be used (past their age or TTL).
    pub fn purge_expired(&self) -> usize {
        let now = self.clock.now_millis();
        let max_age = duration_ms(self.config.max_age);
        let ttl = duration_ms(self.config.decrypt_ttl);
        self.encrypt.remove_if(|_, e| now.saturating_sub(e.created_ms) >= max_age)
            + self.decrypt.remove_if(|_, e| now.saturating_sub(e.created_ms) >= ttl)
    }

    /// Counters and sizes.
    pub fn stats(&self) -> CacheStats {
        let (encrypt_hits, encrypt_misses) = self.encrypt.stats();
        let (decrypt_hits, decrypt_misses) = self.decrypt.stats();
        CacheStats {
            encrypt_hits,
            encrypt_misses,
            decrypt_hits,
            decrypt_misses,
            encrypt_entries: self.encrypt.len(),
            decrypt_entries: self.decrypt.len(),
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
