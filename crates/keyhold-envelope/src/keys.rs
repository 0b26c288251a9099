//! Content-key derivation (identity, HKDF, committing HKDF), nonces and body AAD.

use aws_lc_rs::aead::{self, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use keyhold_core::DataKey;

use crate::header::IV_LEN;
use crate::suite::{AlgorithmSuite, Kdf};

/// The content key of one message, and the commitment value when the suite commits.
pub(crate) struct ContentKey {
    pub(crate) key: LessSafeKey,
    pub(crate) commitment: Option<[u8; 32]>,
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Derives the content key. The caller has checked the data key length.
pub(crate) fn derive(suite: AlgorithmSuite, data_key: &DataKey, message_id: &[u8]) -> Result<ContentKey, ()> {
    let aead_alg = suite.aead();
    let id = suite.id().to_be_bytes();
    let (unbound, commitment) = match suite.kdf() {
        Kdf::Identity => (UnboundKey::new(aead_alg, data_key.expose()).map_err(drop)?, None),
        Kdf::Hkdf(alg) => {
            // A zero salt as long as the hash output, which RFC 5869 treats as no salt.
            let zeros = [0u8; 64];
            let hash_len = alg.hmac_algorithm().digest_algorithm().output_len();
            let salt = hkdf::Salt::new(alg, zeros.get(..hash_len).ok_or(())?);
            let prk = salt.extract(data_key.expose());
            let info: [&[u8]; 2] = [&id, message_id];
            let okm = prk.expand(&info, aead_alg).map_err(drop)?;
            (UnboundKey::from(okm), None)
        }
        Kdf::HkdfCommitting => {
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA512, message_id).extract(data_key.expose());
            let info: [&[u8]; 2] = [&id, b"DERIVEKEY"];
            let okm = prk.expand(&info, aead_alg).map_err(drop)?;
            let mut commit = [0u8; 32];
            let commit_info: [&[u8]; 1] = [b"COMMITKEY"];
            prk.expand(&commit_info, Len(32)).and_then(|o| o.fill(&mut commit)).map_err(drop)?;
            (UnboundKey::from(okm), Some(commit))
        }
    };
    Ok(ContentKey { key: LessSafeKey::new(unbound), commitment })
}

/// The IV the SDKs use for frame `seq`: the sequence number, big-endian, left-padded.
pub(crate) fn frame_nonce(seq: u32) -> [u8; IV_LEN] {
    let mut iv = [0u8; IV_LEN];
    iv[IV_LEN - 4..].copy_from_slice(&seq.to_be_bytes());
    iv
}

pub(crate) fn nonce(iv: [u8; IV_LEN]) -> Nonce {
    Nonce::assume_unique_for_key(iv)
}

/// Which body AAD content string a unit uses.
#[derive(Clone, Copy)]
pub(crate) enum BodyKind {
    Regular,
    Final,
    SingleBlock,
}

/// Writes the body AAD (message id, content string, sequence number, content length)
/// into `buf`, reusing its allocation.
pub(crate) fn body_aad(buf: &mut Vec<u8>, message_id: &[u8], kind: BodyKind, seq: u32, len: u64) {
    buf.clear();
    buf.extend_from_slice(message_id);
    buf.extend_from_slice(match kind {
        BodyKind::Regular => b"AWSKMSEncryptionClient Frame".as_slice(),
        BodyKind::Final => b"AWSKMSEncryptionClient Final Frame".as_slice(),
        BodyKind::SingleBlock => b"AWSKMSEncryptionClient Single Block".as_slice(),
    });
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&len.to_be_bytes());
}

pub(crate) fn aad(bytes: &[u8]) -> aead::Aad<&[u8]> {
    aead::Aad::from(bytes)
}
