//! ECDSA signing keys for the signing suites, and verification of message footers.

use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyCompressedBin};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ParsedPublicKey, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{DecryptError, EncryptError};
use crate::suite::{AlgorithmSuite, Signing};

/// A message signing key. Generated per set of encryption materials and cached with them,
/// as the SDKs' caching materials manager does; its public half travels in the encryption
/// context under `aws-crypto-public-key`.
///
/// Implements neither `Debug` nor `Clone`; the private key is freed (and cleared by
/// AWS-LC) on drop.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    signing: Signing,
    public_key: String,
}

impl SigningKey {
    /// Generates a key for `suite`. Fails for suites that do not sign.
    pub fn generate(suite: AlgorithmSuite) -> Result<Self, EncryptError> {
        let signing = suite.signing().ok_or(EncryptError::SigningKeyMismatch)?;
        let pair =
            EcdsaKeyPair::generate(signing.signing()).map_err(|_| EncryptError::Crypto("ECDSA key generation"))?;
        let compressed: EcPublicKeyCompressedBin<'static> =
            pair.public_key().as_be_bytes().map_err(|_| EncryptError::Crypto("public key encoding"))?;
        let public_key = STANDARD.encode(compressed.as_ref());
        Ok(Self { pair, signing, public_key })
    }

    /// The base64 compressed public point, the value of `aws-crypto-public-key`.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    pub(crate) fn signing(&self) -> Signing {
        self.signing
    }

    pub(crate) fn sign(&self, digest: &digest::Digest) -> Result<Vec<u8>, EncryptError> {
        let sig = self.pair.sign_digest(digest).map_err(|_| EncryptError::Crypto("ECDSA signing"))?;
        Ok(sig.as_ref().to_vec())
    }
}

/// Parses the verification key a signing message carries.
pub(crate) fn verifier(signing: Signing, public_key_b64: &str) -> Result<ParsedPublicKey, DecryptError> {
    let bytes = STANDARD.decode(public_key_b64).map_err(|_| DecryptError::MalformedPublicKey)?;
    UnparsedPublicKey::new(signing.verification(), bytes).parse().map_err(|_| DecryptError::MalformedPublicKey)
}
