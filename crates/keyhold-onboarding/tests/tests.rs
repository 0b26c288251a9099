//! Tests of the realm catalog, key-set checks and key policies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

mod validate;

use keyhold_core::TenantId;
use keyhold_onboarding::policy::{ACCOUNT_PLACEHOLDER, PolicyError, SID_ADMIN, SID_DESCRIBE, SID_USE};
use keyhold_onboarding::{KeySetError, PolicyParams, RealmCatalog, RealmError, key_policy};

const EU1: &str = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const EU2: &str = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";
const US1: &str = "arn:aws:kms:us-east-1:111122223333:alias/acme";

#[test]
fn builtin_catalog_matches_the_seeds() {
    let c = RealmCatalog::builtin();
    let ids: Vec<&str> = c.realms().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["eu", "us", "au", "ca", "de", "in", "jp", "kr", "sg", "uk"]);
    let regions = |id: &str| c.get(id).unwrap().regions.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>();
    assert_eq!(regions("eu"), ["eu-central-1", "eu-west-1"]);
    assert_eq!(regions("us"), ["us-east-1", "us-west-2"]);
    assert_eq!(regions("ca"), ["ca-central-1"]);
    assert_eq!(regions("de"), ["eu-central-1"]);
    assert_eq!(regions("uk"), ["eu-west-2"]);
    let err = c.get("mars").unwrap_err();
    assert!(matches!(&err, RealmError::Unknown { .. }) && err.to_string().contains("eu, us, au"), "{err}");
}

#[test]
fn catalog_can_be_replaced_and_is_checked() {
    let c =
        RealmCatalog::from_json(r#"{"realms":[{"id":"ch","name":"Switzerland","regions":["eu-central-2"]}]}"#).unwrap();
    assert_eq!(c.realms().len(), 1);
    assert!(c.get("eu").is_err());
    for bad in [
        r#"{"realms":[]}"#,
        r#"{"realms":[{"id":"x","name":"","regions":[]}]}"#,
        r#"{"realms":[{"id":"x","name":"","regions":["eu-west-1","eu-west-1"]}]}"#,
        r#"{"realms":[{"id":"x","name":"","regions":["a"]},{"id":"x","name":"","regions":["b"]}]}"#,
        r#"{"realms":[{"id":"X","name":"","regions":["eu-west-1"]}]}"#,
        "not json",
    ] {
        assert!(matches!(RealmCatalog::from_json(bad), Err(RealmError::Invalid(_))), "{bad}");
    }
}

#[test]
fn key_sets_are_checked_against_the_realm() {
    let c = RealmCatalog::builtin();
    let eu = c.get("eu").unwrap();
    // Any order in, realm order out.
    let keys = eu.check_keys(&[EU2, EU1]).unwrap();
    assert_eq!(keys[0].as_str(), EU1);
    assert_eq!(keys[1].as_str(), EU2);
    let err = eu.check_keys(&[EU1, US1]).unwrap_err();
    assert!(matches!(err, KeySetError::RegionOutsideRealm { .. }), "{err}");
    assert!(err.to_string().contains("eu-central-1, eu-west-1"), "{err}");
    let dup = EU1.replace("1234abcd-12ab", "9999abcd-12ab");
    assert!(matches!(eu.check_keys(&[EU1, &dup]).unwrap_err(), KeySetError::DuplicateRegion { .. }));
    let err = eu.check_keys(&[EU1]).unwrap_err();
    assert_eq!(err.to_string(), "realm eu needs a key in eu-west-1 too");
    let err = eu.check_keys(&[EU1, " arn:aws:kms:eu-west-1:111122223333:alias/x"]).unwrap_err();
    assert!(matches!(err, KeySetError::Arn { index: 2, .. }) && err.to_string().contains("whitespace"), "{err}");
    assert!(c.get("de").unwrap().check_keys(&[EU1]).is_ok());
}

#[test]
fn key_policy_grants_exactly_what_is_needed() {
    let tenant = TenantId::parse("acme").unwrap();
    let role = "arn:aws:iam::999988887777:role/keyhold";
    let p =
        key_policy(&PolicyParams { tenant: &tenant, platform_principal: role, tenant_account: Some("111122223333") })
            .unwrap();
    let statements = p["Statement"].as_array().unwrap();
    let sids: Vec<&str> = statements.iter().map(|s| s["Sid"].as_str().unwrap()).collect();
    assert_eq!(sids, [SID_ADMIN, SID_DESCRIBE, SID_USE]);
    assert_eq!(statements[0]["Principal"]["AWS"], "arn:aws:iam::111122223333:root");
    assert_eq!(statements[0]["Action"], "kms:*");
    assert_eq!(statements[1]["Principal"]["AWS"], role);
    assert_eq!(statements[1]["Action"], "kms:DescribeKey");
    assert!(statements[1].get("Condition").is_none());
    assert_eq!(
        statements[2]["Action"],
        serde_json::json!(["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*"])
    );
    assert_eq!(statements[2]["Condition"]["StringEquals"]["kms:EncryptionContext:tenant"], "acme");
    // Without the tenant's account, a placeholder the tenant fills in.
    let p = key_policy(&PolicyParams { tenant: &tenant, platform_principal: role, tenant_account: None }).unwrap();
    assert!(p.to_string().contains(ACCOUNT_PLACEHOLDER));
}

#[test]
fn key_policy_inputs_are_checked() {
    let tenant = TenantId::parse("acme").unwrap();
    for bad in [
        "arn:aws:kms:eu-west-1:999988887777:key/x",
        "arn:aws:iam::9999:role/k",
        "role/keyhold",
        "arn:aws:iam::999988887777:group/g",
    ] {
        let r = key_policy(&PolicyParams { tenant: &tenant, platform_principal: bad, tenant_account: None });
        assert!(matches!(r, Err(PolicyError::BadPrincipal(_))), "{bad}");
    }
    let r = key_policy(&PolicyParams {
        tenant: &tenant,
        platform_principal: "arn:aws:iam::999988887777:root",
        tenant_account: Some("12345"),
    });
    assert_eq!(r.unwrap_err(), PolicyError::BadAccount("12345".into()));
    let cn = key_policy(&PolicyParams {
        tenant: &tenant,
        platform_principal: "arn:aws-cn:iam::999988887777:role/k",
        tenant_account: Some("111122223333"),
    })
    .unwrap();
    assert_eq!(cn["Statement"][0]["Principal"]["AWS"], "arn:aws-cn:iam::111122223333:root");
}

/// The generated templates for every realm, written to `dir`.
fn write_templates(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let tenant = TenantId::parse("acme-corp").unwrap();
    let role = "arn:aws:iam::999988887777:role/keyhold";
    let mut paths = Vec::new();
    let cmk = keyhold_onboarding::cmk_template(&tenant, role).unwrap();
    let p = dir.join("cmk.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&cmk).unwrap()).unwrap();
    paths.push(p);
    for realm in RealmCatalog::builtin().realms() {
        let t = keyhold_onboarding::byok_role_template(&tenant, role, &realm.regions).unwrap();
        let p = dir.join(format!("byok-{}.json", realm.id));
        std::fs::write(&p, serde_json::to_vec_pretty(&t).unwrap()).unwrap();
        paths.push(p);
    }
    paths
}

#[test]
fn templates_carry_the_policy_and_outputs() {
    let tenant = TenantId::parse("acme").unwrap();
    let role = "arn:aws:iam::999988887777:role/keyhold";
    let cmk = keyhold_onboarding::cmk_template(&tenant, role).unwrap();
    let key = &cmk["Resources"]["Key"]["Properties"];
    assert_eq!(key["KeySpec"], "SYMMETRIC_DEFAULT");
    assert_eq!(key["KeyUsage"], "ENCRYPT_DECRYPT");
    let policy_text = key["KeyPolicy"]["Fn::Sub"].as_str().unwrap();
    let policy: serde_json::Value = serde_json::from_str(policy_text).unwrap();
    assert_eq!(policy["Statement"][0]["Principal"]["AWS"], "arn:${AWS::Partition}:iam::${AWS::AccountId}:root");
    assert_eq!(policy["Statement"][2]["Condition"]["StringEquals"]["kms:EncryptionContext:tenant"], "acme");
    assert_eq!(cmk["Outputs"]["KeyArn"]["Value"]["Fn::GetAtt"], serde_json::json!(["Key", "Arn"]));
    let eu = RealmCatalog::builtin().get("eu").unwrap().regions.clone();
    let byok = keyhold_onboarding::byok_role_template(&tenant, role, &eu).unwrap();
    let trust = &byok["Resources"]["Role"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(trust["Condition"]["StringEquals"]["sts:ExternalId"]["Ref"], "ExternalId");
    assert_eq!(byok["Parameters"]["ExternalId"]["Default"], "keyhold-acme");
    assert_eq!(byok["Parameters"]["PlatformAccountId"]["Default"], "999988887777");
    let resources =
        &byok["Resources"]["Role"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][1]["Resource"];
    assert_eq!(resources.as_array().unwrap().len(), 2);
    assert!(resources.to_string().contains(":kms:eu-west-1:"));
}

/// Every generated template passes cfn-lint. The test command installs cfn-lint (pinned,
/// in a virtualenv) and points `KEYHOLD_CFN_LINT` at it.
#[test]
fn templates_pass_cfn_lint() {
    let cfn_lint = std::env::var("KEYHOLD_CFN_LINT")
        .expect("KEYHOLD_CFN_LINT is not set: run scripts/test, which installs cfn-lint and sets it");
    let dir = tempfile::tempdir().unwrap();
    let paths = write_templates(dir.path());
    let out = std::process::Command::new(&cfn_lint).args(&paths).output().expect("cfn-lint did not start");
    assert!(
        out.status.success(),
        "cfn-lint found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // And it does fail on a broken template, so a pass means something.
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, r#"{"Resources":{"Key":{"Type":"AWS::KMS::Key","Properties":{"KeySpec":"NOPE"}}}}"#)
        .unwrap();
    let out = std::process::Command::new(&cfn_lint).arg(&broken).output().unwrap();
    assert!(!out.status.success(), "cfn-lint accepted a broken template");
}

mod analysis {
    use keyhold_core::TenantId;
    use keyhold_onboarding::{PolicyParams, Severity, analyze_key_policy, key_policy};
    use serde_json::{Value, json};

    const ROLE: &str = "arn:aws:iam::999988887777:role/keyhold";

    fn generated() -> Value {
        let tenant = TenantId::parse("acme").unwrap();
        key_policy(&PolicyParams { tenant: &tenant, platform_principal: ROLE, tenant_account: Some("111122223333") })
            .unwrap()
    }

    fn codes(policy: &Value) -> Vec<(&'static str, Severity, String)> {
        analyze_key_policy(&policy.to_string(), &TenantId::parse("acme").unwrap(), ROLE)
            .into_iter()
            .map(|f| (f.code, f.severity, f.to_string()))
            .collect()
    }

    #[test]
    fn the_generated_policy_is_clean() {
        assert!(codes(&generated()).is_empty(), "{:?}", codes(&generated()));
    }

    #[test]
    fn each_fault_is_named() {
        let mut p = generated();
        p["Statement"][2]["Action"] = json!(["kms:GenerateDataKey", "kms:Encrypt", "kms:ReEncrypt*"]);
        let found = codes(&p);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "policy_action_missing");
        assert!(
            found[0].2.contains("kms:Decrypt") && found[0].2.contains("KeyholdPlatformUsesKeyForTenant"),
            "{}",
            found[0].2
        );

        let mut p = generated();
        p["Statement"][2]["Condition"]["StringEquals"]["kms:EncryptionContext:tenant"] = json!("globex");
        let found = codes(&p);
        assert!(found.iter().all(|f| f.0 == "policy_condition_other_tenant" && f.1 == Severity::Error), "{found:?}");
        assert_eq!(found.len(), 4);

        let mut p = generated();
        p["Statement"][2].as_object_mut().unwrap().remove("Condition");
        assert!(codes(&p).iter().all(|f| f.0 == "policy_condition_missing" && f.1 == Severity::Warning));

        let mut p = generated();
        p["Statement"].as_array_mut().unwrap().push(json!({
            "Sid": "NoDecrypt", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "kms:Decrypt", "Resource": "*"
        }));
        let found = codes(&p);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0 == "policy_denies" && found[0].2.contains("\"NoDecrypt\""), "{}", found[0].2);

        let mut p = generated();
        p["Statement"][1]["Principal"]["AWS"] = json!("arn:aws:iam::999988887777:role/other");
        p["Statement"][2]["Principal"]["AWS"] = json!("arn:aws:iam::999988887777:role/other");
        assert!(codes(&p).iter().all(|f| f.0 == "policy_principal_missing"));

        let mut p = generated();
        p["Statement"].as_array_mut().unwrap().remove(0);
        assert_eq!(codes(&p).iter().map(|f| f.0).collect::<Vec<_>>(), ["policy_no_account_admin"]);

        let malformed = analyze_key_policy("{\"Statement\": [", &TenantId::parse("acme").unwrap(), ROLE);
        assert_eq!(malformed[0].code, "policy_malformed_json");
        assert!(malformed[0].message.contains("line 1"), "{}", malformed[0].message);
    }

    #[test]
    fn wildcards_and_account_principals_are_understood() {
        // One statement for everything, with the account root as principal and kms:*:
        // DescribeKey carries no encryption context, so the condition blocks it.
        let p = json!({"Statement": [
            {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "All", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999988887777:root"}, "Action": "kms:*", "Resource": "*",
             "Condition": {"StringLike": {"kms:EncryptionContext:tenant": "ac*"}}}
        ]});
        let found = codes(&p);
        assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), ["policy_condition_blocks_action"], "{found:?}");
        let p = json!({"Statement": [
            {"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": ["999988887777"]}, "Action": ["kms:Describe*", "kms:Generate*", "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*"], "Resource": "*"}
        ]});
        let found = codes(&p);
        assert!(found.iter().all(|f| f.0 == "policy_condition_missing"), "{found:?}");
        assert_eq!(found.len(), 4);
    }
}

/// Deploys `template` to the CloudFormation endpoint the test command started (moto),
/// through `scripts/cfn-deploy.py`, and returns what the stack created.
fn deploy(template: &serde_json::Value, stack: &str, region: &str) -> serde_json::Value {
    let python = std::env::var("KEYHOLD_TEST_PYTHON")
        .expect("KEYHOLD_TEST_PYTHON is not set: run scripts/test, which installs moto and starts it");
    assert!(std::env::var("AWS_ENDPOINT_URL").is_ok(), "AWS_ENDPOINT_URL is not set: run scripts/test");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("template.json");
    std::fs::write(&path, serde_json::to_vec_pretty(template).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/cfn-deploy.py");
    let out = std::process::Command::new(python).arg(script).arg(&path).arg(stack).arg(region).output().unwrap();
    assert!(out.status.success(), "deploy failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn cmk_template_deploys_to_a_usable_key_in_every_region() {
    let tenant = TenantId::parse("acme-corp").unwrap();
    let role = "arn:aws:iam::999988887777:role/keyhold";
    let template = keyhold_onboarding::cmk_template(&tenant, role).unwrap();
    let eu = RealmCatalog::builtin().get("eu").unwrap().clone();
    let mut arns = Vec::new();
    for region in &eu.regions {
        let stack = format!("keyhold-cmk-{}-{}", region, std::process::id());
        let got = deploy(&template, &stack, region.as_str());
        assert_eq!(got["status"], "CREATE_COMPLETE", "{got}");
        let arn = got["outputs"]["KeyArn"].as_str().unwrap().to_owned();
        assert_eq!(got["key"]["KeySpec"], "SYMMETRIC_DEFAULT");
        assert_eq!(got["key"]["KeyUsage"], "ENCRYPT_DECRYPT");
        assert_eq!(got["key"]["KeyState"], "Enabled");
        assert_eq!(got["key"]["Origin"], "AWS_KMS");
        assert_eq!(got["key"]["MultiRegion"], false);
        // CloudFormation turns the "true" parameter into a boolean; moto keeps the string.
        assert!(got["rotation"] == true || got["rotation"] == "true", "rotation: {}", got["rotation"]);
        assert_eq!(got["round_trip"], true);
        // The policy as deployed: the account placeholder resolved, and the analysis finds
        // nothing to fix.
        let policy = &got["key_policy"];
        let account = arn.split(':').nth(4).unwrap();
        assert_eq!(policy["Statement"][0]["Principal"]["AWS"], format!("arn:aws:iam::{account}:root"));
        let findings = keyhold_onboarding::analyze_key_policy(&policy.to_string(), &tenant, role);
        assert!(findings.is_empty(), "{findings:?}");
        arns.push(arn);
    }
    // The stack outputs are exactly what the realm check accepts.
    let refs: Vec<&str> = arns.iter().map(String::as_str).collect();
    assert_eq!(eu.check_keys(&refs).unwrap().len(), 2);
}

#[test]
fn byok_role_template_deploys_with_the_external_id() {
    let tenant = TenantId::parse("acme-corp").unwrap();
    let regions = RealmCatalog::builtin().get("uk").unwrap().regions.clone();
    let template =
        keyhold_onboarding::byok_role_template(&tenant, "arn:aws:iam::999988887777:role/keyhold", &regions).unwrap();
    let got = deploy(&template, &format!("keyhold-byok-{}", std::process::id()), "eu-west-2");
    assert_eq!(got["status"], "CREATE_COMPLETE", "{got}");
    assert_eq!(got["outputs"]["ExternalId"], "keyhold-acme-corp");
    let trust = &got["trust_policy"]["Statement"][0];
    assert_eq!(trust["Condition"]["StringEquals"]["sts:ExternalId"], "keyhold-acme-corp");
    assert_eq!(trust["Principal"]["AWS"], "arn:aws:iam::999988887777:root");
}
