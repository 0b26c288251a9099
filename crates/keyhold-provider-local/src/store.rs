//! The on-disk keystore: `master.key` (32 random bytes) and `keys.json` (key metadata and
//! key material sealed under the master key), both mode 0600 in a 0700 directory.
//!
//! Writers take an exclusive lock on `keys.lock`, re-read the file, change it, and replace
//! it atomically (write, fsync, rename). Readers need no lock: they see either the old or
//! the new file, and reload whenever its identity (inode, size, mtime) changes, which is
//! how a running server sees a key that the CLI disabled a moment ago.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rand::SecureRandom;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyhold_core::DataKey;
use serde::{Deserialize, Serialize};

/// What can go wrong with the keystore files.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("keystore {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> StoreError + 'p {
    move |source| StoreError::Io { op, path: path.to_owned(), source }
}

/// The persisted keystore.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct StoreFile {
    pub(crate) format: u32,
    pub(crate) keys: Vec<StoredKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredKey {
    pub(crate) id: String,
    pub(crate) region: String,
    pub(crate) created_ms: u64,
    #[serde(default)]
    pub(crate) description: String,
    pub(crate) origin: Origin,
    pub(crate) state: State,
    #[serde(default)]
    pub(crate) deletion_at_ms: Option<u64>,
    pub(crate) versions: Vec<StoredVersion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Origin {
    Provider,
    External,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    Enabled,
    Disabled,
    PendingDeletion,
}

/// One version of key material, sealed: base64(iv || ciphertext || tag).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredVersion {
    pub(crate) version: u32,
    pub(crate) created_ms: u64,
    pub(crate) sealed: String,
}

/// The directory, the master key and the file paths.
pub(crate) struct Files {
    pub(crate) dir: PathBuf,
    keys: PathBuf,
    lock: PathBuf,
    master: LessSafeKey,
}

/// File identity used to notice changes made by other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Files {
    /// Opens (creating on first use) the keystore directory and master key.
    pub(crate) fn open(dir: &Path, rng: &dyn SecureRandom) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io("restrict", dir))?;
        let master_path = dir.join("master.key");
        let keys = dir.join("keys.json");
        // A keystore without its master key cannot be opened: creating a new master key
        // would make every sealed key unreadable, silently. Say what is wrong instead.
        if !master_path.exists() && keys.exists() {
            return Err(StoreError::Corrupt {
                path: master_path,
                reason: format!(
                    "the master key is missing but {} holds keys sealed under it; restore master.key from \
                     a backup (keyhold will not create a new one over existing keys)",
                    keys.display()
                ),
            });
        }
        let master = load_or_create_master(&master_path, rng)?;
        let master = UnboundKey::new(&AES_256_GCM, master.expose()).map_err(|_| StoreError::Corrupt {
            path: master_path.clone(),
            reason: "master key is not 32 bytes".into(),
        })?;
        Ok(Self { keys, lock: dir.join("keys.lock"), dir: dir.to_owned(), master: LessSafeKey::new(master) })
    }

    /// The current file's identity, or `None` if there is no keystore yet.
    pub(crate) fn stamp(&self) -> Result<Option<Stamp>, StoreError> {
        match fs::metadata(&self.keys) {
            Ok(m) => Ok(Some(Stamp {
                ino: m.ino(),
                len: m.len(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("stat", &self.keys)(e)),
        }
    }

    pub(crate) fn read(&self) -> Result<StoreFile, StoreError> {
        let bytes = match fs::read(&self.keys) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(StoreFile { format: 1, keys: Vec::new() });
            }
            Err(e) => return Err(io("read", &self.keys)(e)),
        };
        let file: StoreFile = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt { path: self.keys.clone(), reason: e.to_string() })?;
        if file.format != 1 {
            return Err(StoreError::Corrupt {
                path: self.keys.clone(),
                reason: format!("unknown format {}", file.format),
            });
        }
        Ok(file)
    }

    /// Runs `f` on the current keystore under the writer lock and persists the result.
    pub(crate) fn update<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut StoreFile) -> Result<T, E>,
    ) -> Result<T, E> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock)
            .map_err(io("open", &self.lock))?;
        lock.lock().map_err(io("lock", &self.lock))?;
        let mut store = self.read()?;
        let out = f(&mut store)?;
        self.write(&store)?;
        // Dropping `lock` releases it.
        drop(lock);
        Ok(out)
    }

    fn write(&self, store: &StoreFile) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(store)
            .map_err(|e| StoreError::Corrupt { path: self.keys.clone(), reason: e.to_string() })?;
        let tmp = self.dir.join("keys.json.tmp");
        write_private(&tmp, &json)?;
        fs::rename(&tmp, &self.keys).map_err(io("replace", &self.keys))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("sync", &self.dir))?;
        Ok(())
    }

    /// Seals key material for storage, bound to the key id and version.
    pub(crate) fn seal(
        &self,
        id: &str,
        version: u32,
        material: &DataKey,
        rng: &dyn SecureRandom,
    ) -> Result<String, StoreError> {
        let mut iv = [0u8; 12];
        rng.fill(&mut iv).map_err(|_| self.corrupt("randomness unavailable"))?;
        let mut buf = material.expose().to_vec();
        let tag = self
            .master
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(seal_aad(id, version)), &mut buf)
            .map_err(|_| self.corrupt("sealing failed"))?;
        let mut out = iv.to_vec();
        out.append(&mut buf);
        out.extend_from_slice(tag.as_ref());
        Ok(STANDARD.encode(out))
    }

    /// Opens sealed key material.
    pub(crate) fn unseal(&self, id: &str, version: &StoredVersion) -> Result<DataKey, StoreError> {
        let bytes = zeroize::Zeroizing::new(
            STANDARD.decode(&version.sealed).map_err(|_| self.corrupt("sealed material is not base64"))?,
        );
        if bytes.len() != 12 + 32 + 16 {
            return Err(self.corrupt("sealed material has the wrong length"));
        }
        let (iv, rest) = bytes.split_at(12);
        let (ct, tag) = rest.split_at(32);
        let iv: [u8; 12] = iv.try_into().map_err(|_| self.corrupt("bad IV"))?;
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        self.master
            .open_separate_gather(
                Nonce::assume_unique_for_key(iv),
                Aad::from(seal_aad(id, version.version)),
                ct,
                tag,
                out.as_mut(),
            )
            .map_err(|_| self.corrupt("sealed material does not authenticate under the master key"))?;
        Ok(DataKey::from_slice(out.as_ref()))
    }

    fn corrupt(&self, reason: &str) -> StoreError {
        StoreError::Corrupt { path: self.keys.clone(), reason: reason.to_owned() }
    }
}

fn seal_aad(id: &str, version: u32) -> Vec<u8> {
    format!("keyhold-local-kms/v1:{id}:{version}").into_bytes()
}

/// Reads the master key, creating it atomically if absent: written in full to a temporary
/// file, then hard-linked into place, which fails if another process won the race.
fn load_or_create_master(path: &Path, rng: &dyn SecureRandom) -> Result<DataKey, StoreError> {
    if let Some(k) = read_master(path)? {
        return Ok(k);
    }
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    rng.fill(key.as_mut())
        .map_err(|_| StoreError::Corrupt { path: path.to_owned(), reason: "randomness unavailable".into() })?;
    let mut suffix = [0u8; 8];
    rng.fill(&mut suffix)
        .map_err(|_| StoreError::Corrupt { path: path.to_owned(), reason: "randomness unavailable".into() })?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_extension(format!("tmp.{suffix}"));
    write_private(&tmp, key.as_ref())?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(DataKey::from_slice(key.as_ref())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_master(path)?.ok_or_else(|| StoreError::Corrupt { path: path.to_owned(), reason: "vanished".into() })
        }
        Err(e) => Err(io("create", path)(e)),
    }
}

/// Writes `bytes` to a new file readable by its owner only, and syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    f.write_all(bytes).map_err(io("write", path))?;
    f.sync_all().map_err(io("sync", path))
}

fn read_master(path: &Path) -> Result<Option<DataKey>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            if bytes.len() != 32 {
                return Err(StoreError::Corrupt {
                    path: path.to_owned(),
                    reason: format!("master key is {} bytes, not 32", bytes.len()),
                });
            }
            Ok(Some(DataKey::from_slice(&bytes)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}
