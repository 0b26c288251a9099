//! Provider errors. The variant says what happened; [`ProviderError::class`] says what the
//! caller should do about it (suspend the tenant, report a misconfiguration, retry).

use keyhold_core::KeyRef;

/// What a caller should do about a provider error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The key owner has withdrawn access (disabled, scheduled for deletion, deleted, or
    /// access denied): stop using the key until a probe succeeds again.
    Revoked,
    /// The key exists but cannot serve this purpose (wrong spec or usage): the key owner
    /// must fix the configuration.
    Misconfigured,
    /// A transient failure (throttling, outage, timeout): retry with backoff.
    Retryable,
    /// The request itself is wrong (an encrypted data key that does not unwrap under the
    /// given context, a malformed key reference): retrying will not help.
    Invalid,
}

/// Why a provider call failed. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The key is disabled (AWS: `DisabledException`).
    #[error("key {key} is disabled")]
    KeyDisabled {
        /// The key.
        key: KeyRef,
    },
    /// The key is scheduled for deletion (AWS: `KMSInvalidStateException`).
    #[error("key {key} is pending deletion")]
    KeyPendingDeletion {
        /// The key.
        key: KeyRef,
    },
    /// The key is in a state that refuses cryptographic operations other than disabled or
    /// pending deletion (AWS: `KMSInvalidStateException` for `PendingImport`,
    /// `Unavailable`, ...).
    #[error("key {key} is not in a usable state: {message}")]
    KeyUnusable {
        /// The key.
        key: KeyRef,
        /// The provider's explanation.
        message: String,
    },
    /// The key does not exist, or no longer exists (AWS: `NotFoundException`).
    #[error("key {key} does not exist")]
    KeyNotFound {
        /// The key.
        key: KeyRef,
    },
    /// The caller is not allowed to use the key (AWS: `AccessDeniedException`).
    #[error("access to key {key} is denied: {message}")]
    AccessDenied {
        /// The key.
        key: KeyRef,
        /// The provider's explanation.
        message: String,
    },
    /// The key cannot be used this way (wrong key spec or usage, or a different key than
    /// the ciphertext names).
    #[error("key {key} is misconfigured ({code}): {message}")]
    Misconfigured {
        /// The key.
        key: KeyRef,
        /// The provider's error code.
        code: String,
        /// What is wrong.
        message: String,
    },
    /// The encrypted data key does not unwrap: tampered, or bound to another context.
    #[error("encrypted data key does not unwrap under key {key}: {reason}")]
    InvalidCiphertext {
        /// The key that was tried.
        key: KeyRef,
        /// Why, without secrets.
        reason: String,
    },
    /// A malformed argument (for example a key reference this provider cannot parse).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The call was made but its audit record could not be written, so its result is
    /// withheld (keyhold fails closed: no key use is answered unrecorded); retry.
    #[error("the audit trail could not record this key use; nothing is returned, retry")]
    AuditUnavailable,
    /// The tenant's budget of key-service calls is spent for now (keyhold's own limit,
    /// no call was made); retry after `retry_after_s`.
    #[error("the tenant's budget of key-service calls is spent; retry after {retry_after_s} s")]
    BudgetExceeded {
        /// Seconds until the budget allows another call.
        retry_after_s: u32,
    },
    /// A transient failure; retry.
    #[error("provider unavailable ({code}): {message}")]
    Unavailable {
        /// The provider's error code (`ThrottlingException`, `InternalError`, `Timeout`, ...).
        code: String,
        /// What happened.
        message: String,
    },
}

impl ProviderError {
    /// What the caller should do.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProviderError::KeyDisabled { .. }
            | ProviderError::KeyPendingDeletion { .. }
            | ProviderError::KeyUnusable { .. }
            | ProviderError::KeyNotFound { .. }
            | ProviderError::AccessDenied { .. } => ErrorClass::Revoked,
            ProviderError::Misconfigured { .. } => ErrorClass::Misconfigured,
            ProviderError::Unavailable { .. }
            | ProviderError::AuditUnavailable
            | ProviderError::BudgetExceeded { .. } => ErrorClass::Retryable,
            ProviderError::InvalidCiphertext { .. } | ProviderError::InvalidRequest(_) => ErrorClass::Invalid,
        }
    }

    /// A stable code for the error, in AWS KMS terms where one exists.
    pub fn code(&self) -> &str {
        match self {
            ProviderError::KeyDisabled { .. } => "DisabledException",
            ProviderError::KeyPendingDeletion { .. } | ProviderError::KeyUnusable { .. } => "KMSInvalidStateException",
            ProviderError::KeyNotFound { .. } => "NotFoundException",
            ProviderError::AccessDenied { .. } => "AccessDeniedException",
            ProviderError::Misconfigured { code, .. } | ProviderError::Unavailable { code, .. } => code,
            ProviderError::InvalidCiphertext { .. } => "InvalidCiphertextException",
            ProviderError::InvalidRequest(_) => "ValidationException",
            ProviderError::AuditUnavailable => "AuditUnavailable",
            ProviderError::BudgetExceeded { .. } => "TenantKmsBudgetExceeded",
        }
    }
}
