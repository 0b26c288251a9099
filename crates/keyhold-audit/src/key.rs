//! The audit signing key: an Ed25519 key that lives in a file beside keyhold, never in the
//! registry database, and signs the head of every tenant's trail.
//!
//! Someone who can write to the database can recompute the SHA-256 chain after deleting or
//! editing events, but cannot produce the head's signature without this key, so
//! [`crate::Auditor::verify`] and [`crate::verify_export`] notice the rewrite.
//!
//! The file holds the key as PKCS#8 (DER), mode 0600. [`AuditKey::load_or_create`] creates
//! it atomically when absent; a file that is present but unreadable, corrupt or readable by
//! other users is an error and is never replaced, since a new key could not vouch for the
//! trails the old one signed.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use keyhold_core::TenantId;
use zeroize::Zeroizing;

/// Domain separation for head signatures; bump on any change to the signed layout.
const HEAD_DOMAIN: &[u8] = b"keyhold-audit-head-v1";

/// The largest key file read: a PKCS#8 Ed25519 key is under 100 bytes.
const MAX_KEY_FILE: u64 = 4096;

/// The Ed25519 key that signs audit trail heads. It derives nothing: its `Debug` shows the
/// public key only.
pub struct AuditKey {
    pair: Ed25519KeyPair,
    public: [u8; 32],
}

/// Why the audit key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditKeyError {
    /// The key file exists but could not be read.
    #[error("cannot read the audit key file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file could not be created.
    #[error("cannot create the audit key file {path}")]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold an Ed25519 PKCS#8 key.
    #[error(
        "the audit key file {path} does not hold an Ed25519 PKCS#8 key; restore it from a backup (keyhold never \
         replaces it, since a new key could not vouch for the trails the old one signed)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
    /// The key file may be read by other users.
    #[error("the audit key file {path} may be read by other users (mode {mode:o}); make it mode 600")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// No key could be generated (the system's random source failed).
    #[error("cannot generate an Ed25519 audit key")]
    Generate,
}

impl AuditKey {
    /// Loads the key from `path`, or creates it there (mode 0600, atomically: a concurrent
    /// creator's key wins and is loaded) if no file exists.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditKeyError> {
        match fs::File::open(path) {
            Ok(file) => Self::load(path, file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(source) => Err(AuditKeyError::Read { path: path.to_owned(), source }),
        }
    }

    /// A new random key that is not stored anywhere (tests, and one-off tools).
    pub fn generate() -> Result<Self, AuditKeyError> {
        let pkcs8 = generate_pkcs8()?;
        Self::from_pkcs8(&pkcs8).ok_or(AuditKeyError::Generate)
    }

    /// The Ed25519 public key that verifies this key's signatures.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The signature over `tenant`'s trail head (`seq`, `hash`), or `None` if signing
    /// failed.
    pub fn sign_head(&self, tenant: &TenantId, seq: u64, hash: &[u8; 32]) -> Option<[u8; 64]> {
        let sig = self.pair.try_sign(&head_message(tenant, seq, hash)).ok()?;
        <[u8; 64]>::try_from(sig.as_ref()).ok()
    }

    fn from_pkcs8(pkcs8: &[u8]) -> Option<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).ok()?;
        let public = <[u8; 32]>::try_from(pair.public_key().as_ref()).ok()?;
        Some(Self { pair, public })
    }

    fn load(path: &Path, file: fs::File) -> Result<Self, AuditKeyError> {
        let read = |source| AuditKeyError::Read { path: path.to_owned(), source };
        let mode = file.metadata().map_err(read)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(AuditKeyError::Exposed { path: path.to_owned(), mode: mode & 0o7777 });
        }
        let mut pkcs8 = Zeroizing::new(Vec::new());
        file.take(MAX_KEY_FILE).read_to_end(&mut pkcs8).map_err(read)?;
        Self::from_pkcs8(&pkcs8).ok_or_else(|| AuditKeyError::Corrupt { path: path.to_owned() })
    }

    fn create(path: &Path) -> Result<Self, AuditKeyError> {
        let create = |source| AuditKeyError::Create { path: path.to_owned(), source };
        let pkcs8 = generate_pkcs8()?;
        let key = Self::from_pkcs8(&pkcs8).ok_or(AuditKeyError::Generate)?;
        // Written in full to a private temporary name first, then linked into place: the
        // link fails rather than replaces if another process created the key meanwhile,
        // and a crash never leaves a half-written key under the real name.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".audit-key.{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(&pkcs8)?;
            f.sync_all()?;
            fs::hard_link(&tmp, path)
        })();
        // The temporary name is removed whatever happened; a failure to remove it leaves
        // only an unused private file behind.
        let _ = fs::remove_file(&tmp);
        match written {
            Ok(()) => {
                fs::File::open(dir).and_then(|d| d.sync_all()).map_err(create)?;
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let file =
                    fs::File::open(path).map_err(|source| AuditKeyError::Read { path: path.to_owned(), source })?;
                Self::load(path, file)
            }
            Err(e) => Err(create(e)),
        }
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey").field("public_key", &crate::hex(&self.public)).finish_non_exhaustive()
    }
}

/// The bytes an audit head signature covers: a domain tag, the tenant id (length-prefixed,
/// so no two tenants' messages coincide), the head's sequence number and its chain hash.
pub fn head_message(tenant: &TenantId, seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let id = tenant.as_str().as_bytes();
    let mut m = Vec::with_capacity(HEAD_DOMAIN.len() + 8 + id.len() + 8 + 32);
    m.extend_from_slice(HEAD_DOMAIN);
    m.extend_from_slice(&(id.len() as u64).to_be_bytes());
    m.extend_from_slice(id);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// Whether `sig` is `public_key`'s signature over `tenant`'s head (`seq`, `hash`).
pub fn head_signature_valid(public_key: &[u8; 32], tenant: &TenantId, seq: u64, hash: &[u8; 32], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key).verify(&head_message(tenant, seq, hash), sig).is_ok()
}

fn generate_pkcs8() -> Result<Zeroizing<Vec<u8>>, AuditKeyError> {
    let doc =
        Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).map_err(|_| AuditKeyError::Generate)?;
    Ok(Zeroizing::new(doc.as_ref().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_private_and_loads_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let created = AuditKey::load_or_create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let loaded = AuditKey::load_or_create(&path).unwrap();
        assert_eq!(created.public_key(), loaded.public_key());
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let t = TenantId::parse("acme").unwrap();
        let sig = created.sign_head(&t, 3, &[7; 32]).unwrap();
        assert!(head_signature_valid(&loaded.public_key(), &t, 3, &[7; 32], &sig));
        assert!(!head_signature_valid(&loaded.public_key(), &t, 4, &[7; 32], &sig));
        assert!(!head_signature_valid(&loaded.public_key(), &TenantId::parse("acm").unwrap(), 3, &[7; 32], &sig));
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap()
            .write_all(b"junk")
            .unwrap();
        assert!(matches!(AuditKey::load_or_create(&path), Err(AuditKeyError::Corrupt { .. })));
        assert_eq!(fs::read(&path).unwrap(), b"junk");
    }

    #[test]
    fn an_exposed_or_unreadable_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        AuditKey::load_or_create(&path).unwrap();
        let before = fs::read(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(AuditKey::load_or_create(&path), Err(AuditKeyError::Exposed { mode: 0o644, .. })));
        // A directory where the file should be cannot be read as a key (and, unlike a
        // permission bit, this holds when the tests run as root).
        let not_a_file = dir.path().join("dir.key");
        fs::create_dir(&not_a_file).unwrap();
        fs::set_permissions(&not_a_file, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(AuditKey::load_or_create(&not_a_file), Err(AuditKeyError::Read { .. })));
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn debug_shows_only_the_public_key() {
        let key = AuditKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(&crate::hex(&key.public_key())), "{shown}");
        assert!(shown.len() < 120, "{shown}");
    }
}
