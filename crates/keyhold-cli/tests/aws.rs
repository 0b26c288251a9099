//! The binary against AWS KMS (moto, through the fault proxy this test process runs):
//! `--key` ARNs for encrypt and decrypt, `AWS_ENDPOINT_URL_KMS` / `_STS` honoured, BYOK
//! role assumption with the tenant's ExternalId, and `keyhold validate` in text and JSON
//! with its exit codes.

use keyhold_testkit::{Fault, FaultProxy, Rule, create_moto_key};

use super::{keyhold_env, ok, stderr};

/// A multi-threaded runtime keeps serving the proxy while the test waits on the binary.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

fn env(proxy: &FaultProxy) -> Vec<(&'static str, String)> {
    vec![("AWS_ENDPOINT_URL_KMS", proxy.url()), ("AWS_ENDPOINT_URL_STS", proxy.url())]
}

fn run(proxy: &FaultProxy, dir: &std::path::Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let env = env(proxy);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    keyhold_env(dir, args, stdin, &env)
}

#[test]
fn encrypt_and_decrypt_with_aws_key_arns() {
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::moto());
    let home = rt.block_on(create_moto_key("eu-central-1"));
    let other = rt.block_on(create_moto_key("eu-west-1"));
    let dir = tempfile::tempdir().unwrap();
    let pt = b"customer data under the tenant's own keys".repeat(100);
    let ct = ok(run(
        &proxy,
        dir.path(),
        &["encrypt", "--key", &home, "--key", &other, "--tenant", "acme", "--purpose", "docs"],
        &pt,
    ));
    // The calls went to AWS_ENDPOINT_URL_KMS (the proxy), generate at home, wrap in the other region.
    let ops: Vec<(String, Option<String>)> = proxy.calls().into_iter().map(|c| (c.operation, c.region)).collect();
    assert_eq!(
        ops,
        [
            ("GenerateDataKey".to_owned(), Some("eu-central-1".to_owned())),
            ("Encrypt".to_owned(), Some("eu-west-1".to_owned()))
        ]
    );

    proxy.reset_calls();
    let back = ok(run(&proxy, dir.path(), &["decrypt", "--tenant", "acme", "--local-region", "eu-west-1"], &ct));
    assert_eq!(back, pt);
    let calls = proxy.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!((calls[0].operation.as_str(), calls[0].key_id.as_deref()), ("Decrypt", Some(other.as_str())));

    // The tenant disables both keys: decryption fails, says why, writes nothing.
    proxy.inject(Rule::crypto_on(&home), Fault::disabled(&home));
    proxy.inject(Rule::crypto_on(&other), Fault::disabled(&other));
    let out = run(&proxy, dir.path(), &["decrypt", "--tenant", "acme"], &ct);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("is disabled"), "{}", stderr(&out));

    // Another tenant's id is refused before any KMS call.
    proxy.reset_calls();
    let out = run(&proxy, dir.path(), &["decrypt", "--tenant", "globex"], &ct);
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(proxy.calls().is_empty());
}

#[test]
fn byok_encrypt_assumes_the_tenant_role_with_its_external_id() {
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::moto());
    let key = rt.block_on(create_moto_key("eu-central-1"));
    let dir = tempfile::tempdir().unwrap();
    let role = "arn:aws:iam::123456789012:role/keyhold-acme";
    let ct = ok(run(
        &proxy,
        dir.path(),
        &["encrypt", "--key", &key, "--tenant", "acme", "--purpose", "docs", "--assume-role", role],
        b"byok",
    ));
    let calls = proxy.calls();
    let assume = calls.iter().find(|c| c.operation == "AssumeRole").unwrap();
    assert_eq!(assume.external_id.as_deref(), Some("keyhold-acme"));
    assert_eq!(assume.role_arn.as_deref(), Some(role));
    let kms = calls.iter().find(|c| c.operation == "GenerateDataKey").unwrap();
    assert_ne!(kms.access_key_id, assume.access_key_id, "KMS is called with the role's credentials");
    let back = ok(run(&proxy, dir.path(), &["decrypt", "--tenant", "acme", "--assume-role", role], &ct));
    assert_eq!(back, b"byok");
}

#[test]
fn validate_exits_zero_when_usable_and_two_with_findings() {
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::moto());
    let home = rt.block_on(create_moto_key("eu-central-1"));
    let other = rt.block_on(create_moto_key("eu-west-1"));
    let dir = tempfile::tempdir().unwrap();
    let args = ["validate", "--tenant", "acme", "--realm", "eu", "--key", &home, "--key", &other];
    let out = run(&proxy, dir.path(), &args, b"");
    // Rotation is off on moto's new keys: warnings only, so usable.
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("tenant acme realm eu: usable (0 errors, 2 warnings)"), "{text}");
    assert!(text.contains("warning [key_rotation_off] eu-west-1"), "{text}");

    proxy.inject(Rule::op("Encrypt").on_key(&other), Fault::access_denied(&other));
    let mut json_args = args.to_vec();
    json_args.extend(["--format", "json"]);
    let out = run(&proxy, dir.path(), &json_args, b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["usable"], false);
    let finding = report["keys"][1]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "access_denied")
        .unwrap()
        .clone();
    assert_eq!(finding["severity"], "error");
    assert_eq!(finding["region"], "eu-west-1");
    assert_eq!(finding["aws_error"], "AccessDeniedException");

    // A key outside the realm and a malformed ARN: named, no AWS call needed for them.
    let out = run(
        &proxy,
        dir.path(),
        &[
            "validate",
            "--tenant",
            "acme",
            "--realm",
            "de",
            "--key",
            &other,
            "--key",
            "arn:aws:kms:eu-central-1:12:key/x",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[key_region_outside_realm] eu-west-1"), "{text}");
    assert!(text.contains("[key_arn_invalid]"), "{text}");
    assert!(text.contains("[key_region_missing] eu-central-1"), "{text}");
}

/// The standard AWS configuration is honoured: credentials and region from a named profile
/// in the shared files, the KMS endpoint from `AWS_ENDPOINT_URL_KMS`.
#[test]
fn credentials_come_from_a_named_profile() {
    let rt = runtime();
    let proxy = rt.block_on(FaultProxy::moto());
    let key = rt.block_on(create_moto_key("eu-west-1"));
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = x\n\n\
         [tenant-ops]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = y\n",
    )
    .unwrap();
    let config = dir.path().join("config");
    std::fs::write(&config, "[profile tenant-ops]\nregion = eu-west-1\n").unwrap();
    let url = proxy.url();
    let env = [
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_REGION", ""),
        ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
        ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ("AWS_PROFILE", "tenant-ops"),
        ("AWS_ENDPOINT_URL_KMS", url.as_str()),
    ];
    let args = ["encrypt", "--key", key.as_str(), "--tenant", "acme", "--purpose", "docs"];
    let ct = ok(keyhold_env(dir.path(), &args, b"profile", &env));
    let calls = proxy.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].access_key_id.as_deref(), Some("AKIAPROFILE"));
    let back = ok(keyhold_env(dir.path(), &["decrypt", "--tenant", "acme"], &ct, &env));
    assert_eq!(back, b"profile");
}
