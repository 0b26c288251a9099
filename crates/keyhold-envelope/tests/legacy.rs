//! Version-1 and non-framed messages, written by a small independent encoder here (the
//! aws-esdk interop tests cover v1 framed messages from the reference implementation).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyCompressedBin};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair};
use aws_lc_rs::{aead, hkdf, signature};
use base64::Engine as _;
use keyhold_envelope::{AlgorithmSuite, DataKey, DecryptConfig, DecryptError, EncryptionContext};

use crate::common::*;

/// Options for a hand-built v1 message.
pub struct V1 {
    pub suite: AlgorithmSuite,
    pub framed: bool,
    pub frame_length: u32,
    pub context: EncryptionContext,
    /// Overrides the public key put into the context (signing suites).
    pub public_key_override: Option<String>,
}

/// Builds a v1 message; returns it and the data key.
pub fn v1_message(opts: &V1, plaintext: &[u8]) -> (Vec<u8>, DataKey) {
    let rng = SystemRandom::new();
    let suite = opts.suite;
    let key_len = suite.data_key_len();
    let key = random_key(key_len);
    let mut message_id = [0u8; 16];
    rng.fill(&mut message_id).unwrap();

    let mut ctx = opts.context.clone();
    let signer = match suite.id() {
        0x0378 | 0x0346 => Some(EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_ASN1_SIGNING).unwrap()),
        0x0214 => Some(EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_ASN1_SIGNING).unwrap()),
        _ => None,
    };
    if let Some(s) = &signer {
        let pk: EcPublicKeyCompressedBin = s.public_key().as_be_bytes().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(pk.as_ref());
        ctx.insert("aws-crypto-public-key", opts.public_key_override.clone().unwrap_or(b64));
    }

    let aead_alg: &'static aead::Algorithm = match key_len {
        16 => &aead::AES_128_GCM,
        24 => &aead::AES_192_GCM,
        _ => &aead::AES_256_GCM,
    };
    let id = suite.id().to_be_bytes();
    let content_key = match suite.id() {
        0x0014 | 0x0046 | 0x0078 => LessSafeKey::new(UnboundKey::new(aead_alg, key.expose()).unwrap()),
        other => {
            let alg = if matches!(other, 0x0378 | 0x0346) { hkdf::HKDF_SHA384 } else { hkdf::HKDF_SHA256 };
            let prk = hkdf::Salt::new(alg, &[]).extract(key.expose());
            let info: [&[u8]; 2] = [&id, &message_id];
            LessSafeKey::new(UnboundKey::from(prk.expand(&info, aead_alg).unwrap()))
        }
    };

    let mut msg = vec![1u8, 0x80];
    msg.extend_from_slice(&id);
    msg.extend_from_slice(&message_id);
    let aad = ctx.to_bytes().unwrap();
    msg.extend_from_slice(&(aad.len() as u16).to_be_bytes());
    msg.extend_from_slice(&aad);
    msg.extend_from_slice(&1u16.to_be_bytes());
    for field in [b"test".as_slice(), b"k", &[9, 9]] {
        msg.extend_from_slice(&(field.len() as u16).to_be_bytes());
        msg.extend_from_slice(field);
    }
    msg.push(if opts.framed { 2 } else { 1 });
    msg.extend_from_slice(&[0, 0, 0, 0, 12]);
    msg.extend_from_slice(&(if opts.framed { opts.frame_length } else { 0 }).to_be_bytes());
    let mut header_iv = [0u8; 12];
    rng.fill(&mut header_iv).unwrap();
    let tag = content_key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(header_iv), Aad::from(&msg[..]), &mut [])
        .unwrap();
    msg.extend_from_slice(&header_iv);
    msg.extend_from_slice(tag.as_ref());

    let body_aad = |label: &str, seq: u32, len: u64| {
        let mut a = message_id.to_vec();
        a.extend_from_slice(label.as_bytes());
        a.extend_from_slice(&seq.to_be_bytes());
        a.extend_from_slice(&len.to_be_bytes());
        a
    };
    let seal = |iv: [u8; 12], aad: Vec<u8>, data: &[u8]| {
        let mut buf = data.to_vec();
        let tag =
            content_key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut buf).unwrap();
        buf.extend_from_slice(tag.as_ref());
        buf
    };
    if opts.framed {
        let fl = opts.frame_length as usize;
        let mut chunks: Vec<&[u8]> = plaintext.chunks(fl).collect();
        let last = if plaintext.len().is_multiple_of(fl) { &[][..] } else { chunks.pop().unwrap() };
        let mut seq = 1u32;
        for c in chunks {
            let mut iv = [0u8; 12];
            iv[8..].copy_from_slice(&seq.to_be_bytes());
            msg.extend_from_slice(&seq.to_be_bytes());
            msg.extend_from_slice(&iv);
            msg.extend_from_slice(&seal(iv, body_aad("AWSKMSEncryptionClient Frame", seq, fl as u64), c));
            seq += 1;
        }
        let mut iv = [0u8; 12];
        iv[8..].copy_from_slice(&seq.to_be_bytes());
        msg.extend_from_slice(&u32::MAX.to_be_bytes());
        msg.extend_from_slice(&seq.to_be_bytes());
        msg.extend_from_slice(&iv);
        msg.extend_from_slice(&(last.len() as u32).to_be_bytes());
        msg.extend_from_slice(&seal(iv, body_aad("AWSKMSEncryptionClient Final Frame", seq, last.len() as u64), last));
    } else {
        let mut iv = [0u8; 12];
        rng.fill(&mut iv).unwrap();
        msg.extend_from_slice(&iv);
        msg.extend_from_slice(&(plaintext.len() as u64).to_be_bytes());
        msg.extend_from_slice(&seal(
            iv,
            body_aad("AWSKMSEncryptionClient Single Block", 1, plaintext.len() as u64),
            plaintext,
        ));
    }
    if let Some(s) = signer {
        let sig = s.sign(&rng, &msg).unwrap();
        msg.extend_from_slice(&(sig.as_ref().len() as u16).to_be_bytes());
        msg.extend_from_slice(sig.as_ref());
    }
    (msg, key)
}

#[test]
fn every_v1_suite_framed_and_non_framed() {
    for suite in AlgorithmSuite::ALL.into_iter().filter(|s| s.message_version() == 1) {
        for framed in [true, false] {
            for len in [0usize, 1, 100, 1000] {
                let pt = pattern(len);
                let opts =
                    V1 { suite, framed, frame_length: 100, context: context(&[("k", "v")]), public_key_override: None };
                let (msg, key) = v1_message(&opts, &pt);
                assert_eq!(open(&key, &msg).unwrap(), pt, "suite {suite} framed {framed} len {len}");
            }
        }
    }
}

#[test]
fn v1_refused_when_commitment_required() {
    let opts = V1 {
        suite: AlgorithmSuite::AES_256_GCM_HKDF_SHA384_ECDSA_P384,
        framed: true,
        frame_length: 64,
        context: context(&[]),
        public_key_override: None,
    };
    let (msg, key) = v1_message(&opts, b"legacy");
    let strict = DecryptConfig { require_commitment: true, ..DecryptConfig::default() };
    assert_eq!(open_with(&key, &msg, &strict).unwrap_err(), DecryptError::CommitmentRequired(0x0378));
}
