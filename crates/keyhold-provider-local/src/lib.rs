//! keyhold's embedded key provider: root keys kept in the data directory, so keyhold runs
//! with no AWS account at all, and a stand-in for the tenant's KMS console in tests and
//! demos.
//!
//! Keys live in `<data dir>/local-kms/` (see [`store`](self) docs in `store.rs`): metadata
//! and key material sealed with AES-256-GCM under a master key created on first use, all
//! files mode 0600. Lifecycle and state enforcement follow AWS KMS: create (per region),
//! import, describe, list, disable, enable, schedule deletion (7 to 30 days) and cancel
//! (which leaves the key disabled), rotate (new material; older encrypted data keys still
//! unwrap because each names its material version). A disabled key or one pending deletion
//! refuses to generate, wrap and unwrap, with [`ProviderError::KeyDisabled`] and
//! [`ProviderError::KeyPendingDeletion`]. Once its waiting period is over, a key's
//! material is destroyed and it is [`ProviderError::KeyNotFound`].
//!
//! Encrypted data keys are written in the raw AES keyring format ([`raw_aes`]) under the
//! namespace `keyhold-local` with key name `<key id>:<version>`.
//!
//! File IO happens inside the async trait methods; it is a few small reads per call and
//! calls are rare (the materials cache sits in front), so it does not block a runtime in
//! any way that matters.

#![forbid(unsafe_code)]

pub mod raw_aes;
mod store;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use keyhold_core::{Clock, DataKey, EncryptedDataKey, EncryptionContext, KeyRef, Region, SystemClock};
use keyhold_provider::{
    ENCRYPT_DECRYPT, KeyDescription, KeyOrigin, KeyProvider, KeyState, ProviderError, SYMMETRIC_DEFAULT,
};

use crate::store::{Files, Origin, Stamp, State, StoreError, StoreFile, StoredKey, StoredVersion};

/// Shortest deletion waiting period, in days (as AWS KMS).
pub const MIN_DELETION_DAYS: u32 = 7;
/// Longest deletion waiting period, in days (as AWS KMS).
pub const MAX_DELETION_DAYS: u32 = 30;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The local key provider.
pub struct LocalKms {
    files: Files,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
    cache: Mutex<Option<(Stamp, Arc<StoreFile>)>>,
}

impl From<StoreError> for ProviderError {
    fn from(e: StoreError) -> Self {
        let code = match e {
            StoreError::Io { .. } => "LocalStoreIo",
            StoreError::Corrupt { .. } => "LocalStoreCorrupt",
        };
        ProviderError::Unavailable { code: code.into(), message: e.to_string() }
    }
}

impl LocalKms {
    /// Opens the provider rooted at `<data_dir>/local-kms`, creating it on first use.
    pub fn open(data_dir: &Path) -> Result<Self, ProviderError> {
        Self::with_clock(data_dir, Arc::new(SystemClock))
    }

    /// As [`LocalKms::open`], with an injected clock (for deletion waiting periods).
    pub fn with_clock(data_dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, ProviderError> {
        let rng = SystemRandom::new();
        let files = Files::open(&data_dir.join("local-kms"), &rng)?;
        Ok(Self { files, clock, rng, cache: Mutex::new(None) })
    }

    /// Creates a key in `region` and returns its description.
    pub fn create_key(&self, region: &Region, description: &str) -> Result<KeyDescription, ProviderError> {
        let mut material = zeroize::Zeroizing::new([0u8; 32]);
        self.rng.fill(material.as_mut()).map_err(|_| unavailable("randomness unavailable"))?;
        self.add_key(region, description, &DataKey::from_slice(material.as_ref()), Origin::Provider)
    }

    /// Creates a key from material the key owner supplies (32 bytes), as AWS KMS imports
    /// key material into a key of origin EXTERNAL.
    pub fn import_key(
        &self,
        region: &Region,
        material: &DataKey,
        description: &str,
    ) -> Result<KeyDescription, ProviderError> {
        if material.len() != 32 {
            return Err(ProviderError::InvalidRequest(format!(
                "imported key material must be 32 bytes, not {}",
                material.len()
            )));
        }
        self.add_key(region, description, material, Origin::External)
    }

    fn add_key(
        &self,
        region: &Region,
        description: &str,
        material: &DataKey,
        origin: Origin,
    ) -> Result<KeyDescription, ProviderError> {
        let mut raw = [0u8; 16];
        self.rng.fill(&mut raw).map_err(|_| unavailable("randomness unavailable"))?;
        let id = format!("lk-{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let now = self.clock.now_millis();
        let sealed = self.files.seal(&id, 1, material, &self.rng)?;
        let key = StoredKey {
            id,
            region: region.to_string(),
            created_ms: now,
            description: description.to_owned(),
            origin,
            state: State::Enabled,
            deletion_at_ms: None,
            versions: vec![StoredVersion { version: 1, created_ms: now, sealed }],
        };
        let desc = describe_stored(&key)?;
        self.update(|store| {
            store.keys.push(key);
            Ok(())
        })?;
        Ok(desc)
    }

    /// Every key that has not been deleted.
    pub fn list_keys(&self) -> Result<Vec<KeyDescription>, ProviderError> {
        let store = self.load()?;
        let now = self.clock.now_millis();
        store.keys.iter().filter(|k| !expired(k, now)).map(describe_stored).collect()
    }

    /// Describes one key.
    pub fn describe_key(&self, key: &KeyRef) -> Result<KeyDescription, ProviderError> {
        let store = self.load()?;
        describe_stored(self.find(&store, key)?)
    }

    /// Disables a key. Disabling a key pending deletion is refused, as in AWS KMS.
    pub fn disable_key(&self, key: &KeyRef) -> Result<KeyDescription, ProviderError> {
        self.transition(key, |k| match k.state {
            State::PendingDeletion => Err(ProviderError::KeyPendingDeletion { key: key_ref(k)? }),
            _ => {
                k.state = State::Disabled;
                Ok(())
            }
        })
    }

    /// Enables a key. Enabling a key pending deletion is refused; cancel the deletion first.
    pub fn enable_key(&self, key: &KeyRef) -> Result<KeyDescription, ProviderError> {
        self.transition(key, |k| match k.state {
            State::PendingDeletion => Err(ProviderError::KeyPendingDeletion { key: key_ref(k)? }),
            _ => {
                k.state = State::Enabled;
                Ok(())
            }
        })
    }

    /// Schedules a key's destruction after a waiting period of `days` (7 to 30).
    pub fn schedule_key_deletion(&self, key: &KeyRef, days: u32) -> Result<KeyDescription, ProviderError> {
        if !(MIN_DELETION_DAYS..=MAX_DELETION_DAYS).contains(&days) {
            return Err(ProviderError::InvalidRequest(format!(
                "the waiting period must be {MIN_DELETION_DAYS} to {MAX_DELETION_DAYS} days, not {days}"
            )));
        }
        let at = self.clock.now_millis().saturating_add(u64::from(days) * DAY_MS);
        self.transition(key, |k| {
            if k.state == State::PendingDeletion {
                return Err(ProviderError::KeyPendingDeletion { key: key_ref(k)? });
            }
            k.state = State::PendingDeletion;
            k.deletion_at_ms = Some(at);
            Ok(())
        })
    }

    /// Cancels a scheduled deletion; the key is left disabled, as in AWS KMS.
    pub fn cancel_key_deletion(&self, key: &KeyRef) -> Result<KeyDescription, ProviderError> {
        self.transition(key, |k| {
            if k.state != State::PendingDeletion {
                return Err(ProviderError::InvalidRequest(format!("key {} is not pending deletion", k.id)));
            }
            k.state = State::Disabled;
            k.deletion_at_ms = None;
            Ok(())
        })
    }

    /// Adds a new version of key material; new data keys are wrapped under it, and data
    /// keys wrapped under earlier versions still unwrap.
    pub fn rotate_key(&self, key: &KeyRef) -> Result<KeyDescription, ProviderError> {
        let mut material = zeroize::Zeroizing::new([0u8; 32]);
        self.rng.fill(material.as_mut()).map_err(|_| unavailable("randomness unavailable"))?;
        let material = DataKey::from_slice(material.as_ref());
        let now = self.clock.now_millis();
        self.transition(key, |k| {
            usable(k)?;
            if k.origin == Origin::External {
                return Err(ProviderError::Misconfigured {
                    key: key_ref(k)?,
                    code: "UnsupportedOperationException".into(),
                    message: "keys with imported material cannot be rotated; import a new key instead".into(),
                });
            }
            let version = k.versions.last().map_or(1, |v| v.version + 1);
            let sealed = self.files.seal(&k.id, version, &material, &self.rng)?;
            k.versions.push(StoredVersion { version, created_ms: now, sealed });
            Ok(())
        })
    }

    fn transition(
        &self,
        key: &KeyRef,
        f: impl FnOnce(&mut StoredKey) -> Result<(), ProviderError>,
    ) -> Result<KeyDescription, ProviderError> {
        let now = self.clock.now_millis();
        self.update(|store| {
            let k = store
                .keys
                .iter_mut()
                .find(|k| k.id == key.as_str() && !expired(k, now))
                .ok_or_else(|| ProviderError::KeyNotFound { key: key.clone() })?;
            f(k)?;
            describe_stored(k)
        })
    }

    /// Changes the keystore under the writer lock, destroying the material of keys whose
    /// deletion date has passed.
    fn update<T>(&self, f: impl FnOnce(&mut StoreFile) -> Result<T, ProviderError>) -> Result<T, ProviderError> {
        let now = self.clock.now_millis();
        self.files.update(|store: &mut StoreFile| {
            store.keys.retain(|k| !expired(k, now));
            f(store)
        })
    }

    /// The keystore, reloaded when another process has replaced the file.
    fn load(&self) -> Result<Arc<StoreFile>, ProviderError> {
        let stamp = self.files.stamp()?;
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Some(stamp), Some((cached, store))) = (stamp, cache.as_ref())
            && *cached == stamp
        {
            return Ok(store.clone());
        }
        let store = Arc::new(self.files.read()?);
        // Stamp taken before the read: if the file changed in between, the next load
        // sees a different stamp and reads again.
        *cache = stamp.map(|s| (s, store.clone()));
        Ok(store)
    }

    fn find<'s>(&self, store: &'s StoreFile, key: &KeyRef) -> Result<&'s StoredKey, ProviderError> {
        let now = self.clock.now_millis();
        store
            .keys
            .iter()
            .find(|k| k.id == key.as_str() && !expired(k, now))
            .ok_or_else(|| ProviderError::KeyNotFound { key: key.clone() })
    }

    /// The usable key and the material version to wrap with (the latest).
    fn material(&self, key: &KeyRef, version: Option<u32>) -> Result<(String, DataKey), ProviderError> {
        let store = self.load()?;
        let k = self.find(&store, key)?;
        usable(k)?;
        let v = match version {
            Some(n) => k.versions.iter().find(|v| v.version == n).ok_or_else(|| ProviderError::InvalidCiphertext {
                key: key.clone(),
                reason: format!("the key has no material version {n}"),
            })?,
            None => k.versions.last().ok_or_else(|| unavailable("key has no material"))?,
        };
        Ok((format!("{}:{}", k.id, v.version), self.files.unseal(&k.id, v)?))
    }
}

#[async_trait]
impl KeyProvider for LocalKms {
    fn name(&self) -> &'static str {
        "local"
    }

    fn accepts(&self, key: &KeyRef) -> bool {
        key.as_str().starts_with("lk-")
    }

    fn key_for(&self, edk: &EncryptedDataKey) -> Option<KeyRef> {
        if edk.provider_id != raw_aes::NAMESPACE {
            return None;
        }
        let name = raw_aes::key_name(&edk.provider_info).ok()?;
        let (id, _) = name.rsplit_once(':')?;
        KeyRef::parse(id).ok()
    }

    async fn generate_data_key(
        &self,
        key: &KeyRef,
        len: usize,
        context: &EncryptionContext,
    ) -> Result<(DataKey, EncryptedDataKey), ProviderError> {
        if !(1..=1024).contains(&len) {
            return Err(ProviderError::InvalidRequest(format!("data key length {len} is out of range")));
        }
        let mut bytes = zeroize::Zeroizing::new(vec![0u8; len]);
        self.rng.fill(&mut bytes).map_err(|_| unavailable("randomness unavailable"))?;
        let dk = DataKey::from_slice(&bytes);
        let edk = self.wrap(key, &dk, context).await?;
        Ok((dk, edk))
    }

    async fn wrap(
        &self,
        key: &KeyRef,
        data_key: &DataKey,
        context: &EncryptionContext,
    ) -> Result<EncryptedDataKey, ProviderError> {
        let (name, material) = self.material(key, None)?;
        raw_aes::wrap(&name, &material, data_key, context, &self.rng).map_err(|e| match e {
            raw_aes::RawAesError::ContextTooLarge => ProviderError::InvalidRequest(e.to_string()),
            other => unavailable(&other.to_string()),
        })
    }

    async fn unwrap(&self, edk: &EncryptedDataKey, context: &EncryptionContext) -> Result<DataKey, ProviderError> {
        let invalid =
            |reason: &str| ProviderError::InvalidRequest(format!("not a local-provider encrypted data key: {reason}"));
        if edk.provider_id != raw_aes::NAMESPACE {
            return Err(invalid("wrong provider id"));
        }
        let name = raw_aes::key_name(&edk.provider_info).map_err(|e| invalid(&e.to_string()))?;
        let (id, version) = name.rsplit_once(':').ok_or_else(|| invalid("key name has no version"))?;
        let version: u32 = version.parse().map_err(|_| invalid("key name has no version"))?;
        let key = KeyRef::parse(id).map_err(|e| invalid(&e.to_string()))?;
        let (_, material) = self.material(&key, Some(version))?;
        raw_aes::unwrap(&material, edk, context)
            .map_err(|e| ProviderError::InvalidCiphertext { key: key.clone(), reason: e.to_string() })
    }

    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, ProviderError> {
        self.describe_key(key)
    }
}

fn unavailable(message: &str) -> ProviderError {
    ProviderError::Unavailable { code: "LocalProviderError".into(), message: message.to_owned() }
}

fn expired(k: &StoredKey, now: u64) -> bool {
    k.state == State::PendingDeletion && k.deletion_at_ms.is_some_and(|at| at <= now)
}

fn key_ref(k: &StoredKey) -> Result<KeyRef, ProviderError> {
    KeyRef::parse(&k.id).map_err(|e| unavailable(&format!("stored key id is invalid: {e}")))
}

fn usable(k: &StoredKey) -> Result<(), ProviderError> {
    match k.state {
        State::Enabled => Ok(()),
        State::Disabled => Err(ProviderError::KeyDisabled { key: key_ref(k)? }),
        State::PendingDeletion => Err(ProviderError::KeyPendingDeletion { key: key_ref(k)? }),
    }
}

fn describe_stored(k: &StoredKey) -> Result<KeyDescription, ProviderError> {
    Ok(KeyDescription {
        key: key_ref(k)?,
        region: Region::parse(&k.region).map_err(|e| unavailable(&format!("stored region is invalid: {e}")))?,
        state: match k.state {
            State::Enabled => KeyState::Enabled,
            State::Disabled => KeyState::Disabled,
            State::PendingDeletion => KeyState::PendingDeletion { deletion_at_ms: k.deletion_at_ms.unwrap_or(0) },
        },
        created_ms: k.created_ms,
        origin: match k.origin {
            Origin::Provider => KeyOrigin::Provider,
            Origin::External => KeyOrigin::External,
        },
        material_versions: Some(u32::try_from(k.versions.len()).unwrap_or(u32::MAX)),
        description: k.description.clone(),
        spec: SYMMETRIC_DEFAULT.to_owned(),
        usage: ENCRYPT_DECRYPT.to_owned(),
        multi_region: false,
    })
}
