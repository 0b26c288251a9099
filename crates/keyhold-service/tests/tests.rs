//! Service tests over the real local provider: multi-region messages, failover, tenant
//! isolation, cache reuse (provider calls counted by a pass-through wrapper) and errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use keyhold_core::{DataKey, EncryptedDataKey, EncryptionContext, KeyRef, Purpose, Region, SystemClock, TenantId};
use keyhold_envelope::AlgorithmSuite;
use keyhold_provider::{KeyDescription, KeyProvider, ProviderError};
use keyhold_provider_local::LocalKms;
use keyhold_service::{EncryptParams, Keyhold, ServiceError, Settings};

/// Counts calls on their way to the real provider.
struct Counting {
    inner: Arc<LocalKms>,
    calls: AtomicUsize,
    /// Latency added to every call (as a remote KMS has), so concurrent callers overlap.
    delay_ms: u64,
}

impl Counting {
    async fn enter(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(self.delay_ms)).await;
        }
    }
}

#[async_trait]
impl KeyProvider for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn accepts(&self, key: &KeyRef) -> bool {
        self.inner.accepts(key)
    }
    fn key_for(&self, edk: &EncryptedDataKey) -> Option<KeyRef> {
        self.inner.key_for(edk)
    }
    async fn generate_data_key(
        &self,
        key: &KeyRef,
        len: usize,
        c: &EncryptionContext,
    ) -> Result<(DataKey, EncryptedDataKey), ProviderError> {
        self.enter().await;
        self.inner.generate_data_key(key, len, c).await
    }
    async fn wrap(&self, key: &KeyRef, dk: &DataKey, c: &EncryptionContext) -> Result<EncryptedDataKey, ProviderError> {
        self.enter().await;
        self.inner.wrap(key, dk, c).await
    }
    async fn unwrap(&self, edk: &EncryptedDataKey, c: &EncryptionContext) -> Result<DataKey, ProviderError> {
        self.enter().await;
        self.inner.unwrap(edk, c).await
    }
    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, ProviderError> {
        self.inner.describe(key).await
    }
}

struct Fixture {
    kms: Arc<LocalKms>,
    counting: Arc<Counting>,
    service: Keyhold,
    eu1: KeyRef,
    eu2: KeyRef,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let kms = Arc::new(LocalKms::open(dir.path()).unwrap());
    let eu1 = kms.create_key(&Region::parse("eu-central-1").unwrap(), "").unwrap().key;
    let eu2 = kms.create_key(&Region::parse("eu-west-1").unwrap(), "").unwrap().key;
    let counting = Arc::new(Counting { inner: kms.clone(), calls: AtomicUsize::new(0), delay_ms: 0 });
    let service = Keyhold::new(vec![counting.clone()], Settings::default(), Arc::new(SystemClock));
    Fixture { kms, counting, service, eu1, eu2, _dir: dir }
}

fn params(f: &Fixture, tenant: &str) -> EncryptParams {
    EncryptParams {
        tenant: TenantId::parse(tenant).unwrap(),
        purpose: Purpose::parse("billing").unwrap(),
        keys: vec![f.eu1.clone(), f.eu2.clone()].into(),
        context: EncryptionContext::new(),
        suite: AlgorithmSuite::default(),
        generation: 0,
    }
}

#[tokio::test]
async fn round_trip_with_reserved_context() {
    let f = fixture();
    let p = params(&f, "acme");
    let ct = f.service.encrypt(&p, b"hello").await.unwrap();
    let d = f.service.decrypt(&p.tenant, &ct).await.unwrap();
    assert_eq!(d.plaintext, b"hello");
    assert_eq!(d.header.context().get("tenant"), Some("acme"));
    assert_eq!(d.header.context().get("purpose"), Some("billing"));
    assert_eq!(d.header.encrypted_data_keys().len(), 2);
}

#[tokio::test]
async fn data_keys_are_reused_across_messages() {
    let f = fixture();
    let p = params(&f, "acme");
    let mut cts = Vec::new();
    for i in 0..1000u32 {
        cts.push(f.service.encrypt(&p, &i.to_be_bytes()).await.unwrap());
    }
    // One generate (home region) and one wrap (second region) for 1000 messages.
    assert_eq!(f.counting.calls.load(Ordering::SeqCst), 2);
    // Every message has its own message id (bytes 3..35 of a v2 header).
    let ids: std::collections::HashSet<&[u8]> = cts.iter().map(|c| &c[3..35]).collect();
    assert_eq!(ids.len(), cts.len());
    for ct in &cts {
        f.service.decrypt(&p.tenant, ct).await.unwrap();
    }
    // One unwrap for all of them.
    assert_eq!(f.counting.calls.load(Ordering::SeqCst), 3);
    let s = f.service.cache_stats();
    assert_eq!((s.encrypt_hits, s.encrypt_misses), (999, 1));
    assert_eq!((s.decrypt_hits, s.decrypt_misses), (999, 1));
}

#[tokio::test]
async fn another_tenants_message_is_refused_before_any_unwrap() {
    let f = fixture();
    let ct = f.service.encrypt(&params(&f, "tenant-a"), b"a's data").await.unwrap();
    let before = f.counting.calls.load(Ordering::SeqCst);
    let err = f.service.decrypt(&TenantId::parse("tenant-b").unwrap(), &ct).await.unwrap_err();
    assert!(matches!(&err, ServiceError::TenantMismatch { found: Some(t), .. } if t == "tenant-a"), "{err}");
    assert_eq!(f.counting.calls.load(Ordering::SeqCst), before, "no provider call for a foreign message");
}

#[tokio::test]
async fn fails_over_to_the_other_region_and_reports_revocation() {
    let f = fixture();
    let p = params(&f, "acme");
    let ct = f.service.encrypt(&p, b"x").await.unwrap();
    f.service.flush_tenant(&p.tenant);
    f.kms.disable_key(&f.eu1).unwrap();
    assert_eq!(f.service.decrypt(&p.tenant, &ct).await.unwrap().plaintext, b"x");
    f.service.flush_tenant(&p.tenant);
    f.kms.disable_key(&f.eu2).unwrap();
    let err = f.service.decrypt(&p.tenant, &ct).await.unwrap_err();
    assert!(matches!(err, ServiceError::Provider { source: ProviderError::KeyDisabled { .. }, .. }), "{err}");
    assert!(chain(&err).contains("is disabled"), "{err}");
    // Encryption under a disabled home key fails too, with the key named.
    let err = f.service.encrypt(&params(&f, "other"), b"y").await.unwrap_err();
    assert!(chain(&err).contains(f.eu1.as_str()) && chain(&err).contains("disabled"), "{err}");
}

#[tokio::test]
async fn context_partitions_the_cache_and_reserved_keys_are_refused() {
    let f = fixture();
    let mut p = params(&f, "acme");
    p.context.insert("table", "users");
    f.service.encrypt(&p, b"1").await.unwrap();
    p.context.insert("table", "orders");
    f.service.encrypt(&p, b"2").await.unwrap();
    assert_eq!(f.counting.calls.load(Ordering::SeqCst), 4, "a different context needs its own data key");
    p.context.insert("tenant", "mallory");
    assert!(matches!(f.service.encrypt(&p, b"3").await, Err(ServiceError::ReservedContextKey(k)) if k == "tenant"));
}

#[tokio::test]
async fn signing_suite_round_trips_and_purposes_do_not_share_keys() {
    let f = fixture();
    let mut p = params(&f, "acme");
    p.suite = AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384;
    let ct = f.service.encrypt(&p, b"signed").await.unwrap();
    assert_eq!(f.service.decrypt(&p.tenant, &ct).await.unwrap().plaintext, b"signed");
    let mut q = params(&f, "acme");
    q.purpose = Purpose::parse("search").unwrap();
    let before = f.counting.calls.load(Ordering::SeqCst);
    f.service.encrypt(&q, b"other purpose").await.unwrap();
    assert_eq!(f.counting.calls.load(Ordering::SeqCst), before + 2);
}

#[tokio::test]
async fn unknown_keys_and_suites_are_refused() {
    let f = fixture();
    let mut p = params(&f, "acme");
    p.keys = vec![KeyRef::parse("arn:aws:kms:eu-west-1:111122223333:key/x").unwrap()].into();
    assert!(matches!(f.service.encrypt(&p, b"").await, Err(ServiceError::NoProviderFor(_))));
    p.keys = Vec::new().into();
    assert!(matches!(f.service.encrypt(&p, b"").await, Err(ServiceError::NoKeys)));
    let mut p = params(&f, "acme");
    p.suite = AlgorithmSuite::AES_256_GCM_HKDF_SHA384_ECDSA_P384;
    assert!(matches!(f.service.encrypt(&p, b"").await, Err(ServiceError::UnsupportedSuite(_))));
}

/// The error and its sources, as `{:#}` prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Concurrent misses on one cache entry make one provider call, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_provider_call() {
    let f = fixture();
    let slow = Arc::new(Counting { inner: f.kms.clone(), calls: AtomicUsize::new(0), delay_ms: 30 });
    let writer = Arc::new(Keyhold::new(vec![slow.clone()], Settings::default(), Arc::new(SystemClock)));
    let p = params(&f, "acme");
    let tasks: Vec<_> = (0..32u32)
        .map(|i| {
            let (w, p) = (writer.clone(), p.clone());
            tokio::spawn(async move { w.encrypt(&p, &i.to_be_bytes()).await.unwrap() })
        })
        .collect();
    let mut cts = Vec::new();
    for t in tasks {
        cts.push(t.await.unwrap());
    }
    // One generate (home region) and one wrap (other region) for 32 concurrent messages.
    assert_eq!(slow.calls.load(Ordering::SeqCst), 2);

    let reader = Arc::new(Keyhold::new(vec![slow.clone()], Settings::default(), Arc::new(SystemClock)));
    let tasks: Vec<_> = cts
        .into_iter()
        .map(|ct| {
            let (r, t) = (reader.clone(), p.tenant.clone());
            tokio::spawn(async move { r.decrypt(&t, &ct).await.unwrap().plaintext })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), (i as u32).to_be_bytes());
    }
    assert_eq!(slow.calls.load(Ordering::SeqCst), 3, "one unwrap for 32 concurrent decryptions");
}
