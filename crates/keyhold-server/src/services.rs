//! Service identities and their lifecycle, shared by the admin API (`/v1/services`) and
//! the CLI (`keyhold service`): register, list, narrow, rotate a key with an overlap,
//! remove. Each service authenticates with Ed25519 tokens; keyhold stores only public
//! keys. When keyhold generates a key pair for the caller, the private half is returned
//! once and never stored by keyhold.
//!
//! A change takes effect on the instance that made it at once and on every other instance
//! sharing the registry within [`keyhold_lifecycle::TENANT_VIEW_TTL_MS`] (their service
//! directories expire; see [`crate::state`]).

use keyhold_core::Purpose;
use keyhold_registry::{Purposes, Registry, RegistryError, ServiceIdentity};

use crate::auth::{ADMIN_ISSUER, SigningKey};

/// The default overlap of a rotation: how long the previous key is still accepted.
pub const DEFAULT_OVERLAP_S: u64 = 24 * 3600;

/// The longest overlap a rotation may give the previous key (30 days).
pub const MAX_OVERLAP_S: u64 = 30 * 24 * 3600;

/// The longest service name.
pub const MAX_NAME_LEN: usize = 64;

/// Why a service operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The name is not a valid service name.
    #[error("invalid service name {0:?}: 1 to 64 ASCII letters, digits, - and _ (and not keyhold-admin)")]
    InvalidName(String),
    /// A purpose does not parse.
    #[error("invalid purpose {0:?}: {1}")]
    InvalidPurpose(String, String),
    /// Neither purposes nor every purpose were given, or both.
    #[error(
        "give the purposes the service may use (or [\"*\"], --all-purposes, for every purpose), not both or neither"
    )]
    PurposesRequired,
    /// Too many purposes.
    #[error("{0} purposes listed; a service may list at most 100 (or every purpose)")]
    TooManyPurposes(usize),
    /// The public key is not 32 bytes of Ed25519.
    #[error("the public key must be 32 bytes (Ed25519), base64")]
    InvalidPublicKey,
    /// The overlap is too long.
    #[error("overlap of {0} s is over the limit of {MAX_OVERLAP_S} s (30 days)")]
    OverlapTooLong(u64),
    /// A key pair could not be generated.
    #[error("a key pair could not be generated")]
    KeyGeneration,
    /// Registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// Checks a service name.
pub fn check_name(name: &str) -> Result<(), ServiceError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != ADMIN_ISSUER
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid { Ok(()) } else { Err(ServiceError::InvalidName(name.to_owned())) }
}

/// Purposes from a list: `["*"]` is every purpose.
pub fn purposes_from(list: &[String]) -> Result<Purposes, ServiceError> {
    match list {
        [] => Err(ServiceError::PurposesRequired),
        [all] if all == "*" => Ok(Purposes::All),
        _ if list.len() > crate::api::schema::MAX_PURPOSES => Err(ServiceError::TooManyPurposes(list.len())),
        _ => {
            let mut out: Vec<Purpose> = Vec::with_capacity(list.len());
            for p in list {
                let purpose = Purpose::parse(p).map_err(|e| ServiceError::InvalidPurpose(p.clone(), e.to_string()))?;
                if !out.contains(&purpose) {
                    out.push(purpose);
                }
            }
            Ok(Purposes::Only(out))
        }
    }
}

/// Purposes from a list, or every purpose (the CLI's `--purpose`... / `--all-purposes`).
pub fn purposes(list: &[String], all: bool) -> Result<Purposes, ServiceError> {
    match (list.is_empty(), all) {
        (true, true) => Ok(Purposes::All),
        (false, false) => purposes_from(list),
        _ => Err(ServiceError::PurposesRequired),
    }
}

/// A key for a new service or a rotation: the caller's public key, or a new pair whose
/// private half (PKCS#8) is returned to hand over once.
pub fn key_for(public_key: Option<&[u8]>) -> Result<(Vec<u8>, Option<Vec<u8>>), ServiceError> {
    match public_key {
        Some(pk) if pk.len() == 32 => Ok((pk.to_vec(), None)),
        Some(_) => Err(ServiceError::InvalidPublicKey),
        None => {
            let (key, pkcs8) = SigningKey::generate().map_err(|_| ServiceError::KeyGeneration)?;
            Ok((key.public_key(), Some(pkcs8)))
        }
    }
}

/// Registers `name` with `purposes` and `public_key`.
pub async fn register(
    registry: &Registry,
    name: &str,
    purposes: &Purposes,
    public_key: &[u8],
    now_ms: u64,
) -> Result<ServiceIdentity, ServiceError> {
    check_name(name)?;
    let s = registry.add_service(name, purposes, public_key, now_ms).await?;
    tracing::info!(service = name, purposes = %purposes, "service registered");
    Ok(s)
}

/// Rotates `name`'s key to `public_key`; older keys stay accepted for `overlap_s`.
pub async fn rotate(
    registry: &Registry,
    name: &str,
    public_key: &[u8],
    overlap_s: u64,
    now_ms: u64,
) -> Result<ServiceIdentity, ServiceError> {
    check_name(name)?;
    if overlap_s > MAX_OVERLAP_S {
        return Err(ServiceError::OverlapTooLong(overlap_s));
    }
    let s = registry.rotate_service_key(name, public_key, overlap_s.saturating_mul(1000), now_ms).await?;
    tracing::info!(service = name, overlap_s, key = %keyhold_registry::service_key_id(public_key), "service key rotated");
    Ok(s)
}

/// Replaces what `name` may use.
pub async fn set_purposes(
    registry: &Registry,
    name: &str,
    purposes: &Purposes,
) -> Result<ServiceIdentity, ServiceError> {
    check_name(name)?;
    let s = registry.set_service_purposes(name, purposes).await?;
    tracing::info!(service = name, purposes = %purposes, "service purposes changed");
    Ok(s)
}

/// Removes `name` and its keys.
pub async fn remove(registry: &Registry, name: &str) -> Result<(), ServiceError> {
    check_name(name)?;
    if !registry.remove_service(name).await? {
        return Err(RegistryError::ServiceNotFound(name.to_owned()).into());
    }
    tracing::info!(service = name, "service removed");
    Ok(())
}
