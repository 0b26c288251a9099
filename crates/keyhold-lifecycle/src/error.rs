//! What the lifecycle layer answers when it refuses or fails: one variant per outcome a
//! caller acts on differently. The HTTP edge picks its status from the variant alone.

use keyhold_core::{KeyRef, TenantId};
use keyhold_provider::ProviderError;
use keyhold_registry::RegistryError;
use keyhold_service::ServiceError;

/// Why a lifecycle call was refused or failed. Messages say what to fix and never hold
/// key material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The request is malformed; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// The ciphertext is not a message keyhold can read.
    #[error("{0}")]
    MalformedCiphertext(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such tenant.
    #[error("tenant {0} does not exist")]
    TenantNotFound(TenantId),
    /// A tenant with this id exists already.
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),
    /// The tenant was deleted; nothing is served for it any more.
    #[error("tenant {0} was deleted")]
    TenantDeleted(TenantId),
    /// The tenant has not got a validated key for every region of its realm yet.
    #[error("tenant {0} is pending: attach and validate a key for every region of its realm")]
    TenantPending(TenantId),
    /// The tenant is suspended (its key refused, or validation failed).
    #[error("tenant {tenant} is suspended: {reason}")]
    TenantSuspended {
        /// The tenant.
        tenant: TenantId,
        /// Why, in words.
        reason: String,
    },
    /// The message belongs to another tenant (or none); nothing was decrypted.
    #[error("the ciphertext does not belong to tenant {0}; nothing was decrypted")]
    TenantMismatch(TenantId),
    /// None of the keys the message names is in the tenant's key history; no key was
    /// asked and nothing changed.
    #[error(
        "the ciphertext names no key of tenant {0}'s key history; no key was asked (a forged or \
         corrupted message, or one encrypted for another tenant)"
    )]
    KeyNotInTenant(TenantId),
    /// The key is already attached to another tenant or region.
    #[error("key {0} is already attached to another tenant or region; a key protects one tenant's data")]
    KeyInUse(String),
    /// The key was retired from the tenant's history.
    #[error("key {0} was retired and cannot be attached again")]
    KeyRetired(String),
    /// The message's data key is wrapped only by keys retired from the tenant's history:
    /// keyhold no longer uses them, even if the key service would.
    #[error(
        "the ciphertext's keys ({keys}) were retired from tenant {tenant}'s key history; keyhold does not use retired \
         keys (decrypt it with the stock AWS Encryption SDK and the key, if the key still exists)"
    )]
    MessageKeyRetired {
        /// The tenant.
        tenant: TenantId,
        /// The retired keys the message names.
        keys: String,
    },
    /// The tenant's realm and mode are fixed: it is no longer pending, or has a key.
    #[error("tenant {0}'s realm and mode are fixed: they can change only while it is pending and has no key attached")]
    SetupFixed(TenantId),
    /// The tenant is not in `byok` mode, so it has no role.
    #[error("tenant {0} is in {1} mode; only a byok tenant has a role")]
    NotByok(TenantId, String),
    /// The key is its region's active key and cannot be retired.
    #[error("key {0} is its region's active key; attach a new key for the region first, then retire this one")]
    KeyActive(String),
    /// The key is not in the tenant's history for that region.
    #[error("key {0} is not in the tenant's key history for that region")]
    KeyNotFound(String),
    /// Retiring the key was refused: the ledger shows messages under it that were not
    /// re-encrypted, or cannot vouch for its counts.
    #[error(
        "key {key} still protects {remaining} message(s) that were not re-encrypted (ledger: {messages} written, \
         {reencrypted} re-encrypted){}; re-encrypt them first (POST /v1/reencrypt/batch), or retire with \
         force=true: messages wrapped by no other key of the tenant then no longer decrypt",
        unsettled_note(*unsettled)
    )]
    KeyProtectsData {
        /// The key.
        key: String,
        /// Messages not re-encrypted.
        remaining: u64,
        /// Messages written under it.
        messages: u64,
        /// Messages re-encrypted away from it.
        reencrypted: u64,
        /// Data keys under it whose counts may be incomplete.
        unsettled: u64,
    },
    /// A limit of this instance refused the call (the tenant's or the service's request
    /// rate, or the tenant's budget of key-service calls); nothing was done.
    #[error("the {limit} limit is reached; retry after {retry_after_s} s")]
    RateLimited {
        /// Which limit.
        limit: &'static str,
        /// Seconds until it admits another call.
        retry_after_s: u32,
    },
    /// The tenant changed while this call was deciding (another instance or request acted
    /// first); nothing was changed. Retry.
    #[error("tenant {0} changed while this call was in progress; nothing was changed, retry")]
    Conflict(TenantId),
    /// keyhold lacks configuration this call needs.
    #[error("{0}")]
    NotConfigured(String),
    /// The audit trail cannot be written, so the request is refused (keyhold fails
    /// closed); no plaintext or ciphertext is returned. Retry.
    #[error("the audit trail cannot be written; the request was refused and returned nothing, retry")]
    AuditUnavailable,
    /// The tenant's key refused or failed.
    #[error("key {key}: {source}")]
    Provider {
        /// The key.
        key: KeyRef,
        /// What the provider said.
        #[source]
        source: ProviderError,
    },
    /// No configured provider serves the tenant's key.
    #[error("no key provider serves key {0}; configure AWS access or attach a local key")]
    NoProviderFor(KeyRef),
    /// The registry failed or is unreachable; retry.
    #[error("the registry failed; retry")]
    Registry(#[source] RegistryError),
    /// The tenant was deleted, but some of its local keys could not be scheduled for
    /// deletion: the operator must schedule them by hand.
    #[error(
        "tenant {tenant} was deleted but local keys {} could not be scheduled for deletion; run `keyhold \
         local-kms schedule-key-deletion` for each",
        keys.join(", ")
    )]
    ShredIncomplete {
        /// The tenant.
        tenant: TenantId,
        /// The keys left.
        keys: Vec<String>,
    },
    /// keyhold itself failed (a bug, or the system's random source).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RegistryError> for LifecycleError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::TenantExists(t) => Self::TenantExists(t),
            RegistryError::TenantNotFound(t) => Self::TenantNotFound(t),
            RegistryError::TenantDeleted(t) => Self::TenantDeleted(t),
            RegistryError::Conflict { tenant, .. } => Self::Conflict(tenant),
            RegistryError::KeyInUse { key } => Self::KeyInUse(key),
            RegistryError::KeyRetired { key } => Self::KeyRetired(key),
            RegistryError::KeyActive { key } => Self::KeyActive(key),
            RegistryError::KeyNotFound { key } => Self::KeyNotFound(key),
            other => Self::Registry(other),
        }
    }
}

impl LifecycleError {
    /// The service core's error for a request of `tenant`.
    pub(crate) fn from_service(tenant: &TenantId, e: ServiceError) -> Self {
        match e {
            ServiceError::TenantMismatch { expected, .. } => Self::TenantMismatch(expected),
            ServiceError::KeyNotInTenant => Self::KeyNotInTenant(tenant.clone()),
            ServiceError::Provider { source: ProviderError::AuditUnavailable, .. } => Self::AuditUnavailable,
            ServiceError::Provider { source: ProviderError::BudgetExceeded { retry_after_s }, .. } => {
                Self::RateLimited { limit: "tenant key-service budget", retry_after_s }
            }
            ServiceError::Provider { key, source } => Self::Provider { key, source },
            ServiceError::Decrypt(err) => {
                Self::MalformedCiphertext(format!("the ciphertext is not a valid message: {err}"))
            }
            ServiceError::NoProviderFor(key) => Self::NoProviderFor(key),
            ServiceError::NoUsableEncryptedDataKey => Self::MalformedCiphertext(
                "the ciphertext carries no data key that any of the tenant's keys can unwrap".into(),
            ),
            ServiceError::Randomness => Self::Internal("the system random generator failed; retry".into()),
            ServiceError::NoKeys => Self::TenantPending(tenant.clone()),
            ServiceError::Ledger(reason) => Self::Registry(RegistryError::Unavailable(reason)),
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// What the retirement refusal says of data keys whose counts may be incomplete.
fn unsettled_note(unsettled: u64) -> String {
    if unsettled == 0 {
        String::new()
    } else {
        format!(
            ", and the counts of {unsettled} data key(s) under it may be incomplete (still in use by an instance, or \
             its instance stopped without writing its last counts: retry in a few seconds, or, after re-encrypting \
             every message you store under it, retire with force=true)"
        )
    }
}
