//! Development credentials for a fresh data dir: an admin key (`admin.key`) and a service
//! identity `dev` allowed every purpose (`service-keys/dev.key`, registered in the
//! registry). Keys are PKCS#8 Ed25519, base64, in files readable only by their owner
//! (0600, directory 0700). `keyhold token` signs fresh tokens with them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keyhold_registry::{Purposes, Registry};

use crate::auth::{SigningKey, TokenError};

/// The development service's name.
pub const DEV_SERVICE: &str = "dev";

/// The file that records that this data dir created the `dev` service once.
pub const DEV_MARKER: &str = "dev-service.provisioned";

/// Why credentials could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum CredError {
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A key file does not hold a key.
    #[error("{0} does not hold an Ed25519 key: {1}")]
    BadKey(PathBuf, TokenError),
    /// Registry.
    #[error(transparent)]
    Registry(#[from] keyhold_registry::RegistryError),
}

/// The admin key's file.
pub fn admin_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.key")
}

/// A service key's file.
pub fn service_key_path(data_dir: &Path, service: &str) -> PathBuf {
    data_dir.join("service-keys").join(format!("{service}.key"))
}

/// Reads a key file.
pub fn read_key(path: &Path) -> Result<SigningKey, CredError> {
    let text = fs::read_to_string(path).map_err(|source| CredError::Io { path: path.to_owned(), source })?;
    let der =
        B64.decode(text.trim()).map_err(|_| CredError::BadKey(path.to_owned(), TokenError::Malformed("base64")))?;
    SigningKey::from_pkcs8(&der).map_err(|e| CredError::BadKey(path.to_owned(), e))
}

/// Creates a new key at `path` (0600, directory 0700); refuses to overwrite one.
pub fn write_new_key(path: &Path) -> Result<SigningKey, CredError> {
    let io = |source| CredError::Io { path: path.to_owned(), source };
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
    }
    let (key, der) = SigningKey::generate().map_err(|e| CredError::BadKey(path.to_owned(), e))?;
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    f.write_all(B64.encode(der).as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(key)
}

/// What [`ensure`] did.
#[derive(Debug, Default)]
pub struct Created {
    /// The admin key was created at this path.
    pub admin: Option<PathBuf>,
    /// The `dev` service was created with its key at this path.
    pub dev_service: Option<PathBuf>,
}

/// The development credentials of `data_dir`: the admin key, created if missing, and
/// the `dev` service (every purpose) with its key, registered when the registry has no
/// service yet. Only for the embedded default or an explicit `--dev`. Returns the admin
/// key's public half and what was created.
pub async fn ensure(data_dir: &Path, registry: &Registry, now_ms: u64) -> Result<(Vec<u8>, Created), CredError> {
    let mut created = Created::default();
    let admin_path = admin_key_path(data_dir);
    let admin = if admin_path.exists() {
        read_key(&admin_path)?
    } else {
        let k = write_new_key(&admin_path)?;
        created.admin = Some(admin_path);
        k
    };
    // Once only: a `dev` service removed by an admin is never brought back (the marker
    // records that this data dir provisioned it).
    let marker = data_dir.join(DEV_MARKER);
    if !marker.exists() && registry.services().await?.is_empty() {
        let path = service_key_path(data_dir, DEV_SERVICE);
        let key = if path.exists() { read_key(&path)? } else { write_new_key(&path)? };
        match registry.add_service(DEV_SERVICE, &Purposes::All, &key.public_key(), now_ms).await {
            // Another instance sharing the registry registered it first.
            Ok(_) | Err(keyhold_registry::RegistryError::ServiceExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        fs::write(&marker, b"the development service dev was created from this data dir\n")
            .map_err(|source| CredError::Io { path: marker.clone(), source })?;
        created.dev_service = Some(path);
    }
    Ok((admin.public_key(), created))
}
