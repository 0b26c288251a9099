//! The AWS KMS provider against moto (started by `scripts/test`), through the
//! fault-injection proxy for what moto does not model: the conformance suite, the keyring
//! wire format, every error kind end to end, retries and timeouts, dual-region failover
//! through the service, and BYOK role assumption with ExternalId.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyhold_core::{DataKey, EncryptionContext, KeyRef, ManualClock, Purpose, Region, TenantId};
use keyhold_provider::conformance::{self, ConformanceHarness};
use keyhold_provider::{ErrorClass, KeyOrigin, KeyProvider, KeyState, ProviderError};
use keyhold_provider_aws::{AssumeRole, AwsKms, AwsKmsConfig, PROVIDER_ID};
use keyhold_service::{EncryptParams, Keyhold, Settings};
use keyhold_testkit::{Fault, FaultProxy, Rule, create_moto_key, moto_kms, sdk_config};

/// Quick timeouts and backoff so fault tests take milliseconds.
fn quick() -> AwsKmsConfig {
    AwsKmsConfig {
        connect_timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_millis(800),
        operation_timeout: Duration::from_secs(5),
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    }
}

async fn provider(proxy: &FaultProxy) -> Arc<AwsKms> {
    Arc::new(AwsKms::new(&sdk_config(&proxy.url(), "eu-central-1").await, quick()))
}

fn ctx(tenant: &str) -> EncryptionContext {
    let mut c = EncryptionContext::new();
    c.insert("tenant", tenant);
    c.insert("purpose", "tests");
    c
}

fn key_ref(arn: &str) -> KeyRef {
    KeyRef::parse(arn).unwrap()
}

fn region_of(arn: &str) -> String {
    arn.split(':').nth(3).unwrap().to_owned()
}

/// The key id of a key ARN: moto's state-changing calls take only the id.
fn key_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

struct MotoHarness {
    proxy: FaultProxy,
    provider: Arc<AwsKms>,
}

#[async_trait]
impl ConformanceHarness for MotoHarness {
    fn provider(&self) -> Arc<dyn KeyProvider> {
        self.provider.clone()
    }

    async fn create_key(&self, region: &Region) -> KeyRef {
        key_ref(&create_moto_key(region.as_str()).await)
    }

    // moto records the state (DescribeKey reports it) but does not enforce it; the proxy
    // answers crypto calls as AWS KMS does for that state.
    async fn disable(&self, key: &KeyRef) {
        moto_kms(&region_of(key.as_str())).await.disable_key().key_id(key_id(key.as_str())).send().await.unwrap();
        self.proxy.clear_key(key.as_str());
        self.proxy.inject(Rule::crypto_on(key.as_str()), Fault::disabled(key.as_str()));
    }

    async fn enable(&self, key: &KeyRef) {
        moto_kms(&region_of(key.as_str())).await.enable_key().key_id(key_id(key.as_str())).send().await.unwrap();
        self.proxy.clear_key(key.as_str());
    }

    async fn schedule_deletion(&self, key: &KeyRef) {
        let kms = moto_kms(&region_of(key.as_str())).await;
        kms.schedule_key_deletion().key_id(key_id(key.as_str())).pending_window_in_days(7).send().await.unwrap();
        self.proxy.clear_key(key.as_str());
        self.proxy.inject(Rule::crypto_on(key.as_str()), Fault::pending_deletion(key.as_str()));
    }

    async fn cancel_deletion(&self, key: &KeyRef) {
        moto_kms(&region_of(key.as_str()))
            .await
            .cancel_key_deletion()
            .key_id(key_id(key.as_str()))
            .send()
            .await
            .unwrap();
        self.proxy.clear_key(key.as_str());
        self.proxy.inject(Rule::crypto_on(key.as_str()), Fault::disabled(key.as_str()));
    }

    fn missing_key(&self) -> KeyRef {
        key_ref("arn:aws:kms:eu-central-1:123456789012:key/00000000-0000-4000-8000-000000000000")
    }
}

#[tokio::test]
async fn passes_the_conformance_suite_against_moto() {
    let proxy = FaultProxy::moto().await;
    let provider = provider(&proxy).await;
    let h = MotoHarness { proxy, provider };
    conformance::run_all(&h).await.unwrap();
}

#[tokio::test]
async fn encrypted_data_keys_are_written_as_the_kms_keyring_writes_them() {
    let proxy = FaultProxy::moto().await;
    let p = provider(&proxy).await;
    let arn = create_moto_key("eu-central-1").await;
    let (dk, edk) = p.generate_data_key(&key_ref(&arn), 32, &ctx("acme")).await.unwrap();
    assert_eq!(edk.provider_id, PROVIDER_ID);
    assert_eq!(edk.provider_info, arn.as_bytes());
    // The ciphertext is KMS's CiphertextBlob: moto decrypts it directly.
    let kms = moto_kms("eu-central-1").await;
    let out = kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(edk.ciphertext.clone()))
        .encryption_context("tenant", "acme")
        .encryption_context("purpose", "tests")
        .send()
        .await
        .unwrap();
    assert!(DataKey::from_slice(out.plaintext().unwrap().as_ref()).ct_eq(&dk));
    assert_eq!(out.key_id(), Some(arn.as_str()));

    // The KMS EncryptionContext is the message's context, exactly.
    let call = proxy.calls().into_iter().find(|c| c.operation == "GenerateDataKey").unwrap();
    let sent = call.encryption_context.unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent["tenant"], "acme");
    assert_eq!(call.region.as_deref(), Some("eu-central-1"));
}

#[tokio::test]
async fn an_alias_arn_generates_and_the_key_arn_is_recorded() {
    let proxy = FaultProxy::moto().await;
    let p = provider(&proxy).await;
    let arn = create_moto_key("eu-west-1").await;
    let kms = moto_kms("eu-west-1").await;
    let name = format!("alias/keyhold-test-{}", key_id(&arn));
    kms.create_alias().alias_name(&name).target_key_id(key_id(&arn)).send().await.unwrap();
    let alias = format!("{}:{name}", arn.split(":key/").next().unwrap());
    let (dk, edk) = p.generate_data_key(&key_ref(&alias), 32, &ctx("acme")).await.unwrap();
    assert_eq!(edk.provider_info, arn.as_bytes(), "provider info is the key ARN KMS answered with");
    assert_eq!(p.key_for(&edk), Some(key_ref(&arn)));
    assert!(p.unwrap(&edk, &ctx("acme")).await.unwrap().ct_eq(&dk));
}

#[tokio::test]
async fn describe_reports_spec_usage_origin_and_state() {
    let proxy = FaultProxy::moto().await;
    let p = provider(&proxy).await;
    let arn = create_moto_key("eu-central-1").await;
    let d = p.describe(&key_ref(&arn)).await.unwrap();
    assert_eq!((d.spec.as_str(), d.usage.as_str()), ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"));
    assert_eq!(d.origin, KeyOrigin::Provider);
    assert_eq!(d.state, KeyState::Enabled);
    assert_eq!(d.region.as_str(), "eu-central-1");
    assert!(!d.multi_region);

    let kms = moto_kms("eu-central-1").await;
    let signing = kms
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap();
    let signing = signing.key_metadata().unwrap().arn().unwrap().to_owned();
    let d = p.describe(&key_ref(&signing)).await.unwrap();
    assert_eq!((d.spec.as_str(), d.usage.as_str()), ("ECC_NIST_P256", "SIGN_VERIFY"));

    kms.schedule_key_deletion().key_id(key_id(&arn)).pending_window_in_days(7).send().await.unwrap();
    let d = p.describe(&key_ref(&arn)).await.unwrap();
    assert!(matches!(d.state, KeyState::PendingDeletion { deletion_at_ms } if deletion_at_ms > d.created_ms));
}

/// Every error kind of the issue, injected by the proxy, surfaces as its provider error
/// and class, from each operation.
#[tokio::test]
async fn every_injected_error_maps_to_its_kind() {
    let proxy = FaultProxy::moto().await;
    let p = provider(&proxy).await;
    let arn = create_moto_key("eu-central-1").await;
    let key = key_ref(&arn);
    let (dk, edk) = p.generate_data_key(&key, 32, &ctx("acme")).await.unwrap();

    let cases: Vec<(Fault, ErrorClass, &str)> = vec![
        (Fault::disabled(&arn), ErrorClass::Revoked, "DisabledException"),
        (Fault::pending_deletion(&arn), ErrorClass::Revoked, "KMSInvalidStateException"),
        (
            Fault::client("KMSInvalidStateException", "key is pending import"),
            ErrorClass::Revoked,
            "KMSInvalidStateException",
        ),
        (Fault::access_denied(&arn), ErrorClass::Revoked, "AccessDeniedException"),
        (Fault::not_found(&arn), ErrorClass::Revoked, "NotFoundException"),
        (Fault::client("IncorrectKeyException", "wrong key"), ErrorClass::Misconfigured, "IncorrectKeyException"),
        (
            Fault::client("InvalidKeyUsageException", "SIGN_VERIFY key"),
            ErrorClass::Misconfigured,
            "InvalidKeyUsageException",
        ),
        (Fault::throttling(), ErrorClass::Retryable, "ThrottlingException"),
        (Fault::internal(), ErrorClass::Retryable, "KMSInternalException"),
        (
            Fault::Error { status: 503, code: "ServiceUnavailable".into(), message: "down".into() },
            ErrorClass::Retryable,
            "ServiceUnavailable",
        ),
        (Fault::Drop, ErrorClass::Retryable, "ConnectionError"),
        (Fault::Delay(Duration::from_millis(1500)), ErrorClass::Retryable, "Timeout"),
    ];
    for (fault, class, code) in cases {
        let id = proxy.inject(Rule::crypto_on(&arn), fault.clone());
        let errors = [
            ("generate", p.generate_data_key(&key, 32, &ctx("acme")).await.err()),
            ("wrap", p.wrap(&key, &dk, &ctx("acme")).await.err()),
            ("unwrap", p.unwrap(&edk, &ctx("acme")).await.err()),
        ];
        for (op, err) in errors {
            let err = err.unwrap_or_else(|| panic!("{op} succeeded despite {fault:?}"));
            assert_eq!((err.class(), err.code()), (class, code), "{op} under {fault:?}: {err}");
            let text = err.to_string();
            assert!(!text.is_empty());
        }
        proxy.remove(id);
    }
    // The specific kinds, not just the classes.
    let id = proxy.inject(Rule::crypto_on(&arn), Fault::pending_deletion(&arn));
    assert!(matches!(p.unwrap(&edk, &ctx("acme")).await, Err(ProviderError::KeyPendingDeletion { .. })));
    proxy.remove(id);
    let id = proxy.inject(Rule::crypto_on(&arn), Fault::disabled(&arn));
    assert!(matches!(p.unwrap(&edk, &ctx("acme")).await, Err(ProviderError::KeyDisabled { .. })));
    proxy.remove(id);
    // And the key works again once the faults are gone.
    assert!(p.unwrap(&edk, &ctx("acme")).await.unwrap().ct_eq(&dk));
}

#[tokio::test]
async fn transient_faults_are_retried_with_backoff_and_then_reported() {
    let proxy = FaultProxy::moto().await;
    let p = provider(&proxy).await;
    let arn = create_moto_key("eu-central-1").await;
    let key = key_ref(&arn);

    // Two throttles, then moto: the call succeeds on the third attempt.
    proxy.inject(Rule::op("GenerateDataKey").times(2), Fault::throttling());
    p.generate_data_key(&key, 32, &ctx("acme")).await.unwrap();
    assert_eq!(proxy.count("GenerateDataKey"), 3);

    // Throttled forever: max_attempts calls, then a retryable error.
    proxy.reset_calls();
    let id = proxy.inject(Rule::op("GenerateDataKey"), Fault::throttling());
    let err = p.generate_data_key(&key, 32, &ctx("acme")).await.err().unwrap();
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert_eq!(proxy.count("GenerateDataKey"), 3);
    proxy.remove(id);

    // A 500 once, then success.
    proxy.reset_calls();
    proxy.inject(Rule::op("Encrypt").times(1), Fault::internal());
    let (dk, _) = p.generate_data_key(&key, 32, &ctx("acme")).await.unwrap();
    p.wrap(&key, &dk, &ctx("acme")).await.unwrap();
    assert_eq!(proxy.count("Encrypt"), 2);

    // Revocations are not retried: one call.
    proxy.reset_calls();
    let id = proxy.inject(Rule::crypto_on(&arn), Fault::disabled(&arn));
    p.generate_data_key(&key, 32, &ctx("acme")).await.err().unwrap();
    assert_eq!(proxy.count("GenerateDataKey"), 1);
    proxy.remove(id);

    // Latency under the attempt timeout is only latency.
    proxy.inject(Rule::op("GenerateDataKey").times(1), Fault::Delay(Duration::from_millis(200)));
    p.generate_data_key(&key, 32, &ctx("acme")).await.unwrap();
}

#[tokio::test]
async fn context_mismatch_and_tampering_are_invalid_not_revoked() {
    let proxy = FaultProxy::moto().await;
    let p = provider(&proxy).await;
    let key = key_ref(&create_moto_key("eu-central-1").await);
    let (_, edk) = p.generate_data_key(&key, 32, &ctx("acme")).await.unwrap();
    let err = p.unwrap(&edk, &ctx("globex")).await.err().unwrap();
    assert!(matches!(err, ProviderError::InvalidCiphertext { .. }), "{err}");

    // An EDK naming a key in provider info that is not an ARN is not ours.
    let mut foreign = edk.clone();
    foreign.provider_info = b"not-an-arn".to_vec();
    assert_eq!(p.key_for(&foreign), None);
    foreign.provider_id = "raw-aes".into();
    assert_eq!(p.key_for(&foreign), None);
    // A malformed key reference is an invalid request, not a KMS call.
    proxy.reset_calls();
    let err = p.generate_data_key(&key_ref("arn:aws:s3:::bucket"), 32, &ctx("acme")).await.err().unwrap();
    assert_eq!(err.class(), ErrorClass::Invalid);
    assert!(proxy.calls().is_empty());
}

/// Through the service: the data key is generated in the home region and wrapped in the
/// other; decryption asks the local region first and fails over when it refuses.
#[tokio::test]
async fn dual_region_encrypt_then_local_first_decrypt_with_failover() {
    let proxy = FaultProxy::moto().await;
    let p: Arc<dyn KeyProvider> = provider(&proxy).await;
    let home = create_moto_key("eu-central-1").await;
    let other = create_moto_key("eu-west-1").await;
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let settings = Settings::default();
    let writer = Keyhold::new(vec![p.clone()], settings, clock.clone());
    let tenant = TenantId::parse("acme").unwrap();
    let params = EncryptParams {
        tenant: tenant.clone(),
        purpose: Purpose::parse("docs").unwrap(),
        keys: vec![key_ref(&home), key_ref(&other)].into(),
        context: EncryptionContext::new(),
        suite: Default::default(),
        generation: 0,
    };
    let message = writer.encrypt(&params, b"residency").await.unwrap();
    let calls = proxy.calls();
    let ops: Vec<(&str, &str)> =
        calls.iter().map(|c| (c.operation.as_str(), c.region.as_deref().unwrap_or(""))).collect();
    assert_eq!(ops, [("GenerateDataKey", "eu-central-1"), ("Encrypt", "eu-west-1")]);

    // The cache holds with AWS KMS behind it: 1,000 more messages, no further KMS call;
    // decrypting them all, one Decrypt.
    let mut more = Vec::new();
    for i in 0..1000u32 {
        more.push(writer.encrypt(&params, &i.to_be_bytes()).await.unwrap());
    }
    assert_eq!(proxy.calls().len(), 2);
    proxy.reset_calls();
    let reader = Keyhold::new(vec![p.clone()], settings, clock.clone());
    for (i, m) in more.iter().enumerate() {
        assert_eq!(reader.decrypt(&tenant, m).await.unwrap().plaintext, (i as u32).to_be_bytes());
    }
    assert_eq!(proxy.count("Decrypt"), 1);

    // A reader in eu-west-1 asks eu-west-1 first.
    proxy.reset_calls();
    proxy.reset_calls();
    let reader =
        Keyhold::new(vec![p.clone()], settings, clock.clone()).with_local_region(Region::parse("eu-west-1").unwrap());
    assert_eq!(reader.decrypt(&tenant, &message).await.unwrap().plaintext, b"residency");
    let calls = proxy.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].operation.as_str(), calls[0].key_id.as_deref()), ("Decrypt", Some(other.as_str())));

    // eu-west-1 refuses: the reader fails over to eu-central-1.
    proxy.reset_calls();
    proxy.inject(
        Rule::crypto_on(&other),
        Fault::Error { status: 500, code: "KMSInternalException".into(), message: "regional outage".into() },
    );
    let reader =
        Keyhold::new(vec![p.clone()], settings, clock.clone()).with_local_region(Region::parse("eu-west-1").unwrap());
    assert_eq!(reader.decrypt(&tenant, &message).await.unwrap().plaintext, b"residency");
    let regions: Vec<_> = proxy.calls().iter().map(|c| c.region.clone().unwrap()).collect();
    assert_eq!(regions.last().map(String::as_str), Some("eu-central-1"));
    assert!(regions.iter().take(regions.len() - 1).all(|r| r == "eu-west-1"));

    // Both refuse: the revocation is what is reported.
    proxy.inject(Rule::crypto_on(&home), Fault::disabled(&home));
    let reader = Keyhold::new(vec![p], settings, clock).with_local_region(Region::parse("eu-west-1").unwrap());
    let err = reader.decrypt(&tenant, &message).await.err().unwrap();
    assert!(
        matches!(&err, keyhold_service::ServiceError::Provider { source: ProviderError::KeyDisabled { .. }, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn byok_assumes_the_tenant_role_with_its_external_id_and_caches_credentials() {
    let proxy = FaultProxy::moto().await;
    let base = sdk_config(&proxy.url(), "eu-central-1").await;
    let role = AssumeRole {
        role_arn: "arn:aws:iam::123456789012:role/keyhold-acme".into(),
        external_id: "keyhold-acme".into(),
        session_name: "keyhold-acme".into(),
    };
    let p = AwsKms::assume_role_with(&base, &role, quick()).await;
    let key = key_ref(&create_moto_key("eu-central-1").await);
    for _ in 0..5 {
        let (dk, edk) = p.generate_data_key(&key, 32, &ctx("acme")).await.unwrap();
        assert!(p.unwrap(&edk, &ctx("acme")).await.unwrap().ct_eq(&dk));
    }
    let calls = proxy.calls();
    let assumes: Vec<_> = calls.iter().filter(|c| c.operation == "AssumeRole").collect();
    assert_eq!(assumes.len(), 1, "credentials are cached: {calls:?}");
    assert_eq!(assumes[0].external_id.as_deref(), Some("keyhold-acme"));
    assert_eq!(assumes[0].role_arn.as_deref(), Some(role.role_arn.as_str()));
    assert_eq!(assumes[0].access_key_id.as_deref(), Some("testing"), "STS is called with the platform's credentials");
    for c in calls.iter().filter(|c| c.service == "kms") {
        let akid = c.access_key_id.as_deref().unwrap();
        assert_ne!(akid, "testing", "KMS calls are signed with the assumed role's credentials");
    }

    // Credentials close to expiry are refreshed before they expire: with credentials that
    // expire in 3 s (inside the SDK's refresh window), every call assumes the role again,
    // and no KMS call is made with expired credentials.
    let proxy3 = FaultProxy::moto().await;
    proxy3.inject(
        Rule { service: Some("sts".into()), operations: vec!["AssumeRole".into()], key: None, times: None },
        Fault::CredentialsExpireIn(Duration::from_secs(3)),
    );
    let p = AwsKms::assume_role_with(&sdk_config(&proxy3.url(), "eu-central-1").await, &role, quick()).await;
    for _ in 0..3 {
        p.generate_data_key(&key, 32, &ctx("acme")).await.unwrap();
    }
    let ops: Vec<String> = proxy3.calls().into_iter().map(|c| c.operation).collect();
    assert_eq!(
        ops,
        ["AssumeRole", "GenerateDataKey", "AssumeRole", "GenerateDataKey", "AssumeRole", "GenerateDataKey"]
    );

    // The tenant removes the trust: STS refuses, and that is a revocation.
    let proxy2 = FaultProxy::moto().await;
    let base = sdk_config(&proxy2.url(), "eu-central-1").await;
    proxy2.inject(
        Rule { service: Some("sts".into()), operations: vec!["AssumeRole".into()], key: None, times: None },
        Fault::Error {
            status: 403,
            code: "AccessDenied".into(),
            message: "User is not authorized to perform: sts:AssumeRole".into(),
        },
    );
    let p = AwsKms::assume_role_with(&base, &role, quick()).await;
    let err = p.generate_data_key(&key, 32, &ctx("acme")).await.err().unwrap();
    assert!(matches!(err, ProviderError::AccessDenied { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Revoked);
    assert!(proxy2.calls().iter().all(|c| c.service == "sts"), "no KMS call without credentials");
}
