//! Errors of the message format: one enum for encryption, one for decryption.
//!
//! Every malformed input maps to a distinct [`DecryptError`] variant so that callers (and
//! the table-driven tests) can tell a truncated message from a tampered one.

/// Why a message could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptError {
    /// keyhold writes only committing suites.
    #[error("algorithm suite {0:#06x} cannot be used to encrypt; use 0x0478 or 0x0578")]
    SuiteNotForEncryption(u16),
    /// The frame length must be between 1 and 2^32 - 1 bytes.
    #[error("frame length must be at least 1 byte")]
    InvalidFrameLength,
    /// The serialized encryption context exceeds 65,535 bytes.
    #[error("the serialized encryption context is {0} bytes; at most 65535 are allowed")]
    ContextTooLarge(usize),
    /// A caller-visible field does not fit its two-byte length prefix.
    #[error("{field} is {len} bytes; at most 65535 are allowed")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// At least one encrypted data key is required.
    #[error("a message needs at least one encrypted data key")]
    NoEncryptedDataKeys,
    /// More than 65,535 encrypted data keys.
    #[error("{0} encrypted data keys; at most 65535 are allowed")]
    TooManyEncryptedDataKeys(usize),
    /// The data key does not have the suite's key length.
    #[error("data key is {found} bytes; the algorithm suite needs {expected}")]
    DataKeyLength {
        /// Length the suite needs.
        expected: usize,
        /// Length given.
        found: usize,
    },
    /// The suite signs but no signing key was given, or the reverse, or the context's
    /// public key does not belong to the signing key.
    #[error("signing key does not match the algorithm suite or the encryption context's public key")]
    SigningKeyMismatch,
    /// The message would need more than 2^32 - 1 frames.
    #[error("the plaintext needs more than 4294967295 frames; use a larger frame length")]
    TooManyFrames,
    /// `update` or `finish` was called after `finish`.
    #[error("the message has already been finished")]
    Finished,
    /// The cryptographic library reported a failure (it should not on valid inputs).
    #[error("cryptographic operation failed: {0}")]
    Crypto(&'static str),
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// The input ended inside the named field.
    #[error("message is truncated: it ends inside the {0}")]
    Truncated(&'static str),
    /// Unknown message format version.
    #[error("unsupported message format version {0:#04x}; expected 0x01 or 0x02")]
    UnsupportedVersion(u8),
    /// Unknown message type (v1 only).
    #[error("unsupported message type {0:#04x}; expected 0x80")]
    UnsupportedType(u8),
    /// Unknown algorithm suite.
    #[error("unknown algorithm suite {0:#06x}")]
    UnknownSuite(u16),
    /// The suite belongs to the other message format version.
    #[error("algorithm suite {suite:#06x} is not valid in message format version {version}")]
    SuiteVersionMismatch {
        /// The header's version.
        version: u8,
        /// The header's suite.
        suite: u16,
    },
    /// A non-committing suite, refused because the configuration requires commitment.
    #[error("algorithm suite {0:#06x} does not commit to its data key and the configuration requires commitment")]
    CommitmentRequired(u16),
    /// The encryption context section is malformed.
    #[error("malformed encryption context: {0}")]
    MalformedContext(&'static str),
    /// The header declares no encrypted data keys.
    #[error("the header declares no encrypted data keys")]
    NoEncryptedDataKeys,
    /// More encrypted data keys than the configured maximum.
    #[error("the header declares {count} encrypted data keys; at most {max} are accepted")]
    TooManyEncryptedDataKeys {
        /// Declared count.
        count: u16,
        /// Configured maximum.
        max: u16,
    },
    /// A key provider id is not UTF-8.
    #[error("an encrypted data key's provider id is not UTF-8")]
    MalformedProviderId,
    /// Unknown content type.
    #[error("unsupported content type {0:#04x}; expected 0x01 (non-framed) or 0x02 (framed)")]
    UnsupportedContentType(u8),
    /// The v1 reserved field is not zero.
    #[error("the reserved header field is not zero")]
    NonZeroReserved,
    /// The v1 IV length does not match the suite.
    #[error("header IV length {0} does not match the algorithm suite's 12")]
    BadIvLength(u8),
    /// The frame length field contradicts the content type.
    #[error("frame length {0} is not valid for this content type")]
    BadFrameLength(u32),
    /// The frame length exceeds the configured maximum.
    #[error("frame length {found} exceeds the configured maximum of {max} bytes")]
    FrameTooLarge {
        /// Declared frame length.
        found: u32,
        /// Configured maximum.
        max: u32,
    },
    /// The data key has the wrong length for the suite.
    #[error("data key is {found} bytes; the algorithm suite needs {expected}")]
    DataKeyLength {
        /// Needed.
        expected: usize,
        /// Given.
        found: usize,
    },
    /// The commitment key in the header does not match the data key.
    #[error("key commitment does not match: the data key is not the one this message was written with")]
    CommitmentMismatch,
    /// The header authentication tag is wrong (header tampered or wrong key).
    #[error("header authentication failed")]
    HeaderAuthFailed,
    /// A frame arrived out of order.
    #[error("frame sequence number {found} where {expected} was expected")]
    BadSequenceNumber {
        /// Expected number.
        expected: u32,
        /// Number found.
        found: u32,
    },
    /// A frame's content or tag was tampered with.
    #[error("frame {0} failed authentication")]
    FrameAuthFailed(u32),
    /// The final frame is longer than the frame length.
    #[error("final frame content of {found} bytes exceeds the frame length {frame_length}")]
    FinalFrameTooLong {
        /// Declared content length.
        found: u32,
        /// Header frame length.
        frame_length: u32,
    },
    /// Non-framed content longer than the format or configuration allows.
    #[error("non-framed content of {found} bytes exceeds the limit of {max}")]
    ContentTooLong {
        /// Declared length.
        found: u64,
        /// Allowed maximum.
        max: u64,
    },
    /// Sequence numbers ran past 2^32 - 1.
    #[error("too many frames")]
    TooManyFrames,
    /// A signing suite whose context lacks `aws-crypto-public-key`.
    #[error("the algorithm suite signs but the encryption context has no aws-crypto-public-key")]
    MissingPublicKey,
    /// A non-signing suite whose context carries `aws-crypto-public-key`.
    #[error("the encryption context carries aws-crypto-public-key but the algorithm suite does not sign")]
    UnexpectedPublicKey,
    /// The public key in the context cannot be decoded.
    #[error("the aws-crypto-public-key in the encryption context is not a valid public key")]
    MalformedPublicKey,
    /// The footer signature does not verify.
    #[error("message signature is invalid")]
    SignatureInvalid,
    /// Bytes follow the end of the message.
    #[error("{0} unexpected bytes after the end of the message")]
    TrailingBytes(usize),
    /// The caller's key lookup failed; the message is fine as far as the format goes.
    #[error("the header is incomplete or the decryptor is in the wrong state for this call")]
    InvalidState,
}
