//! Every malformed input is a typed error, never a panic: a table of mutations of valid
//! messages and the exact error each must produce.

use keyhold_envelope::{AlgorithmSuite, DataKey, DecryptConfig, DecryptError as E, read_header};

use crate::common::*;
use crate::legacy::{V1, v1_message};

struct Case {
    name: &'static str,
    message: Vec<u8>,
    key: DataKey,
    config: DecryptConfig,
    expected: E,
}

/// v2, suite 0x0478, context {a: b}, one EDK, frame length 16, 40 bytes of plaintext:
/// header 114 bytes, two regular frames of 48, a final frame of 48.
fn base_v2() -> (Vec<u8>, DataKey) {
    let (m, key) = materials_with(AlgorithmSuite::default(), context(&[("a", "b")]), vec![edk("a")]);
    let msg = seal(&m, 16, &pattern(40));
    assert_eq!(read_header(&msg, &DecryptConfig::default()).unwrap().len(), 114);
    assert_eq!(msg.len(), 114 + 48 * 3);
    (msg, key)
}

const AAD: usize = 37; // the AAD section of base_v2 starts here
const EDKS: usize = 45; // the EDK count of base_v2
const CONTENT_TYPE: usize = 61;
const FRAME_LEN: usize = 62;
const COMMIT: usize = 66;
const TAG: usize = 98;
const F1: usize = 114;
const F2: usize = 162;
const FINAL: usize = 210;

fn edit(msg: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut m = msg.to_vec();
    f(&mut m);
    m
}

/// Replaces the AAD section of `base_v2` with `aad` (fixing the length field).
fn with_aad(msg: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut m = msg[..35].to_vec();
    m.extend_from_slice(&(aad.len() as u16).to_be_bytes());
    m.extend_from_slice(aad);
    m.extend_from_slice(&msg[EDKS..]);
    m
}

fn cases() -> Vec<Case> {
    let (v2, k) = base_v2();
    let d = DecryptConfig::default;
    let dup = || k.duplicate();
    let mut c = vec![
        Case { name: "empty input", message: vec![], key: dup(), config: d(), expected: E::Truncated("version field") },
        Case {
            name: "version 3",
            message: edit(&v2, |m| m[0] = 3),
            key: dup(),
            config: d(),
            expected: E::UnsupportedVersion(3),
        },
        Case {
            name: "version 0",
            message: edit(&v2, |m| m[0] = 0),
            key: dup(),
            config: d(),
            expected: E::UnsupportedVersion(0),
        },
        Case {
            name: "unknown suite",
            message: edit(&v2, |m| m[1..3].copy_from_slice(&[0x99, 0x99])),
            key: dup(),
            config: d(),
            expected: E::UnknownSuite(0x9999),
        },
        Case {
            name: "S3EC suite id",
            message: edit(&v2, |m| m[1..3].copy_from_slice(&[0x00, 0x73])),
            key: dup(),
            config: d(),
            expected: E::UnknownSuite(0x0073),
        },
        Case {
            name: "v1 suite in v2 header",
            message: edit(&v2, |m| m[1..3].copy_from_slice(&[0x01, 0x78])),
            key: dup(),
            config: d(),
            expected: E::SuiteVersionMismatch { version: 2, suite: 0x0178 },
        },
        Case {
            name: "truncated in message id",
            message: v2[..20].to_vec(),
            key: dup(),
            config: d(),
            expected: E::Truncated("message id"),
        },
        Case {
            name: "context length past the end",
            message: edit(&v2[..40], |m| m[35..37].copy_from_slice(&[0xff, 0xff])),
            key: dup(),
            config: d(),
            expected: E::Truncated("encryption context"),
        },
        Case {
            name: "context declares zero pairs",
            message: with_aad(&v2, &[0, 0]),
            key: dup(),
            config: d(),
            expected: E::MalformedContext("non-empty section declares zero pairs"),
        },
        Case {
            name: "context pairs overrun",
            message: with_aad(&v2, &[0, 1, 0, 9, b'a']),
            key: dup(),
            config: d(),
            expected: E::MalformedContext("pairs overrun the declared length"),
        },
        Case {
            name: "context bytes left over",
            message: with_aad(&v2, &[0, 1, 0, 1, b'a', 0, 1, b'b', 7]),
            key: dup(),
            config: d(),
            expected: E::MalformedContext("bytes left over after the declared pairs"),
        },
        Case {
            name: "context duplicate key",
            message: with_aad(&v2, &[0, 2, 0, 1, b'a', 0, 0, 0, 1, b'a', 0, 0]),
            key: dup(),
            config: d(),
            expected: E::MalformedContext("a key appears twice"),
        },
        Case {
            name: "context key not UTF-8",
            message: with_aad(&v2, &[0, 1, 0, 1, 0xff, 0, 0]),
            key: dup(),
            config: d(),
            expected: E::MalformedContext("a key is not UTF-8"),
        },
        Case {
            name: "context value not UTF-8",
            message: with_aad(&v2, &[0, 1, 0, 1, b'a', 0, 1, 0xc3]),
            key: dup(),
            config: d(),
            expected: E::MalformedContext("a value is not UTF-8"),
        },
        Case {
            name: "zero encrypted data keys",
            message: edit(&v2, |m| m[EDKS..EDKS + 2].copy_from_slice(&[0, 0])),
            key: dup(),
            config: d(),
            expected: E::NoEncryptedDataKeys,
        },
        Case {
            name: "more encrypted data keys than the cap",
            message: edit(&v2, |m| m[EDKS..EDKS + 2].copy_from_slice(&[0, 17])),
            key: dup(),
            config: d(),
            expected: E::TooManyEncryptedDataKeys { count: 17, max: 16 },
        },
        Case {
            name: "cap of one",
            message: edit(&v2, |m| m[EDKS..EDKS + 2].copy_from_slice(&[0, 2])),
            key: dup(),
            config: DecryptConfig { max_encrypted_data_keys: 1, ..d() },
            expected: E::TooManyEncryptedDataKeys { count: 2, max: 1 },
        },
        Case {
            name: "truncated in encrypted data key",
            message: v2[..55].to_vec(),
            key: dup(),
            config: d(),
            expected: E::Truncated("encrypted data key"),
        },
        Case {
            name: "provider id not UTF-8",
            message: edit(&v2, |m| m[49] = 0xff),
            key: dup(),
            config: d(),
            expected: E::MalformedProviderId,
        },
        Case {
            name: "unknown content type",
            message: edit(&v2, |m| m[CONTENT_TYPE] = 3),
            key: dup(),
            config: d(),
            expected: E::UnsupportedContentType(3),
        },
        Case {
            name: "framed with frame length 0",
            message: edit(&v2, |m| m[FRAME_LEN..FRAME_LEN + 4].copy_from_slice(&[0; 4])),
            key: dup(),
            config: d(),
            expected: E::BadFrameLength(0),
        },
        Case {
            name: "non-framed with a frame length",
            message: edit(&v2, |m| m[CONTENT_TYPE] = 1),
            key: dup(),
            config: d(),
            expected: E::BadFrameLength(16),
        },
        Case {
            name: "absurd frame length",
            message: edit(&v2, |m| m[FRAME_LEN..FRAME_LEN + 4].copy_from_slice(&[0xff; 4])),
            key: dup(),
            config: d(),
            expected: E::FrameTooLarge { found: u32::MAX, max: 64 << 20 },
        },
        Case {
            name: "truncated in commitment key",
            message: v2[..COMMIT + 5].to_vec(),
            key: dup(),
            config: d(),
            expected: E::Truncated("commitment key"),
        },
        Case {
            name: "truncated in header tag",
            message: v2[..TAG + 3].to_vec(),
            key: dup(),
            config: d(),
            expected: E::Truncated("header authentication"),
        },
        Case {
            name: "tampered commitment key",
            message: edit(&v2, |m| m[COMMIT] ^= 1),
            key: dup(),
            config: d(),
            expected: E::CommitmentMismatch,
        },
        Case {
            name: "tampered context value",
            message: edit(&v2, |m| m[AAD + 7] = b'c'),
            key: dup(),
            config: d(),
            expected: E::HeaderAuthFailed,
        },
        Case {
            name: "tampered encrypted data key",
            message: edit(&v2, |m| m[59] ^= 0x10),
            key: dup(),
            config: d(),
            expected: E::HeaderAuthFailed,
        },
        Case {
            name: "tampered header tag",
            message: edit(&v2, |m| m[TAG + 15] ^= 1),
            key: dup(),
            config: d(),
            expected: E::HeaderAuthFailed,
        },
        Case {
            name: "wrong data key",
            message: v2.clone(),
            key: random_key(32),
            config: d(),
            expected: E::CommitmentMismatch,
        },
        Case {
            name: "data key of the wrong length",
            message: v2.clone(),
            key: random_key(16),
            config: d(),
            expected: E::DataKeyLength { expected: 32, found: 16 },
        },
        Case {
            name: "tampered frame ciphertext",
            message: edit(&v2, |m| m[F1 + 20] ^= 1),
            key: dup(),
            config: d(),
            expected: E::FrameAuthFailed(1),
        },
        Case {
            name: "tampered frame tag",
            message: edit(&v2, |m| m[F2 + 47] ^= 1),
            key: dup(),
            config: d(),
            expected: E::FrameAuthFailed(2),
        },
        Case {
            name: "tampered frame IV",
            message: edit(&v2, |m| m[F1 + 5] ^= 1),
            key: dup(),
            config: d(),
            expected: E::FrameAuthFailed(1),
        },
        Case {
            name: "tampered final frame",
            message: edit(&v2, |m| m[FINAL + 30] ^= 1),
            key: dup(),
            config: d(),
            expected: E::FrameAuthFailed(3),
        },
        Case {
            name: "frame sequence number changed",
            message: edit(&v2, |m| m[F1 + 3] = 2),
            key: dup(),
            config: d(),
            expected: E::BadSequenceNumber { expected: 1, found: 2 },
        },
        Case {
            name: "frames reordered",
            message: edit(&v2, |m| {
                let f1 = m[F1..F2].to_vec();
                let f2 = m[F2..FINAL].to_vec();
                m[F1..F2].copy_from_slice(&f2);
                m[F2..FINAL].copy_from_slice(&f1);
            }),
            key: dup(),
            config: d(),
            expected: E::BadSequenceNumber { expected: 1, found: 2 },
        },
        Case {
            name: "final frame longer than frame length",
            message: edit(&v2, |m| m[FINAL + 20..FINAL + 24].copy_from_slice(&[0, 0, 0, 17])),
            key: dup(),
            config: d(),
            expected: E::FinalFrameTooLong { found: 17, frame_length: 16 },
        },
        Case {
            name: "final frame length changed",
            message: edit(&v2, |m| m[FINAL + 23] = 7),
            key: dup(),
            config: d(),
            expected: E::FrameAuthFailed(3),
        },
        Case {
            name: "truncated inside a regular frame",
            message: v2[..F2 + 10].to_vec(),
            key: dup(),
            config: d(),
            expected: E::Truncated("body frame"),
        },
        Case {
            name: "final frame missing",
            message: v2[..FINAL].to_vec(),
            key: dup(),
            config: d(),
            expected: E::Truncated("body frame"),
        },
        Case {
            name: "truncated inside the final frame",
            message: v2[..FINAL + 30].to_vec(),
            key: dup(),
            config: d(),
            expected: E::Truncated("final frame"),
        },
        Case {
            name: "header only",
            message: v2[..F1].to_vec(),
            key: dup(),
            config: d(),
            expected: E::Truncated("body frame"),
        },
        Case {
            name: "trailing byte",
            message: edit(&v2, |m| m.push(0)),
            key: dup(),
            config: d(),
            expected: E::TrailingBytes(1),
        },
        Case {
            name: "unsigned suite id switched to signing",
            message: edit(&v2, |m| m[1] = 5),
            key: dup(),
            config: d(),
            expected: E::MissingPublicKey,
        },
    ];

    // Signed v2 messages.
    let (m, sk) =
        materials_with(AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384, context(&[]), vec![edk("a")]);
    let signed = seal(&m, 16, &pattern(40));
    let n = signed.len();
    c.push(Case {
        name: "signature tampered",
        message: edit(&signed, |m| m[n - 5] ^= 1),
        key: sk.duplicate(),
        config: d(),
        expected: E::SignatureInvalid,
    });
    c.push(Case {
        name: "signature footer truncated",
        message: signed[..n - 10].to_vec(),
        key: sk.duplicate(),
        config: d(),
        expected: E::Truncated("signature footer"),
    });
    c.push(Case {
        name: "signature footer missing",
        message: signed[..n - 2 - sig_len(&signed)].to_vec(),
        key: sk.duplicate(),
        config: d(),
        expected: E::Truncated("signature footer"),
    });
    c.push(Case {
        name: "signing suite id switched to unsigned",
        message: edit(&signed, |m| m[1] = 4),
        key: sk.duplicate(),
        config: d(),
        expected: E::UnexpectedPublicKey,
    });
    c.push(Case {
        name: "signed message with trailing bytes",
        message: edit(&signed, |m| m.extend_from_slice(&[1, 2, 3])),
        key: sk.duplicate(),
        config: d(),
        expected: E::TrailingBytes(3),
    });

    // Version 1.
    let v1 = |suite, framed| V1 { suite, framed, frame_length: 16, context: context(&[]), public_key_override: None };
    let (nf, nk) = v1_message(&v1(AlgorithmSuite::AES_256_GCM_HKDF_SHA256, false), &pattern(40));
    // v1 header: 1+1+2+16 + 2 (empty AAD) + 2 + (2+4+2+1+2+2) + 1 + 4 + 1 + 4 = 47, auth 28.
    let v1_body = 47 + 28;
    c.push(Case {
        name: "v1 type byte",
        message: edit(&nf, |m| m[1] = 0x81),
        key: nk.duplicate(),
        config: d(),
        expected: E::UnsupportedType(0x81),
    });
    c.push(Case {
        name: "committing suite in v1 header",
        message: edit(&nf, |m| m[2..4].copy_from_slice(&[0x04, 0x78])),
        key: nk.duplicate(),
        config: d(),
        expected: E::SuiteVersionMismatch { version: 1, suite: 0x0478 },
    });
    c.push(Case {
        name: "v1 reserved bytes",
        message: edit(&nf, |m| m[38] = 1),
        key: nk.duplicate(),
        config: d(),
        expected: E::NonZeroReserved,
    });
    c.push(Case {
        name: "v1 IV length",
        message: edit(&nf, |m| m[42] = 16),
        key: nk.duplicate(),
        config: d(),
        expected: E::BadIvLength(16),
    });
    c.push(Case {
        name: "v1 tampered header IV",
        message: edit(&nf, |m| m[47] ^= 1),
        key: nk.duplicate(),
        config: d(),
        expected: E::HeaderAuthFailed,
    });
    c.push(Case {
        name: "non-framed absurd content length",
        message: edit(&nf, |m| m[v1_body + 12..v1_body + 20].copy_from_slice(&(1u64 << 40).to_be_bytes())),
        key: nk.duplicate(),
        config: d(),
        expected: E::ContentTooLong { found: 1 << 40, max: 64 << 20 },
    });
    c.push(Case {
        name: "non-framed tampered",
        message: edit(&nf, |m| m[v1_body + 25] ^= 1),
        key: nk.duplicate(),
        config: d(),
        expected: E::FrameAuthFailed(1),
    });
    c.push(Case {
        name: "non-framed truncated",
        message: nf[..nf.len() - 1].to_vec(),
        key: nk.duplicate(),
        config: d(),
        expected: E::Truncated("non-framed body"),
    });
    c.push(Case {
        name: "v1 refused by commitment policy",
        message: nf.clone(),
        key: nk.duplicate(),
        config: DecryptConfig { require_commitment: true, ..d() },
        expected: E::CommitmentRequired(0x0178),
    });
    let bad_pk = V1 {
        public_key_override: Some("not base64!".into()),
        ..v1(AlgorithmSuite::AES_256_GCM_HKDF_SHA384_ECDSA_P384, true)
    };
    let (bm, bk) = v1_message(&bad_pk, b"x");
    c.push(Case { name: "malformed public key", message: bm, key: bk, config: d(), expected: E::MalformedPublicKey });
    let point =
        V1 { public_key_override: Some("AAAA".into()), ..v1(AlgorithmSuite::AES_256_GCM_HKDF_SHA384_ECDSA_P384, true) };
    let (pm, pk) = v1_message(&point, b"x");
    c.push(Case {
        name: "public key not a curve point",
        message: pm,
        key: pk,
        config: d(),
        expected: E::MalformedPublicKey,
    });
    c
}

fn sig_len(signed: &[u8]) -> usize {
    // The footer is the last field: find the two-byte length that spans to the end.
    (60..=110)
        .find(|&l| {
            signed.len() >= l + 2
                && u16::from_be_bytes([signed[signed.len() - l - 2], signed[signed.len() - l - 1]]) as usize == l
        })
        .unwrap()
}

#[test]
fn malformed_messages_fail_with_typed_errors() {
    let cases = cases();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    for case in &cases {
        assert!(names.insert(case.name), "duplicate case name {}", case.name);
        let got = open_with(&case.key, &case.message, &case.config);
        assert_eq!(got.as_ref().err(), Some(&case.expected), "case {:?}", case.name);
    }
}

#[test]
fn every_prefix_of_a_valid_message_is_truncated() {
    let (v2, k) = base_v2();
    for len in 0..v2.len() {
        match open(&k, &v2[..len]) {
            Err(E::Truncated(_)) => {}
            other => panic!("prefix of {len} bytes gave {:?}", other.map(|p| p.len())),
        }
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    let (v2, k) = base_v2();
    for i in 0..v2.len() {
        for bit in [0x01u8, 0x80] {
            let m = edit(&v2, |m| m[i] ^= bit);
            assert!(open(&k, &m).is_err(), "flipping bit {bit:#x} of byte {i} went unnoticed");
        }
    }
}

#[test]
fn duplicate_keys_are_found_among_many_pairs() {
    let (v2, k) = base_v2();
    // 40 distinct keys, then a repeat of the 30th: past the small-count fast path.
    let mut aad = vec![0u8, 41];
    for i in 0..40u8 {
        aad.extend_from_slice(&[0, 2, b'k', b'A' + i, 0, 0]);
    }
    aad.extend_from_slice(&[0, 2, b'k', b'A' + 30, 0, 0]);
    assert_eq!(open(&k, &with_aad(&v2, &aad)).unwrap_err(), E::MalformedContext("a key appears twice"));
    // And 40 distinct keys alone parse (the header then fails authentication, as edited).
    aad[1] = 40;
    aad.truncate(aad.len() - 6);
    assert_eq!(open(&k, &with_aad(&v2, &aad)).unwrap_err(), E::HeaderAuthFailed);
}
