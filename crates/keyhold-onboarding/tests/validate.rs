//! The validation dry run against moto, through the fault-injection proxy for what moto
//! does not model (refusals, key states on crypto calls, unreadable policies).

use std::sync::Arc;

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use keyhold_core::TenantId;
use keyhold_onboarding::finding::Severity;
use keyhold_onboarding::{PolicyParams, RealmCatalog, Report, Validation, key_policy, validate};
use keyhold_provider::KeyProvider;
use keyhold_provider_aws::{AwsKms, AwsKmsConfig};
use keyhold_testkit::{Fault, FaultProxy, Rule, moto_kms, sdk_config};

const PRINCIPAL: &str = "arn:aws:iam::111122223333:role/keyhold-platform";

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn key_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

/// A key as the tenant would create it from the generated policy; rotation on or off.
async fn tenant_key(region: &str, rotation: bool) -> String {
    let policy = key_policy(&PolicyParams {
        tenant: &tenant(),
        platform_principal: PRINCIPAL,
        tenant_account: Some("123456789012"),
    })
    .unwrap()
    .to_string();
    let kms = moto_kms(region).await;
    let out = kms.create_key().key_usage(KeyUsageType::EncryptDecrypt).policy(policy).send().await.unwrap();
    let arn = out.key_metadata().unwrap().arn().unwrap().to_owned();
    if rotation {
        kms.enable_key_rotation().key_id(key_id(&arn)).send().await.unwrap();
    }
    arn
}

async fn run(proxy: &FaultProxy, realm: &str, keys: &[String]) -> Report {
    let provider: Arc<dyn KeyProvider> = Arc::new(AwsKms::new(
        &sdk_config(&proxy.url(), "eu-central-1").await,
        AwsKmsConfig { max_attempts: 2, ..AwsKmsConfig::default() },
    ));
    let catalog = RealmCatalog::builtin();
    let realm = catalog.get(realm).unwrap();
    let tenant = tenant();
    validate(&Validation { tenant: &tenant, realm, keys, platform_principal: Some(PRINCIPAL), providers: &[provider] })
        .await
}

fn codes(report: &Report) -> Vec<&'static str> {
    report.all_findings().map(|f| f.code).collect()
}

/// Regression: moto's DescribeKey omits `KeyUsage` for a key created without one, and
/// validation reported "the key's usage is , but keyhold needs ENCRYPT_DECRYPT" although
/// the live round trip succeeded.
#[tokio::test]
async fn a_key_whose_describe_omits_key_usage_is_usable() {
    let proxy = FaultProxy::moto().await;
    let policy = key_policy(&PolicyParams {
        tenant: &tenant(),
        platform_principal: PRINCIPAL,
        tenant_account: Some("123456789012"),
    })
    .unwrap()
    .to_string();
    let kms = moto_kms("eu-central-1").await;
    let arn = kms.create_key().policy(policy).send().await.unwrap().key_metadata().unwrap().arn().unwrap().to_owned();
    kms.enable_key_rotation().key_id(key_id(&arn)).send().await.unwrap();
    let report = run(&proxy, "de", &[arn]).await;
    assert!(report.usable, "{}", report.to_text());
    assert!(!codes(&report).contains(&"key_usage_wrong"), "{}", report.to_text());
    assert!(!report.to_text().contains("usage is ,"), "{}", report.to_text());
}

#[tokio::test]
async fn a_correctly_configured_dual_region_realm_is_usable_and_clean() {
    let proxy = FaultProxy::moto().await;
    let keys = [tenant_key("eu-central-1", true).await, tenant_key("eu-west-1", true).await];
    let report = run(&proxy, "eu", &keys).await;
    assert!(report.usable, "{}", report.to_text());
    assert_eq!(codes(&report), Vec::<&str>::new(), "{}", report.to_text());
    for k in &report.keys {
        assert!(k.round_trip && k.policy_analyzed);
        assert_eq!(
            (k.state, k.spec.as_deref(), k.origin, k.rotation),
            (Some("Enabled"), Some("SYMMETRIC_DEFAULT"), Some("AWS_KMS"), "enabled")
        );
    }
    // The round trip: generated in the home region, wrapped in the other, with the
    // tenant's context on every call.
    let calls = proxy.calls();
    let crypto: Vec<(&str, &str)> = calls
        .iter()
        .filter(|c| ["GenerateDataKey", "Encrypt", "Decrypt"].contains(&c.operation.as_str()))
        .map(|c| (c.operation.as_str(), c.region.as_deref().unwrap()))
        .collect();
    assert_eq!(
        crypto,
        [
            ("GenerateDataKey", "eu-central-1"),
            ("Decrypt", "eu-central-1"),
            ("Encrypt", "eu-west-1"),
            ("Decrypt", "eu-west-1")
        ]
    );
    for c in calls.iter().filter(|c| c.encryption_context.is_some()) {
        assert_eq!(c.encryption_context.as_ref().unwrap()["tenant"], "acme");
    }
    assert!(report.to_text().contains("usable (0 errors, 0 warnings)"), "{}", report.to_text());
}

#[tokio::test]
async fn arn_and_realm_faults_are_named() {
    let proxy = FaultProxy::moto().await;
    let good = tenant_key("eu-central-1", true).await;
    let us = tenant_key("us-east-1", true).await;
    let keys = [format!(" {good}"), "arn:aws:s3:::my-bucket".to_owned(), good.clone(), us.clone(), good.clone()];
    let report = run(&proxy, "eu", &keys).await;
    assert!(!report.usable);
    let c = codes(&report);
    for expected in ["key_arn_invalid", "key_region_outside_realm", "key_region_duplicate", "key_region_missing"] {
        assert!(c.contains(&expected), "{expected} missing from {c:?}");
    }
    let whitespace = report.findings.iter().find(|f| f.message.starts_with("key 1")).unwrap();
    assert!(whitespace.message.contains("whitespace at character 0"), "{whitespace}");
    let service = report.findings.iter().find(|f| f.message.starts_with("key 2")).unwrap();
    assert!(service.message.contains("s3"), "{service}");
    let outside = report.findings.iter().find(|f| f.code == "key_region_outside_realm").unwrap();
    assert_eq!(outside.region.as_deref(), Some("us-east-1"));
    assert!(outside.fix.contains("eu-central-1, eu-west-1"), "{outside}");
    let missing = report.findings.iter().find(|f| f.code == "key_region_missing").unwrap();
    assert_eq!(missing.region.as_deref(), Some("eu-west-1"));
    // The one good key was still checked live.
    assert_eq!(report.keys.len(), 1);
    assert!(report.keys[0].round_trip);
}

#[tokio::test]
async fn key_spec_usage_and_state_faults_are_named() {
    let proxy = FaultProxy::moto().await;
    let kms = moto_kms("eu-central-1").await;
    let signing = kms
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap()
        .key_metadata()
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();
    proxy.inject(
        Rule::crypto_on(&signing),
        Fault::client("InvalidKeyUsageException", "KeyUsage SIGN_VERIFY is not compatible with GenerateDataKey"),
    );
    let report = run(&proxy, "de", std::slice::from_ref(&signing)).await;
    let c = codes(&report);
    assert!(c.contains(&"key_spec_wrong") && c.contains(&"key_usage_wrong"), "{c:?}");
    let live = report.all_findings().find(|f| f.code == "key_misconfigured").unwrap();
    assert_eq!(live.aws_error.as_deref(), Some("InvalidKeyUsageException"));

    // Disabled: DescribeKey says so (moto) and the round trip is refused (proxy).
    let disabled = tenant_key("eu-central-1", true).await;
    kms.disable_key().key_id(key_id(&disabled)).send().await.unwrap();
    proxy.inject(Rule::crypto_on(&disabled), Fault::disabled(&disabled));
    let report = run(&proxy, "de", std::slice::from_ref(&disabled)).await;
    assert!(!report.usable);
    let f: Vec<_> = report.all_findings().filter(|f| f.code == "key_disabled").collect();
    assert_eq!(f.len(), 2, "{}", report.to_text());
    assert!(f.iter().any(|f| f.aws_error.as_deref() == Some("DisabledException")));
    assert!(f.iter().all(|f| f.fix.contains("enable")));

    // Pending deletion.
    let doomed = tenant_key("eu-central-1", true).await;
    kms.schedule_key_deletion().key_id(key_id(&doomed)).pending_window_in_days(7).send().await.unwrap();
    proxy.inject(Rule::crypto_on(&doomed), Fault::pending_deletion(&doomed));
    let report = run(&proxy, "de", std::slice::from_ref(&doomed)).await;
    let f = report.all_findings().find(|f| f.aws_error.as_deref() == Some("KMSInvalidStateException")).unwrap();
    assert_eq!(f.code, "key_pending_deletion");
    assert!(f.fix.contains("cancel"));

    // A key that does not exist.
    let missing = doomed.replace(key_id(&doomed), "00000000-0000-4000-8000-000000000000");
    let report = run(&proxy, "de", &[missing]).await;
    let f = report.all_findings().find(|f| f.code == "key_not_found").unwrap();
    assert_eq!(f.aws_error.as_deref(), Some("NotFoundException"));
}

#[tokio::test]
async fn refusals_rotation_and_parity_are_reported_per_region() {
    let proxy = FaultProxy::moto().await;
    let home = tenant_key("eu-central-1", false).await;
    let other = tenant_key("eu-west-1", true).await;
    // The eu-west-1 key policy does not let the platform Encrypt (as AWS would refuse).
    proxy.inject(Rule::op("Encrypt").on_key(&other), Fault::access_denied(&other));
    let report = run(&proxy, "eu", &[other.clone(), home.clone()]).await;
    assert!(!report.usable);
    // Keys are reported in realm order (home first) whatever order they were given in.
    assert_eq!(report.keys[0].region, "eu-central-1");
    let rotation = report.keys[0].findings.iter().find(|f| f.code == "key_rotation_off").unwrap();
    assert_eq!(rotation.severity, Severity::Warning);
    assert!(rotation.fix.contains("enable-key-rotation"));
    let denied = report.keys[1].findings.iter().find(|f| f.code == "access_denied").unwrap();
    assert_eq!(denied.region.as_deref(), Some("eu-west-1"));
    assert_eq!(denied.aws_error.as_deref(), Some("AccessDeniedException"));
    assert!(denied.message.contains("Encrypt"));
    assert!(denied.fix.contains("kms:Encrypt") && denied.fix.contains("kms:EncryptionContext:tenant = acme"));
    assert!(report.findings.iter().any(|f| f.code == "parity_rotation_differs"));

    // Text and JSON carry the same findings.
    let text = report.to_text();
    assert!(text.contains("NOT usable (1 errors, 2 warnings)"), "{text}");
    assert!(text.contains("error [access_denied] eu-west-1 (AccessDeniedException)"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["usable"], false);
    assert_eq!(json["keys"][1]["findings"][0]["code"], "access_denied");
    assert_eq!(json["keys"][1]["findings"][0]["aws_error"], "AccessDeniedException");
    assert!(json["keys"][1]["findings"][0]["fix"].as_str().unwrap().ends_with(")"));
}

#[tokio::test]
async fn a_policy_missing_the_tenant_condition_is_named_by_sid_and_action() {
    let proxy = FaultProxy::moto().await;
    let mut policy = key_policy(&PolicyParams {
        tenant: &tenant(),
        platform_principal: PRINCIPAL,
        tenant_account: Some("123456789012"),
    })
    .unwrap();
    for s in policy["Statement"].as_array_mut().unwrap() {
        s.as_object_mut().unwrap().remove("Condition");
    }
    let kms = moto_kms("eu-central-1").await;
    let out = kms.create_key().key_usage(KeyUsageType::EncryptDecrypt).policy(policy.to_string()).send().await.unwrap();
    let arn = out.key_metadata().unwrap().arn().unwrap().to_owned();
    kms.enable_key_rotation().key_id(key_id(&arn)).send().await.unwrap();
    let report = run(&proxy, "de", std::slice::from_ref(&arn)).await;
    let f = report.all_findings().find(|f| f.code == "policy_condition_missing").unwrap();
    assert!(f.message.contains("kms:GenerateDataKey"), "{f}");
    assert!(f.fix.contains("KeyholdPlatformUsesKeyForTenant"), "{f}");
    assert_eq!(f.region.as_deref(), Some("eu-central-1"));

    // Where the policy and rotation status are not readable, validation says so and still
    // proves access with the round trip.
    let good = tenant_key("eu-central-1", true).await;
    proxy.inject(Rule::op("GetKeyPolicy"), Fault::access_denied(&good));
    proxy.inject(Rule::op("GetKeyRotationStatus"), Fault::access_denied(&good));
    let report = run(&proxy, "de", std::slice::from_ref(&good)).await;
    assert!(report.usable, "{}", report.to_text());
    let c = codes(&report);
    assert_eq!(c, ["key_rotation_unreadable", "policy_unreadable"]);
    assert!(report.all_findings().all(|f| f.severity == Severity::Info));
    assert_eq!(report.keys[0].rotation, "unknown");
    assert!(!report.keys[0].policy_analyzed);
}
