//! The AWS KMS keyring format, both ways, against moto: keyhold's AWS provider writes
//! encrypted data keys exactly as `aws-esdk`'s KMS keyring does, so in a dual-region realm
//! a keyhold message decrypts with `aws-esdk` and either region's key alone, and a message
//! `aws-esdk` writes with a multi-keyring decrypts with keyhold through either key.

use std::collections::HashMap;
use std::sync::Arc;

use aws_esdk::material_providers::client as mpl_client;
use aws_esdk::material_providers::types::keyring::KeyringRef;
use aws_esdk::material_providers::types::material_providers_config::MaterialProvidersConfig;
use keyhold_core::{EncryptionContext, KeyRef, Purpose, Region, SystemClock, TenantId};
use keyhold_envelope::AlgorithmSuite;
use keyhold_provider::KeyProvider;
use keyhold_provider_aws::{AwsKms, AwsKmsConfig};
use keyhold_service::{EncryptParams, Keyhold, Settings};
use keyhold_testkit::{Fault, FaultProxy, Rule, create_moto_key, moto_kms, sdk_config};

use super::{WRITE_SUITES, esdk_decrypt, esdk_encrypt, plaintext};

async fn kms_keyring(arn: &str) -> KeyringRef {
    let region = arn.split(':').nth(3).unwrap();
    let mpl = mpl_client::Client::from_conf(MaterialProvidersConfig::builder().build().unwrap()).unwrap();
    mpl.create_aws_kms_keyring().kms_key_id(arn).kms_client(moto_kms(region).await).send().await.unwrap()
}

async fn realm_keys() -> [String; 2] {
    [create_moto_key("eu-central-1").await, create_moto_key("eu-west-1").await]
}

#[tokio::test(flavor = "multi_thread")]
async fn keyhold_writes_with_aws_kms_and_aws_esdk_reads_with_either_region_key() {
    let keys = realm_keys().await;
    let provider: Arc<dyn KeyProvider> = Arc::new(AwsKms::new(
        &sdk_config(&keyhold_testkit::moto_endpoint(), "eu-central-1").await,
        AwsKmsConfig::default(),
    ));
    let service = Keyhold::new(vec![provider], Settings::default(), Arc::new(SystemClock));
    let mut context = EncryptionContext::new();
    context.insert("table", "users");
    for suite in WRITE_SUITES {
        let params = EncryptParams {
            tenant: TenantId::parse("acme").unwrap(),
            purpose: Purpose::parse("billing").unwrap(),
            keys: keys.iter().map(|k| KeyRef::parse(k).unwrap()).collect(),
            context: context.clone(),
            suite,
            generation: 0,
        };
        for len in [0usize, 1, 4096, 10_000] {
            let pt = plaintext(len);
            let ct = service.encrypt(&params, &pt).await.unwrap();
            for key in &keys {
                let (got, ctx) = esdk_decrypt(kms_keyring(key).await, &ct).await;
                assert_eq!(got, pt, "suite {suite} len {len} key {key}");
                assert_eq!(ctx.get("tenant").map(String::as_str), Some("acme"));
                assert_eq!(ctx.get("purpose").map(String::as_str), Some("billing"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_esdk_writes_with_a_kms_multi_keyring_and_keyhold_reads_with_either_key() {
    let keys = realm_keys().await;
    let mpl = mpl_client::Client::from_conf(MaterialProvidersConfig::builder().build().unwrap()).unwrap();
    let keyring = mpl
        .create_multi_keyring()
        .generator(kms_keyring(&keys[0]).await)
        .child_keyrings(vec![kms_keyring(&keys[1]).await])
        .send()
        .await
        .unwrap();
    let context =
        HashMap::from([("tenant".to_owned(), "acme".to_owned()), ("purpose".to_owned(), "billing".to_owned())]);
    let pt = plaintext(5000);
    let mut messages = Vec::new();
    for suite in
        [AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY, AlgorithmSuite::AES_256_GCM_HKDF_SHA384_ECDSA_P384]
    {
        messages.push(esdk_encrypt(suite, keyring.clone(), context.clone(), 4096, &pt).await);
    }

    let proxy = FaultProxy::moto().await;
    let provider: Arc<dyn KeyProvider> =
        Arc::new(AwsKms::new(&sdk_config(&proxy.url(), "eu-central-1").await, AwsKmsConfig::default()));
    let tenant = TenantId::parse("acme").unwrap();
    // Each region's key alone: the other refuses as a disabled key would.
    for (usable, refused) in [(0usize, 1usize), (1, 0)] {
        proxy.clear();
        proxy.reset_calls();
        proxy.inject(Rule::crypto_on(&keys[refused]), Fault::disabled(&keys[refused]));
        for ct in &messages {
            let service = Keyhold::new(vec![provider.clone()], Settings::default(), Arc::new(SystemClock))
                .with_local_region(Region::parse(keys[refused].split(':').nth(3).unwrap()).unwrap());
            let d = service.decrypt(&tenant, ct).await.unwrap();
            assert_eq!(d.plaintext, pt);
        }
        let served: Vec<_> =
            proxy.calls().into_iter().filter(|c| c.operation == "Decrypt" && !c.faulted).map(|c| c.key_id).collect();
        assert!(served.iter().all(|k| k.as_deref() == Some(keys[usable].as_str())), "{served:?}");
    }
}
