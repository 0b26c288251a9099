//! Content-key derivation (identity, HKDF, committing HKDF), nonces and body AAD.

use aws_lc_rs::aead::{self, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use keyhold_core::DataKey;
use zeroize::{Zeroize, Zeroizing};

use crate::header::IV_LEN;
use crate::suite::{AlgorithmSuite, Kdf};

/// The content key of one message, and the commitment value when the suite commits.
pub(crate) struct ContentKey {
    pub(crate) key: LessSafeKey,
    pub(crate) commitment: Option<[u8; 32]>,
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

/// HKDF-SHA512 for the committing suites: extract with the message id as salt, then
/// expand once for the content key (`suite id || "DERIVEKEY"`) and once for the
/// commitment key (`"COMMITKEY"`), 32 bytes each, so each is the first HMAC block `T(1)`.
///
/// This is the largest fixed cost of every message, so it is written on the SHA-512
/// compression function itself: exactly ten compressions (two pad blocks and two final
/// blocks for the extract, two pad blocks for the PRK shared by both expansions, and two
/// final blocks per expansion), with no digest-context setup per HMAC. Equivalence with
/// RFC 5869 is tested below and by every interoperability test.
fn committing_hkdf(
    suite_id: &[u8; 2],
    data_key: &DataKey,
    message_id: &[u8],
) -> Result<(Zeroizing<[u8; 32]>, [u8; 32]), ()> {
    // One scratch block and one set of chaining states, each wiped once on drop: zeroizing
    // is done with volatile writes, so fewer buffers cost less.
    let mut scratch = Zeroizing::new(Scratch { block: [0; 128], states: [[0; 8]; 4] });
    let Scratch { block, states } = &mut *scratch;
    let [inner, outer, expand_inner, expand_outer] = states;

    // Extract: PRK = HMAC(message id, data key); the PRK is left in `outer`.
    for (state, pad) in [(&mut *inner, 0x36u8), (&mut *outer, 0x5c)] {
        block.fill(pad);
        for (b, k) in block.iter_mut().zip(message_id) {
            *b ^= k;
        }
        *state = SHA512_IV;
        compress(state, block);
    }
    mac(inner, outer, &[data_key.expose()], block)?;

    // Expand: T(1) = HMAC(PRK, info || 0x01) for each output; the PRK's pad states are
    // computed once, straight from its chaining state.
    for (state, pad) in [(&mut *expand_inner, 0x36u8), (&mut *expand_outer, 0x5c)] {
        block.fill(pad);
        for (chunk, word) in block.chunks_exact_mut(8).zip(outer.iter()) {
            for (b, w) in chunk.iter_mut().zip(word.to_be_bytes()) {
                *b ^= w;
            }
        }
        *state = SHA512_IV;
        compress(state, block);
    }
    let mut key = Zeroizing::new([0u8; 32]);
    let mut commit = [0u8; 32];
    let infos: [(&[&[u8]], &mut [u8; 32]); 2] =
        [(&[suite_id, b"DERIVEKEY", &[1]], &mut key), (&[b"COMMITKEY", &[1]], &mut commit)];
    for (info, out) in infos {
        *inner = *expand_inner;
        *outer = *expand_outer;
        mac(inner, outer, info, block)?;
        for (chunk, word) in out.chunks_exact_mut(8).zip(outer.iter()) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
    }
    Ok((key, commit))
}

/// Scratch space of [`committing_hkdf`], wiped on drop.
#[derive(Zeroize)]
struct Scratch {
    block: [u8; 128],
    states: [[u64; 8]; 4],
}

/// SHA-512's initial state (FIPS 180-4, 5.3.5).
const SHA512_IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// Finishes HMAC-SHA512 from its pad states over `parts` (at most 111 bytes in all, so
/// one final block each for the inner and the outer hash); the MAC is left in `outer`.
fn mac(inner: &mut [u64; 8], outer: &mut [u64; 8], parts: &[&[u8]], block: &mut [u8; 128]) -> Result<(), ()> {
    block.fill(0);
    let mut len = 0;
    for p in parts {
        block.get_mut(len..len + p.len()).ok_or(())?.copy_from_slice(p);
        len += p.len();
    }
    final_block(inner, block, len)?;
    block.fill(0);
    for (chunk, word) in block.chunks_exact_mut(8).zip(inner.iter()) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    final_block(outer, block, 64)
}

/// Pads the last block of a message that is one key block (128 bytes) plus `len` bytes
/// long, and compresses it.
fn final_block(state: &mut [u64; 8], block: &mut [u8; 128], len: usize) -> Result<(), ()> {
    if len > 111 {
        return Err(());
    }
    *block.get_mut(len).ok_or(())? = 0x80;
    let bits = ((128 + len) as u128) * 8;
    block.get_mut(112..).ok_or(())?.copy_from_slice(&bits.to_be_bytes());
    compress(state, block);
    Ok(())
}

fn compress(state: &mut [u64; 8], block: &[u8; 128]) {
    sha2::compress512(state, &[(*block).into()]);
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
