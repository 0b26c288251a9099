//! Encrypted data keys in the raw AES keyring's format, so that a message wrapped by the
//! local provider decrypts with a stock SDK given the same wrapping key.
//!
//! Provider id: the key namespace ([`NAMESPACE`]). Provider info: the key name (UTF-8),
//! the tag length in bits (u32, 128), the IV length in bytes (u32, 12), and the IV.
//! Ciphertext: AES-256-GCM of the data key under the wrapping key, with the serialized
//! encryption context as AAD, followed by the tag.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rand::SecureRandom;
use keyhold_core::{DataKey, EncryptedDataKey, EncryptionContext};

/// The key namespace (provider id) the local provider writes.
pub const NAMESPACE: &str = "keyhold-local";

const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a raw AES encrypted data key could not be produced or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RawAesError {
    /// The provider info is not `name || 128 || 12 || iv`.
    #[error("provider info is not in the raw AES keyring format")]
    MalformedProviderInfo,
    /// The encryption context is too large to serialize.
    #[error("encryption context too large")]
    ContextTooLarge,
    /// Authentication failed: wrong key, tampered ciphertext or another context.
    #[error("the encrypted data key does not authenticate under this key and context")]
    Unauthenticated,
    /// The wrapping key is not 32 bytes, or randomness failed.
    #[error("wrapping failed: {0}")]
    Crypto(&'static str),
}

/// Wraps `data_key` under `wrapping_key` (32 bytes) named `name`.
pub fn wrap(
    name: &str,
    wrapping_key: &DataKey,
    data_key: &DataKey,
    context: &EncryptionContext,
    rng: &dyn SecureRandom,
) -> Result<EncryptedDataKey, RawAesError> {
    let aad = context.to_bytes().map_err(|_| RawAesError::ContextTooLarge)?;
    let key = aes_key(wrapping_key)?;
    let mut iv = [0u8; IV_LEN];
    rng.fill(&mut iv).map_err(|_| RawAesError::Crypto("random IV"))?;
    let mut ciphertext = data_key.expose().to_vec();
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&aad), &mut ciphertext)
        .map_err(|_| RawAesError::Crypto("AES-GCM seal"))?;
    ciphertext.extend_from_slice(tag.as_ref());
    let mut provider_info = Vec::with_capacity(name.len() + 8 + IV_LEN);
    provider_info.extend_from_slice(name.as_bytes());
    provider_info.extend_from_slice(&(TAG_LEN as u32 * 8).to_be_bytes());
    provider_info.extend_from_slice(&(IV_LEN as u32).to_be_bytes());
    provider_info.extend_from_slice(&iv);
    Ok(EncryptedDataKey { provider_id: NAMESPACE.to_owned(), provider_info, ciphertext })
}

/// The key name in a raw AES provider info.
pub fn key_name(provider_info: &[u8]) -> Result<&str, RawAesError> {
    let (name, _) = split_info(provider_info)?;
    Ok(name)
}

/// Unwraps an encrypted data key written by [`wrap`].
pub fn unwrap(
    wrapping_key: &DataKey,
    edk: &EncryptedDataKey,
    context: &EncryptionContext,
) -> Result<DataKey, RawAesError> {
    let (_, iv) = split_info(&edk.provider_info)?;
    let aad = context.to_bytes().map_err(|_| RawAesError::ContextTooLarge)?;
    let key = aes_key(wrapping_key)?;
    let split = edk.ciphertext.len().checked_sub(TAG_LEN).ok_or(RawAesError::Unauthenticated)?;
    let (ct, tag) = edk.ciphertext.split_at(split);
    let mut out = zeroize::Zeroizing::new(vec![0u8; ct.len()]);
    key.open_separate_gather(Nonce::assume_unique_for_key(iv), Aad::from(&aad), ct, tag, &mut out)
        .map_err(|_| RawAesError::Unauthenticated)?;
    Ok(DataKey::from_slice(&out))
}

fn aes_key(wrapping_key: &DataKey) -> Result<LessSafeKey, RawAesError> {
    UnboundKey::new(&AES_256_GCM, wrapping_key.expose())
        .map(LessSafeKey::new)
        .map_err(|_| RawAesError::Crypto("wrapping key must be 32 bytes"))
}

fn split_info(info: &[u8]) -> Result<(&str, [u8; IV_LEN]), RawAesError> {
    let name_len = info.len().checked_sub(8 + IV_LEN).ok_or(RawAesError::MalformedProviderInfo)?;
    let (name, rest) = info.split_at(name_len);
    let (lens, iv) = rest.split_at(8);
    if lens != [0, 0, 0, 128, 0, 0, 0, 12] {
        return Err(RawAesError::MalformedProviderInfo);
    }
    let name = std::str::from_utf8(name).map_err(|_| RawAesError::MalformedProviderInfo)?;
    let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| RawAesError::MalformedProviderInfo)?;
    Ok((name, iv))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;

    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let wk = DataKey::from_slice(&[1; 32]);
        let dk = DataKey::from_slice(&[2; 32]);
        let mut ctx = EncryptionContext::new();
        ctx.insert("tenant", "a");
        let edk = wrap("lk-1:1", &wk, &dk, &ctx, &SystemRandom::new()).unwrap();
        assert_eq!(key_name(&edk.provider_info).unwrap(), "lk-1:1");
        assert_eq!(edk.provider_info.len(), 6 + 8 + 12);
        assert!(unwrap(&wk, &edk, &ctx).unwrap().ct_eq(&dk));
        ctx.insert("tenant", "b");
        assert!(matches!(unwrap(&wk, &edk, &ctx), Err(RawAesError::Unauthenticated)));
        assert_eq!(key_name(b"short").unwrap_err(), RawAesError::MalformedProviderInfo);
    }
}
