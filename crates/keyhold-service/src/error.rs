//! Errors of the service core, one variant per outcome a caller acts on differently.

use keyhold_core::{KeyRef, TenantId};
use keyhold_envelope::{AlgorithmSuite, DecryptError, EncryptError};
use keyhold_provider::ProviderError;

/// Why an encrypt or decrypt request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// No root key was given.
    #[error("at least one key is required")]
    NoKeys,
    /// The suite cannot be used to encrypt.
    #[error("algorithm suite {0} cannot be used to encrypt; use 0x0478 or 0x0578")]
    UnsupportedSuite(AlgorithmSuite),
    /// The caller used a reserved context key.
    #[error("encryption context key {0:?} is reserved")]
    ReservedContextKey(String),
    /// The encryption context, with the reserved pairs, is larger than a key service
    /// accepts; nothing was sent to one.
    #[error(
        "the encryption context is {size} bytes serialized; the limit is {} (AWS KMS's): keep context to a few \
         low-cardinality pairs and put the rest in the plaintext",
        keyhold_core::MAX_CONTEXT_BYTES
    )]
    ContextTooLarge {
        /// Its serialized size.
        size: usize,
    },
    /// No provider serves this key reference.
    #[error("no key provider serves key {0}")]
    NoProviderFor(KeyRef),
    /// The message belongs to another tenant (or to none); nothing was decrypted.
    #[error("the message belongs to tenant {}, not {expected}", found.as_deref().unwrap_or("(none)"))]
    TenantMismatch {
        /// The caller's tenant.
        expected: TenantId,
        /// The tenant in the message, if any.
        found: Option<String>,
    },
    /// Every key the message names is outside the tenant's key history; none was asked.
    #[error("none of the keys this message names is one of the tenant's keys; no key was asked")]
    KeyNotInTenant,
    /// No encrypted data key in the message belongs to a configured provider.
    #[error("no encrypted data key in the message can be unwrapped by a configured key provider")]
    NoUsableEncryptedDataKey,
    /// A provider call failed.
    #[error("the key provider refused or failed")]
    Provider {
        /// The key used.
        key: KeyRef,
        /// The provider's error.
        #[source]
        source: ProviderError,
    },
    /// The data-key ledger could not record a new data key; it was not used.
    #[error("the data-key ledger could not record a new data key: {0}")]
    Ledger(String),
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Randomness,
    /// The message could not be written.
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
    /// The message is malformed, tampered, or does not match its key.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
}
