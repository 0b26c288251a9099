//! Unit tests of the cache limits, TTL, bounds, tenant flush and zeroize-on-evict.

use std::sync::atomic::AtomicUsize;

use keyhold_core::ManualClock;

use super::*;

fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}

/// Entry ids are digests that cover the tenant; here a tenant's first letter stands in.
fn eid(t: &str) -> EntryId {
    [t.as_bytes()[0]; 32]
}

fn did(t: &str, n: u8) -> EntryId {
    let mut id = [n; 32];
    id[0] = t.as_bytes()[0];
    id
}

fn cache(config: CacheConfig) -> (MaterialsCache<u32, u32>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_000_000));
    (MaterialsCache::new(config, clock.clone()), clock)
}

#[test]
fn message_limit_counts_the_first_use() {
    let (c, _) = cache(CacheConfig { max_messages: 3, ..CacheConfig::default() });
    c.put_encrypt(tenant("a"), eid("a"), Arc::new(1), 10);
    assert!(c.get_encrypt(&tenant("a"), &eid("a"), 10).is_some());
    assert!(c.get_encrypt(&tenant("a"), &eid("a"), 10).is_some());
    assert!(c.get_encrypt(&tenant("a"), &eid("a"), 10).is_none(), "the fourth message must need a new key");
    c.put_encrypt(tenant("a"), eid("a"), Arc::new(2), 10);
    assert_eq!(*c.get_encrypt(&tenant("a"), &eid("a"), 10).unwrap(), 2);
}

#[test]
fn byte_limit() {
    let (c, _) = cache(CacheConfig { max_bytes: 100, ..CacheConfig::default() });
    c.put_encrypt(tenant("a"), eid("a"), Arc::new(1), 60);
    assert!(c.get_encrypt(&tenant("a"), &eid("a"), 40).is_some());
    assert!(c.get_encrypt(&tenant("a"), &eid("a"), 1).is_none());
}

#[test]
fn age_limit() {
    let (c, clock) = cache(CacheConfig { max_age: Duration::from_secs(60), ..CacheConfig::default() });
    c.put_encrypt(tenant("a"), eid("a"), Arc::new(1), 0);
    clock.advance(Duration::from_secs(59));
    assert!(c.get_encrypt(&tenant("a"), &eid("a"), 0).is_some());
    clock.advance(Duration::from_secs(1));
    assert!(c.get_encrypt(&tenant("a"), &eid("a"), 0).is_none());
    assert_eq!(c.purge_expired(), 1);
}

#[test]
fn default_limits_are_the_documented_ones() {
    let d = CacheConfig::default();
    assert_eq!(d.max_messages, 5_000_000);
    assert_eq!(d.max_age, Duration::from_secs(86_400));
}

#[test]
fn decrypt_ttl() {
    let (c, clock) = cache(CacheConfig { decrypt_ttl: Duration::from_secs(30), ..CacheConfig::default() });
    c.put_decrypt(tenant("a"), did("a", 1), Arc::new(7));
    assert_eq!(*c.get_decrypt(&tenant("a"), &did("a", 1)).unwrap(), 7);
    assert!(c.get_decrypt(&tenant("a"), &did("a", 2)).is_none());
    clock.advance(Duration::from_secs(30));
    assert!(c.get_decrypt(&tenant("a"), &did("a", 1)).is_none());
    let s = c.stats();
    assert_eq!((s.decrypt_hits, s.decrypt_misses), (1, 2));
}

#[test]
fn tenants_are_partitioned_and_flushed_alone() {
    let (c, _) = cache(CacheConfig::default());
    c.put_encrypt(tenant("a"), eid("a"), Arc::new(1), 0);
    c.put_encrypt(tenant("b"), eid("b"), Arc::new(2), 0);
    c.put_decrypt(tenant("a"), did("a", 1), Arc::new(3));
    c.put_decrypt(tenant("b"), did("b", 1), Arc::new(4));
    // Same digest, other tenant: a different entry.
    assert_eq!(*c.get_decrypt(&tenant("b"), &did("b", 1)).unwrap(), 4);
    // An entry is never returned to another tenant, even asked for by its exact id.
    assert!(c.get_decrypt(&tenant("b"), &did("a", 1)).is_none());
    assert!(c.get_encrypt(&tenant("b"), &eid("a"), 0).is_none());
    assert_eq!(c.flush_tenant(&tenant("a")), 2);
    assert!(c.get_encrypt(&tenant("a"), &eid("a"), 0).is_none());
    assert!(c.get_decrypt(&tenant("a"), &did("a", 1)).is_none());
    assert_eq!(*c.get_encrypt(&tenant("b"), &eid("b"), 0).unwrap(), 2);
    assert_eq!(*c.get_decrypt(&tenant("b"), &did("b", 1)).unwrap(), 4);
}

#[test]
fn size_is_bounded() {
    let (c, clock) = cache(CacheConfig { max_entries: 64, ..CacheConfig::default() });
    for i in 0..=255u8 {
        c.put_decrypt(tenant("a"), did("a", i), Arc::new(u32::from(i)));
        clock.advance(Duration::from_millis(1));
    }
    assert!(c.stats().decrypt_entries <= 64, "{} entries", c.stats().decrypt_entries);
    // The newest survives.
    assert!(c.get_decrypt(&tenant("a"), &did("a", 255)).is_some());
}

/// A value that counts its drops, standing in for a zeroize-on-drop key.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn evicted_values_are_dropped_once_unused() {
    let drops = Arc::new(AtomicUsize::new(0));
    let clock = Arc::new(ManualClock::new(0));
    let c: MaterialsCache<Counted, Counted> = MaterialsCache::new(CacheConfig::default(), clock);
    c.put_decrypt(tenant("a"), did("a", 1), Arc::new(Counted(drops.clone())));
    let in_use = c.get_decrypt(&tenant("a"), &did("a", 1)).unwrap();
    c.flush_tenant(&tenant("a"));
    assert_eq!(drops.load(Ordering::SeqCst), 0, "still in use by a request");
    drop(in_use);
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn concurrent_use_counts_every_message() {
    let (c, _) = cache(CacheConfig { max_messages: 1_000_000, ..CacheConfig::default() });
    let c = Arc::new(c);
    c.put_encrypt(tenant("a"), eid("a"), Arc::new(1), 0);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                (0..10_000).filter(|_| c.get_encrypt(&tenant("a"), &eid("a"), 1).is_some()).count()
            })
        })
        .collect();
    let served: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(served, 40_000);
    let (c2, _) = cache(CacheConfig { max_messages: 1_001, ..CacheConfig::default() });
    let c2 = Arc::new(c2);
    c2.put_encrypt(tenant("a"), eid("a"), Arc::new(1), 0);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = c2.clone();
            std::thread::spawn(move || {
                (0..1_000).filter(|_| c.get_encrypt(&tenant("a"), &eid("a"), 1).is_some()).count()
            })
        })
        .collect();
    let served: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(served, 1_000, "exactly max_messages - 1 further uses after the first");
}
