//! Integration tests of the local provider: the shared conformance suite, and what is
//! particular to a file-backed provider (sealing at rest, file modes, other processes'
//! changes, waiting periods, rotation, concurrent writers).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use keyhold_core::{DataKey, EncryptionContext, KeyRef, ManualClock, Region};
use keyhold_provider::conformance::{self, ConformanceHarness};
use keyhold_provider::{KeyOrigin, KeyProvider, KeyState, ProviderError};
use keyhold_provider_local::LocalKms;

struct Harness {
    kms: Arc<LocalKms>,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl ConformanceHarness for Harness {
    fn provider(&self) -> Arc<dyn KeyProvider> {
        self.kms.clone()
    }
    async fn create_key(&self, region: &Region) -> KeyRef {
        self.kms.create_key(region, "conformance").unwrap().key
    }
    async fn disable(&self, key: &KeyRef) {
        self.kms.disable_key(key).unwrap();
    }
    async fn enable(&self, key: &KeyRef) {
        self.kms.enable_key(key).unwrap();
    }
    async fn schedule_deletion(&self, key: &KeyRef) {
        self.kms.schedule_key_deletion(key, 7).unwrap();
    }
    async fn cancel_deletion(&self, key: &KeyRef) {
        self.kms.cancel_key_deletion(key).unwrap();
    }
    fn missing_key(&self) -> KeyRef {
        KeyRef::parse("lk-00000000000000000000000000000000").unwrap()
    }
}

fn region(r: &str) -> Region {
    Region::parse(r).unwrap()
}

fn ctx(tenant: &str) -> EncryptionContext {
    let mut c = EncryptionContext::new();
    c.insert("tenant", tenant);
    c
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness { kms: Arc::new(LocalKms::open(dir.path()).unwrap()), _dir: dir };
    conformance::run_all(&h).await.unwrap();
}

#[tokio::test]
async fn material_is_sealed_and_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::open(dir.path()).unwrap();
    let material = [0x5au8; 32];
    let key = kms.import_key(&region("eu-west-2"), &DataKey::from_slice(&material), "imported").unwrap();
    assert_eq!(key.origin, KeyOrigin::External);
    let root = dir.path().join("local-kms");
    for f in ["master.key", "keys.json"] {
        let mode = std::fs::metadata(root.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f} has mode {mode:o}");
    }
    assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o700);
    let json = std::fs::read(root.join("keys.json")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(material);
    let hex: String = material.iter().map(|b| format!("{b:02x}")).collect();
    let text = String::from_utf8_lossy(&json);
    assert!(!text.contains(&b64) && !text.contains(&hex), "key material is stored in the clear");
    assert!(!json.windows(32).any(|w| w == material), "raw key material in keys.json");
    // And the import really is that material: a data key wrapped by the provider unwraps
    // with the raw-AES format code given the same wrapping key.
    let (dk, edk) = kms.generate_data_key(&key.key, 32, &ctx("t")).await.unwrap();
    let direct = keyhold_provider_local::raw_aes::unwrap(&DataKey::from_slice(&material), &edk, &ctx("t")).unwrap();
    assert!(direct.ct_eq(&dk));
}

#[tokio::test]
async fn another_process_changes_are_seen_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = LocalKms::open(dir.path()).unwrap();
    let cli = LocalKms::open(dir.path()).unwrap();
    let key = cli.create_key(&region("eu-central-1"), "").unwrap().key;
    let (_, edk) = server.generate_data_key(&key, 32, &ctx("t")).await.unwrap();
    cli.disable_key(&key).unwrap();
    assert!(matches!(server.unwrap(&edk, &ctx("t")).await, Err(ProviderError::KeyDisabled { .. })));
    cli.enable_key(&key).unwrap();
    server.unwrap(&edk, &ctx("t")).await.unwrap();
    cli.schedule_key_deletion(&key, 30).unwrap();
    assert!(matches!(server.unwrap(&edk, &ctx("t")).await, Err(ProviderError::KeyPendingDeletion { .. })));
}

#[tokio::test]
async fn deletion_destroys_the_key_after_the_waiting_period() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let kms = LocalKms::with_clock(dir.path(), clock.clone()).unwrap();
    let key = kms.create_key(&region("ap-south-1"), "").unwrap().key;
    let (_, edk) = kms.generate_data_key(&key, 32, &ctx("t")).await.unwrap();
    assert!(matches!(kms.schedule_key_deletion(&key, 6), Err(ProviderError::InvalidRequest(_))));
    assert!(matches!(kms.schedule_key_deletion(&key, 31), Err(ProviderError::InvalidRequest(_))));
    let d = kms.schedule_key_deletion(&key, 7).unwrap();
    assert_eq!(d.state, KeyState::PendingDeletion { deletion_at_ms: 1_700_000_000_000 + 7 * 86_400_000 });
    assert!(matches!(kms.enable_key(&key), Err(ProviderError::KeyPendingDeletion { .. })));
    clock.advance(Duration::from_secs(7 * 86_400 - 1));
    assert!(matches!(kms.unwrap(&edk, &ctx("t")).await, Err(ProviderError::KeyPendingDeletion { .. })));
    clock.advance(Duration::from_secs(1));
    assert!(matches!(kms.unwrap(&edk, &ctx("t")).await, Err(ProviderError::KeyNotFound { .. })));
    assert!(kms.list_keys().unwrap().is_empty());
    // The next write purges it from the file.
    kms.create_key(&region("ap-south-1"), "").unwrap();
    let json = std::fs::read_to_string(dir.path().join("local-kms/keys.json")).unwrap();
    assert!(!json.contains(key.as_str()), "deleted key still on disk");
}

#[tokio::test]
async fn rotation_keeps_old_data_keys_readable() {
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::open(dir.path()).unwrap();
    let key = kms.create_key(&region("eu-central-1"), "").unwrap().key;
    let (dk1, edk1) = kms.generate_data_key(&key, 32, &ctx("t")).await.unwrap();
    let d = kms.rotate_key(&key).unwrap();
    assert_eq!(d.material_versions, Some(2));
    let (dk2, edk2) = kms.generate_data_key(&key, 32, &ctx("t")).await.unwrap();
    assert_ne!(
        edk1.provider_info[..edk1.provider_info.len() - 20],
        edk2.provider_info[..edk2.provider_info.len() - 20]
    );
    assert!(kms.unwrap(&edk1, &ctx("t")).await.unwrap().ct_eq(&dk1));
    assert!(kms.unwrap(&edk2, &ctx("t")).await.unwrap().ct_eq(&dk2));
    assert_eq!(kms.key_for(&edk2), Some(key.clone()));
    kms.disable_key(&key).unwrap();
    assert!(matches!(kms.rotate_key(&key), Err(ProviderError::KeyDisabled { .. })));
    let imported = kms.import_key(&region("eu-central-1"), &DataKey::from_slice(&[1; 32]), "").unwrap().key;
    assert!(matches!(kms.rotate_key(&imported), Err(ProviderError::Misconfigured { .. })));
}

#[test]
fn concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                // A separate instance per thread, as separate processes would have.
                let kms = LocalKms::open(&path).unwrap();
                for _ in 0..10 {
                    kms.create_key(&Region::parse("us-east-1").unwrap(), "").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(LocalKms::open(&path).unwrap().list_keys().unwrap().len(), 40);
}

#[tokio::test]
async fn foreign_and_malformed_encrypted_data_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::open(dir.path()).unwrap();
    let key = kms.create_key(&region("eu-central-1"), "").unwrap().key;
    let (_, edk) = kms.generate_data_key(&key, 32, &ctx("t")).await.unwrap();
    let mut foreign = edk.clone();
    foreign.provider_id = "aws-kms".into();
    assert_eq!(kms.key_for(&foreign), None);
    assert!(matches!(kms.unwrap(&foreign, &ctx("t")).await, Err(ProviderError::InvalidRequest(_))));
    let mut bad_info = edk.clone();
    bad_info.provider_info.truncate(5);
    assert!(matches!(kms.unwrap(&bad_info, &ctx("t")).await, Err(ProviderError::InvalidRequest(_))));
    let mut short = edk.clone();
    short.ciphertext.truncate(3);
    assert!(matches!(kms.unwrap(&short, &ctx("t")).await, Err(ProviderError::InvalidCiphertext { .. })));
}

#[test]
fn corrupt_master_key_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("local-kms")).unwrap();
    std::fs::write(dir.path().join("local-kms/master.key"), b"short").unwrap();
    match LocalKms::open(dir.path()) {
        Err(e @ ProviderError::Unavailable { .. }) => {
            assert!(e.to_string().contains("master key is 5 bytes"), "{e}")
        }
        Err(other) => panic!("wrong error {other}"),
        Ok(_) => panic!("opened with a corrupt master key"),
    }
}

/// Regression: a removed `master.key` beside an existing `keys.json` silently created a
/// new master key, making every stored key unreadable.
#[test]
fn a_missing_master_key_beside_existing_keys_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let kms = LocalKms::open(dir.path()).unwrap();
    kms.create_key(&region("eu-central-1"), "x").unwrap();
    drop(kms);
    std::fs::remove_file(dir.path().join("local-kms/master.key")).unwrap();
    match LocalKms::open(dir.path()) {
        Err(e) => assert!(e.to_string().contains("master key is missing"), "{e}"),
        Ok(_) => panic!("opened without its master key"),
    }
    assert!(!dir.path().join("local-kms/master.key").exists(), "no new master key may be created");
}
