//! Encryption and decryption settings.

use crate::suite::AlgorithmSuite;

/// Settings for writing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptConfig {
    /// Plaintext bytes per frame. Default 4096, the stock SDKs' default.
    pub frame_length: u32,
}

impl Default for EncryptConfig {
    fn default() -> Self {
        Self { frame_length: 4096 }
    }
}

/// Settings for reading messages. The defaults accept every message the stock SDKs write
/// with their defaults, and bound what a hostile message can make keyhold allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptConfig {
    /// Most encrypted data keys a header may declare (default 16). A hostile message with
    /// thousands of them would otherwise turn one decrypt into thousands of KMS calls.
    pub max_encrypted_data_keys: u16,
    /// Refuse suites that do not commit to their data key (default false, so that data
    /// written by 1.x SDKs stays readable; keyhold itself only writes committing suites).
    pub require_commitment: bool,
    /// Largest frame length accepted (default 64 MiB): one frame is buffered whole.
    pub max_frame_length: u32,
    /// Largest non-framed body accepted (default 64 MiB): it is buffered whole, because
    /// its single tag covers all of it. The format's own limit is 2^36 - 32 bytes.
    pub max_non_framed_length: u64,
}

impl Default for DecryptConfig {
    fn default() -> Self {
        Self {
            max_encrypted_data_keys: 16,
            require_commitment: false,
            max_frame_length: 64 << 20,
            max_non_framed_length: 64 << 20,
        }
    }
}

impl DecryptConfig {
    /// Whether `suite` passes the commitment policy.
    pub fn allows(&self, suite: AlgorithmSuite) -> bool {
        suite.is_committing() || !self.require_commitment
    }
}
