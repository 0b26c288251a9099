//! Algorithm suites of the AWS Encryption SDK message format that keyhold reads and writes.
//!
//! keyhold writes only the committing suites ([`AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY`],
//! the default, and [`AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384`]).
//! It reads every AES-GCM suite the stock SDKs have ever emitted, including the
//! non-committing v1 suites (the default of the 1.x SDKs is `0x0378`), unless the
//! [`DecryptConfig`](crate::DecryptConfig) asks for committing suites only.

use aws_lc_rs::{aead, digest, hkdf, signature};

/// How the data key becomes the content key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kdf {
    /// The data key is the content key.
    Identity,
    /// HKDF with a zero salt and `suite id || message id` as info (message format v1).
    Hkdf(hkdf::Algorithm),
    /// HKDF-SHA512 salted with the message id, plus a commitment key (message format v2).
    HkdfCommitting,
}

/// The signature a suite appends in the message footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signing {
    /// ECDSA P-256 with SHA-256.
    P256,
    /// ECDSA P-384 with SHA-384.
    P384,
}

impl Signing {
    pub(crate) fn digest(self) -> &'static digest::Algorithm {
        match self {
            Signing::P256 => &digest::SHA256,
            Signing::P384 => &digest::SHA384,
        }
    }

    pub(crate) fn verification(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Signing::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Signing::P384 => &signature::ECDSA_P384_SHA384_ASN1,
        }
    }

    pub(crate) fn signing(self) -> &'static signature::EcdsaSigningAlgorithm {
        match self {
            Signing::P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            Signing::P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }
}

/// An algorithm suite, identified on the wire by two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlgorithmSuite {
    id: u16,
}

impl AlgorithmSuite {
    /// `0x0478`: AES-256-GCM, HKDF-SHA512, key commitment, no signature. keyhold's default.
    pub const AES_256_GCM_HKDF_SHA512_COMMIT_KEY: Self = Self { id: 0x0478 };
    /// `0x0578`: as `0x0478` plus an ECDSA P-384 signature. The stock SDKs' default.
    pub const AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384: Self = Self { id: 0x0578 };
    /// `0x0378`: AES-256-GCM, HKDF-SHA384, ECDSA P-384 (v1; the 1.x SDKs' default).
    pub const AES_256_GCM_HKDF_SHA384_ECDSA_P384: Self = Self { id: 0x0378 };
    /// `0x0346`: AES-192-GCM, HKDF-SHA384, ECDSA P-384 (v1).
    pub const AES_192_GCM_HKDF_SHA384_ECDSA_P384: Self = Self { id: 0x0346 };
    /// `0x0214`: AES-128-GCM, HKDF-SHA256, ECDSA P-256 (v1).
    pub const AES_128_GCM_HKDF_SHA256_ECDSA_P256: Self = Self { id: 0x0214 };
    /// `0x0178`: AES-256-GCM, HKDF-SHA256 (v1).
    pub const AES_256_GCM_HKDF_SHA256: Self = Self { id: 0x0178 };
    /// `0x0146`: AES-192-GCM, HKDF-SHA256 (v1).
    pub const AES_192_GCM_HKDF_SHA256: Self = Self { id: 0x0146 };
    /// `0x0114`: AES-128-GCM, HKDF-SHA256 (v1).
    pub const AES_128_GCM_HKDF_SHA256: Self = Self { id: 0x0114 };
    /// `0x0078`: AES-256-GCM, no key derivation (v1).
    pub const AES_256_GCM_NO_KDF: Self = Self { id: 0x0078 };
    /// `0x0046`: AES-192-GCM, no key derivation (v1).
    pub const AES_192_GCM_NO_KDF: Self = Self { id: 0x0046 };
    /// `0x0014`: AES-128-GCM, no key derivation (v1).
    pub const AES_128_GCM_NO_KDF: Self = Self { id: 0x0014 };

    /// Every suite keyhold can decrypt.
    pub const ALL: [Self; 11] = [
        Self::AES_256_GCM_HKDF_SHA512_COMMIT_KEY,
        Self::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
        Self::AES_256_GCM_HKDF_SHA384_ECDSA_P384,
        Self::AES_192_GCM_HKDF_SHA384_ECDSA_P384,
        Self::AES_128_GCM_HKDF_SHA256_ECDSA_P256,
        Self::AES_256_GCM_HKDF_SHA256,
        Self::AES_192_GCM_HKDF_SHA256,
        Self::AES_128_GCM_HKDF_SHA256,
        Self::AES_256_GCM_NO_KDF,
        Self::AES_192_GCM_NO_KDF,
        Self::AES_128_GCM_NO_KDF,
    ];

    /// The suite with this wire id, if keyhold knows it.
    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.id == id)
    }

    /// The two-byte wire id.
    pub fn id(self) -> u16 {
        self.id
    }

    /// The message format version this suite is written in (1 or 2).
    pub fn message_version(self) -> u8 {
        if self.is_committing() { 2 } else { 1 }
    }

    /// Whether the suite commits to its data key.
    pub fn is_committing(self) -> bool {
        self.id == 0x0478 || self.id == 0x0578
    }

    /// Whether the suite signs messages.
    pub fn is_signing(self) -> bool {
        self.signing().is_some()
    }

    /// Data key length in bytes.
    pub fn data_key_len(self) -> usize {
        self.aead().key_len()
    }

    pub(crate) fn aead(self) -> &'static aead::Algorithm {
        match self.id & 0x00ff {
            0x14 => &aead::AES_128_GCM,
            0x46 => &aead::AES_192_GCM,
            _ => &aead::AES_256_GCM,
        }
    }

    pub(crate) fn kdf(self) -> Kdf {
        match self.id {
            0x0478 | 0x0578 => Kdf::HkdfCommitting,
            0x0378 | 0x0346 => Kdf::Hkdf(hkdf::HKDF_SHA384),
            0x0214 | 0x0178 | 0x0146 | 0x0114 => Kdf::Hkdf(hkdf::HKDF_SHA256),
            _ => Kdf::Identity,
        }
    }

    pub(crate) fn signing(self) -> Option<Signing> {
        match self.id {
            0x0578 | 0x0378 | 0x0346 => Some(Signing::P384),
            0x0214 => Some(Signing::P256),
            _ => None,
        }
    }
}

impl Default for AlgorithmSuite {
    fn default() -> Self {
        Self::AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    }
}

impl std::fmt::Display for AlgorithmSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:04x}", self.id)
    }
}

impl std::str::FromStr for AlgorithmSuite {
    type Err = String;

    /// Parses `0x0478`, `0478` or `1144`-style decimal is not accepted: ids are hex.
    fn from_str(s: &str) -> Result<Self, String> {
        let hex = s.strip_prefix("0x").unwrap_or(s);
        u16::from_str_radix(hex, 16)
            .ok()
            .and_then(Self::from_id)
            .ok_or_else(|| format!("unknown algorithm suite {s:?}; use 0x0478 or 0x0578"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties() {
        let d = AlgorithmSuite::default();
        assert_eq!(d.id(), 0x0478);
        assert_eq!(d.message_version(), 2);
        assert!(!d.is_signing());
        assert!(AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384.is_signing());
        assert_eq!(AlgorithmSuite::AES_128_GCM_NO_KDF.data_key_len(), 16);
        assert_eq!(AlgorithmSuite::AES_192_GCM_HKDF_SHA384_ECDSA_P384.data_key_len(), 24);
        assert_eq!(AlgorithmSuite::AES_256_GCM_HKDF_SHA384_ECDSA_P384.message_version(), 1);
        assert_eq!("0x0578".parse::<AlgorithmSuite>().unwrap().id(), 0x0578);
        assert!("0x9999".parse::<AlgorithmSuite>().is_err());
        assert!(AlgorithmSuite::from_id(0x0070).is_none());
    }
}
