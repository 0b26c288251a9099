//! Interoperability with the reference implementation, `aws-esdk`, both ways: messages
//! keyhold writes (through the local provider, whose encrypted data keys use the raw AES
//! keyring format) decrypt with `aws-esdk` and a raw AES keyring holding the same wrapping
//! key; messages `aws-esdk` writes decrypt with keyhold. Both committing suites, the v1
//! suites for reading, with and without encryption context, and the size edge cases.
//! The AWS KMS keyring format against moto is in [`kms`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

use std::collections::HashMap;
use std::sync::Arc;

use aws_esdk::client as esdk_client;
use aws_esdk::material_providers::client as mpl_client;
use aws_esdk::material_providers::types::material_providers_config::MaterialProvidersConfig;
use aws_esdk::material_providers::types::{AesWrappingAlg, EsdkAlgorithmSuiteId as Esdk, EsdkCommitmentPolicy};
use aws_esdk::types::aws_encryption_sdk_config::AwsEncryptionSdkConfig;
use aws_lc_rs::rand::SystemRandom;
use keyhold_core::{DataKey, EncryptionContext, KeyRef, Purpose, Region, SystemClock, TenantId};
use keyhold_envelope::{
    AlgorithmSuite, DecryptConfig, EncryptConfig, EncryptionMaterials, PUBLIC_KEY_CONTEXT_KEY, SigningKey,
};
use keyhold_provider::KeyProvider;
use keyhold_provider_local::{LocalKms, raw_aes};
use keyhold_service::{EncryptParams, Keyhold, Settings};

mod kms;

const SIZES: [usize; 7] = [0, 1, 100, 4095, 4096, 8192, 10_000];

struct Fixture {
    service: Keyhold,
    keys: Vec<(KeyRef, [u8; 32])>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let kms = Arc::new(LocalKms::open(dir.path()).unwrap());
    let mut keys = Vec::new();
    for (region, byte) in [("eu-central-1", 0x11u8), ("eu-west-1", 0x22)] {
        let material = [byte; 32];
        let d = kms.import_key(&Region::parse(region).unwrap(), &DataKey::from_slice(&material), "interop").unwrap();
        keys.push((d.key, material));
    }
    let providers: Vec<Arc<dyn KeyProvider>> = vec![kms];
    Fixture { service: Keyhold::new(providers, Settings::default(), Arc::new(SystemClock)), keys, _dir: dir }
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

async fn raw_aes_keyring(name: &str, material: &[u8; 32]) -> aws_esdk::material_providers::types::keyring::KeyringRef {
    let mpl = mpl_client::Client::from_conf(MaterialProvidersConfig::builder().build().unwrap()).unwrap();
    mpl.create_raw_aes_keyring()
        .key_name(name)
        .key_namespace(raw_aes::NAMESPACE)
        .wrapping_key(material.to_vec())
        .wrapping_alg(AesWrappingAlg::AlgAes256GcmIv12Tag16)
        .send()
        .await
        .unwrap()
}

fn esdk(policy: EsdkCommitmentPolicy) -> esdk_client::Client {
    esdk_client::Client::from_conf(AwsEncryptionSdkConfig::builder().commitment_policy(policy).build().unwrap())
        .unwrap()
}

async fn esdk_decrypt(
    keyring: aws_esdk::material_providers::types::keyring::KeyringRef,
    ct: &[u8],
) -> (Vec<u8>, HashMap<String, String>) {
    let out = esdk(EsdkCommitmentPolicy::RequireEncryptAllowDecrypt)
        .decrypt()
        .ciphertext(ct.to_vec())
        .keyring(keyring)
        .send()
        .await
        .unwrap();
    (out.plaintext.unwrap().into_inner(), out.encryption_context.unwrap())
}

fn suite_id(s: AlgorithmSuite) -> Esdk {
    match s.id() {
        0x0478 => Esdk::AlgAes256GcmHkdfSha512CommitKey,
        0x0578 => Esdk::AlgAes256GcmHkdfSha512CommitKeyEcdsaP384,
        0x0378 => Esdk::AlgAes256GcmIv12Tag16HkdfSha384EcdsaP384,
        0x0346 => Esdk::AlgAes192GcmIv12Tag16HkdfSha384EcdsaP384,
        0x0214 => Esdk::AlgAes128GcmIv12Tag16HkdfSha256EcdsaP256,
        0x0178 => Esdk::AlgAes256GcmIv12Tag16HkdfSha256,
        0x0146 => Esdk::AlgAes192GcmIv12Tag16HkdfSha256,
        0x0114 => Esdk::AlgAes128GcmIv12Tag16HkdfSha256,
        0x0078 => Esdk::AlgAes256GcmIv12Tag16NoKdf,
        0x0046 => Esdk::AlgAes192GcmIv12Tag16NoKdf,
        _ => Esdk::AlgAes128GcmIv12Tag16NoKdf,
    }
}

const WRITE_SUITES: [AlgorithmSuite; 2] =
    [AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY, AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384];

#[tokio::test(flavor = "multi_thread")]
async fn keyhold_writes_aws_esdk_reads_with_context_and_either_region() {
    let f = fixture();
    for suite in WRITE_SUITES {
        let mut context = EncryptionContext::new();
        context.insert("table", "users");
        let params = EncryptParams {
            tenant: TenantId::parse("acme").unwrap(),
            purpose: Purpose::parse("billing").unwrap(),
            keys: f.keys.iter().map(|(k, _)| k.clone()).collect(),
            context,
            suite,
            generation: 0,
        };
        for len in SIZES {
            let pt = plaintext(len);
            let ct = f.service.encrypt(&params, &pt).await.unwrap();
            // Each region's wrapping key alone decrypts it.
            for (key, material) in &f.keys {
                let keyring = raw_aes_keyring(&format!("{key}:1"), material).await;
                let (got, ctx) = esdk_decrypt(keyring, &ct).await;
                assert_eq!(got, pt, "suite {suite} len {len} key {key}");
                assert_eq!(ctx.get("tenant").map(String::as_str), Some("acme"));
                assert_eq!(ctx.get("table").map(String::as_str), Some("users"));
            }
        }
    }
}

/// keyhold's envelope with the local provider's encrypted-data-key format and an empty
/// encryption context, at several frame lengths.
#[tokio::test(flavor = "multi_thread")]
async fn keyhold_writes_aws_esdk_reads_without_context() {
    let material = [0x33u8; 32];
    let rng = SystemRandom::new();
    for suite in WRITE_SUITES {
        for frame in [1u32, 100, 4096] {
            let dk = DataKey::from_slice(&[0x44; 32]);
            let mut ctx = EncryptionContext::new();
            let signing = suite.is_signing().then(|| SigningKey::generate(suite).unwrap());
            if let Some(k) = &signing {
                ctx.insert(PUBLIC_KEY_CONTEXT_KEY, k.public_key());
            }
            let edk = raw_aes::wrap("interop-key", &DataKey::from_slice(&material), &dk, &ctx, &rng).unwrap();
            let m = EncryptionMaterials::new(suite, dk, ctx, vec![edk], signing).unwrap();
            for len in [0usize, 1, frame as usize, 3 * frame as usize, 1000] {
                let pt = plaintext(len);
                let ct = keyhold_envelope::encrypt(&m, &EncryptConfig { frame_length: frame }, &rng, &pt).unwrap();
                let (got, ctx) = esdk_decrypt(raw_aes_keyring("interop-key", &material).await, &ct).await;
                assert_eq!(got, pt, "suite {suite} frame {frame} len {len}");
                assert_eq!(ctx.len(), usize::from(suite.is_signing()));
            }
        }
    }
}

async fn esdk_encrypt(
    suite: AlgorithmSuite,
    keyring: aws_esdk::material_providers::types::keyring::KeyringRef,
    context: HashMap<String, String>,
    frame: i64,
    pt: &[u8],
) -> Vec<u8> {
    let policy = if suite.is_committing() {
        EsdkCommitmentPolicy::RequireEncryptRequireDecrypt
    } else {
        EsdkCommitmentPolicy::ForbidEncryptAllowDecrypt
    };
    esdk(policy)
        .encrypt()
        .plaintext(pt.to_vec())
        .keyring(keyring)
        .encryption_context(context)
        .algorithm_suite_id(suite_id(suite))
        .frame_length(frame)
        .send()
        .await
        .unwrap()
        .ciphertext
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_esdk_writes_keyhold_reads_every_suite() {
    let f = fixture();
    let (key, material) = &f.keys[0];
    let tenant = TenantId::parse("acme").unwrap();
    let context =
        HashMap::from([("tenant".to_owned(), "acme".to_owned()), ("purpose".to_owned(), "billing".to_owned())]);
    for suite in AlgorithmSuite::ALL {
        for len in SIZES {
            let pt = plaintext(len);
            let keyring = raw_aes_keyring(&format!("{key}:1"), material).await;
            let ct = esdk_encrypt(suite, keyring, context.clone(), 4096, &pt).await;
            let d = f.service.decrypt(&tenant, &ct).await.unwrap_or_else(|e| panic!("suite {suite} len {len}: {e}"));
            assert_eq!(d.plaintext, pt, "suite {suite} len {len}");
            assert_eq!(d.header.suite(), suite);
            assert_eq!(d.header.version(), suite.message_version());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_esdk_writes_keyhold_reads_without_context_and_small_frames() {
    let material = [0x55u8; 32];
    let wrapping = DataKey::from_slice(&material);
    let cfg = DecryptConfig::default();
    for suite in [
        AlgorithmSuite::default(),
        AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
        AlgorithmSuite::AES_256_GCM_HKDF_SHA384_ECDSA_P384,
    ] {
        for frame in [1i64, 100, 4096] {
            for len in [0usize, 1, frame as usize, 3 * frame as usize, 1000] {
                let pt = plaintext(len);
                let ct =
                    esdk_encrypt(suite, raw_aes_keyring("interop-key", &material).await, HashMap::new(), frame, &pt)
                        .await;
                let header = keyhold_envelope::read_header(&ct, &cfg).unwrap();
                assert_eq!(header.frame_length() as i64, frame);
                let edk = &header.encrypted_data_keys()[0];
                assert_eq!(raw_aes::key_name(&edk.provider_info).unwrap(), "interop-key");
                let dk = raw_aes::unwrap(&wrapping, edk, header.context()).unwrap();
                let d = keyhold_envelope::decrypt(header, &dk, &ct, &cfg).unwrap();
                assert_eq!(d.plaintext, pt, "suite {suite} frame {frame} len {len}");
            }
        }
    }
}
