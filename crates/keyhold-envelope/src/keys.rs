//! Content-key derivation (identity, HKDF, committing HKDF), nonces and body AAD.

use aws_lc_rs::aead::{self, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{digest, hkdf};
use keyhold_core::DataKey;
use zeroize::Zeroizing;

use crate::header::IV_LEN;
use crate::suite::{AlgorithmSuite, Kdf};

/// The content key of one message, and the commitment value when the suite commits.
pub(crate) struct ContentKey {
    pub(crate) key: LessSafeKey,
    pub(crate) commitment: Option<[u8; 32]>,
}

/// HKDF-SHA512 for the committing suites: extract with the message id as salt, then
/// expand once for the content key (`suite id || "DERIVEKEY"`) and once for the
/// commitment key (`"COMMITKEY"`), 32 bytes each, so each is a single HMAC block `T(1)`.
///
/// Written on SHA-512 contexts rather than `aws_lc_rs::hkdf` because this is the largest
/// fixed cost of every message: computing the PRK's inner and outer pad states once and
/// cloning them for both expansions saves a third of the time of the general API (see
/// the benchmark's fixed-cost table). Equivalence with RFC 5869 is tested below and by
/// every interoperability test.
fn committing_hkdf(
    suite_id: &[u8; 2],
    data_key: &DataKey,
    message_id: &[u8],
) -> Result<(Zeroizing<[u8; 32]>, [u8; 32]), ()> {
    let prk = Hmac512::new(message_id)?.sign(&[data_key.expose()]);
    let expand = Hmac512::new(prk.as_ref())?;
    let key = expand.clone().sign(&[suite_id, b"DERIVEKEY", &[1]]);
    let commit = expand.sign(&[b"COMMITKEY", &[1]]);
    let mut key_out = Zeroizing::new([0u8; 32]);
    key_out.copy_from_slice(key.as_ref().get(..32).ok_or(())?);
    let mut commit_out = [0u8; 32];
    commit_out.copy_from_slice(commit.as_ref().get(..32).ok_or(())?);
    Ok((key_out, commit_out))
}

/// HMAC-SHA512 with its pad states computed once. Keys must be at most one block (128
/// bytes); the message id (32) and the PRK (64) are.
#[derive(Clone)]
struct Hmac512 {
    inner: digest::Context,
    outer: digest::Context,
}

impl Hmac512 {
    fn new(key: &[u8]) -> Result<Self, ()> {
        if key.len() > 128 {
            return Err(());
        }
        let state = |pad: u8| {
            let mut block = Zeroizing::new([pad; 128]);
            for (b, k) in block.iter_mut().zip(key) {
                *b ^= k;
            }
            let mut ctx = digest::Context::new(&digest::SHA512);
            ctx.update(block.as_ref());
            ctx
        };
        let inner = state(0x36);
        let outer = state(0x5c);
        Ok(Self { inner, outer })
    }

    fn sign(self, parts: &[&[u8]]) -> digest::Digest {
        let Self { mut inner, mut outer } = self;
        for p in parts {
            inner.update(p);
        }
        outer.update(inner.finish().as_ref());
        outer.finish()
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
            let (key, commit) = committing_hkdf(&id, data_key, message_id)?;
            (UnboundKey::new(aead_alg, key.as_ref()).map_err(drop)?, Some(commit))
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

/// The body AAD (message id, content string, sequence number, content length), built on
/// the stack: at most 32 + 35 + 4 + 8 bytes.
pub(crate) struct BodyAad {
    buf: [u8; 80],
    len: usize,
}

impl BodyAad {
    pub(crate) fn new(message_id: &[u8], kind: BodyKind, seq: u32, len: u64) -> Self {
        let label: &[u8] = match kind {
            BodyKind::Regular => b"AWSKMSEncryptionClient Frame",
            BodyKind::Final => b"AWSKMSEncryptionClient Final Frame",
            BodyKind::SingleBlock => b"AWSKMSEncryptionClient Single Block",
        };
        let mut aad = Self { buf: [0; 80], len: 0 };
        for part in [message_id, label, &seq.to_be_bytes(), &len.to_be_bytes()] {
            if let Some(dst) = aad.buf.get_mut(aad.len..aad.len + part.len()) {
                dst.copy_from_slice(part);
                aad.len += part.len();
            }
        }
        aad
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

pub(crate) fn aad(bytes: &[u8]) -> aead::Aad<&[u8]> {
    aead::Aad::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Len(usize);

    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn committing_hkdf_matches_rfc5869() {
        for (dk, id) in [([0u8; 32], [0u8; 32]), ([9u8; 32], [7u8; 32]), ([0xffu8; 32], [0x42u8; 32])] {
            let data_key = DataKey::from_slice(&dk);
            let (key, commit) = committing_hkdf(&[4, 0x78], &data_key, &id).unwrap();
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA512, &id).extract(&dk);
            let (mut k, mut c) = ([0u8; 32], [0u8; 32]);
            let info: [&[u8]; 2] = [&[4, 0x78], b"DERIVEKEY"];
            prk.expand(&info, Len(32)).unwrap().fill(&mut k).unwrap();
            let cinfo: [&[u8]; 1] = [b"COMMITKEY"];
            prk.expand(&cinfo, Len(32)).unwrap().fill(&mut c).unwrap();
            assert_eq!(*key, k);
            assert_eq!(commit, c);
        }
    }
}
