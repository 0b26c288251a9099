//! Messages keyhold writes decrypt to what went in, for both suites and every size class.

use keyhold_envelope::{AlgorithmSuite, DecryptConfig, EncryptConfig, EncryptError, EncryptionMaterials, read_header};

use crate::common::*;

const SUITES: [AlgorithmSuite; 2] =
    [AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY, AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384];

#[test]
fn sizes_and_suites_round_trip() {
    for suite in SUITES {
        for ctx in [context(&[]), context(&[("tenant", "t1"), ("purpose", "p"), ("table", "users")])] {
            let (m, key) = materials(suite, ctx.clone());
            for frame in [1u32, 7, 4096] {
                for len in [0usize, 1, 6, 7, 8, 14, 4095, 4096, 4097, 3 * 4096, 20_000] {
                    let pt = pattern(len);
                    let msg = seal(&m, frame, &pt);
                    assert_eq!(open(&key, &msg).unwrap(), pt, "suite {suite} frame {frame} len {len}");
                }
            }
            let header = read_header(&seal(&m, 4096, b"x"), &DecryptConfig::default()).unwrap();
            assert_eq!(header.version(), 2);
            assert_eq!(header.suite(), suite);
            assert_eq!(header.frame_length(), 4096);
            assert_eq!(header.context().get("tenant"), ctx.get("tenant"));
            assert_eq!(header.encrypted_data_keys().len(), 2);
        }
    }
}

#[test]
fn message_ids_differ_so_ciphertexts_differ() {
    let (m, _) = materials(AlgorithmSuite::default(), context(&[]));
    assert_ne!(seal(&m, 4096, b"same"), seal(&m, 4096, b"same"));
}

#[test]
fn exact_frame_multiple_ends_with_full_final_frame() {
    let (m, key) = materials(AlgorithmSuite::default(), context(&[]));
    let pt = pattern(8192);
    let msg = seal(&m, 4096, &pt);
    // header ... regular frame (4 + 12 + 4096 + 16), final frame (4 + 4 + 12 + 4 + 4096 + 16)
    let header_len = read_header(&msg, &DecryptConfig::default()).unwrap().len();
    assert_eq!(msg.len(), header_len + (4 + 12 + 4096 + 16) + (4 + 4 + 12 + 4 + 4096 + 16));
    assert_eq!(open(&key, &msg).unwrap(), pt);
}

#[test]
fn wrong_key_fails_commitment() {
    let (m, _) = materials(AlgorithmSuite::default(), context(&[]));
    let msg = seal(&m, 4096, b"secret");
    let err = open(&random_key(32), &msg).unwrap_err();
    assert_eq!(err, keyhold_envelope::DecryptError::CommitmentMismatch);
}

#[test]
fn materials_are_checked() {
    use keyhold_envelope::SigningKey;
    let suite = AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384;
    // Signing suite without a key.
    let r = EncryptionMaterials::new(suite, random_key(32), context(&[]), vec![edk("a")], None);
    assert!(matches!(r, Err(EncryptError::SigningKeyMismatch)));
    // Key whose public half is not in the context.
    let k = SigningKey::generate(suite).unwrap();
    let r = EncryptionMaterials::new(
        suite,
        random_key(32),
        context(&[("aws-crypto-public-key", "AAAA")]),
        vec![edk("a")],
        Some(k),
    );
    assert!(matches!(r, Err(EncryptError::SigningKeyMismatch)));
    // Legacy suites are read-only.
    let r = EncryptionMaterials::new(
        AlgorithmSuite::AES_256_GCM_HKDF_SHA256,
        random_key(32),
        context(&[]),
        vec![edk("a")],
        None,
    );
    assert!(matches!(r, Err(EncryptError::SuiteNotForEncryption(0x0178))));
    // Short data key, no EDKs, oversized fields.
    let d = AlgorithmSuite::default();
    assert!(matches!(
        EncryptionMaterials::new(d, random_key(16), context(&[]), vec![edk("a")], None),
        Err(EncryptError::DataKeyLength { expected: 32, found: 16 })
    ));
    assert!(matches!(
        EncryptionMaterials::new(d, random_key(32), context(&[]), vec![], None),
        Err(EncryptError::NoEncryptedDataKeys)
    ));
    let mut big = edk("a");
    big.ciphertext = vec![0; 70_000];
    assert!(matches!(
        EncryptionMaterials::new(d, random_key(32), context(&[]), vec![big], None),
        Err(EncryptError::FieldTooLong { .. })
    ));
    let huge = context(&[("k", &"v".repeat(66_000))]);
    assert!(matches!(
        EncryptionMaterials::new(d, random_key(32), huge, vec![edk("a")], None),
        Err(EncryptError::ContextTooLarge(_))
    ));
    // Zero frame length.
    let (m, _) = materials(d, context(&[]));
    let r =
        keyhold_envelope::encrypt(&m, &EncryptConfig { frame_length: 0 }, &aws_lc_rs::rand::SystemRandom::new(), b"");
    assert_eq!(r.unwrap_err(), EncryptError::InvalidFrameLength);
}

#[test]
fn ciphertext_len_is_exact_and_into_variants_append() {
    use keyhold_envelope::{MessageId, ciphertext_len, decrypt_into, encrypt_into};
    let (m, key) = materials(AlgorithmSuite::default(), context(&[("k", "v")]));
    for frame in [1u32, 16, 4096] {
        for len in [0usize, 1, 15, 16, 17, 4096, 10_000] {
            let cfg = EncryptConfig { frame_length: frame };
            let mut out = b"prefix".to_vec();
            encrypt_into(&m, &cfg, MessageId([9; 32]), &pattern(len), &mut out).unwrap();
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(out.len() - 6, ciphertext_len(&m, &cfg, len), "frame {frame} len {len}");
            let msg = &out[6..];
            let mut pt = b"keep".to_vec();
            decrypt_into(
                read_header(msg, &DecryptConfig::default()).unwrap(),
                &key,
                msg,
                &DecryptConfig::default(),
                &mut pt,
            )
            .unwrap();
            assert_eq!(&pt[..4], b"keep");
            assert_eq!(&pt[4..], &pattern(len)[..]);
        }
    }
    // On failure the output buffer is left as it was.
    let mut msg = seal(&m, 16, &pattern(100));
    let n = msg.len();
    msg[n - 1] ^= 1;
    let mut pt = b"keep".to_vec();
    let header = read_header(&msg, &DecryptConfig::default()).unwrap();
    assert!(decrypt_into(header, &key, &msg, &DecryptConfig::default(), &mut pt).is_err());
    assert_eq!(pt, b"keep");
}
