//! End-to-end tests of the `keyhold` binary: the local-kms console, encrypt and decrypt
//! through pipes, and the errors a user sees; [`aws`] runs it against moto.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod aws;
mod server;

fn keyhold(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    keyhold_env(dir, args, stdin, &[])
}

/// Runs `keyhold` with extra environment variables (an empty value removes the variable).
fn keyhold_env(dir: &Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyhold"));
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // A command may exit before reading everything (that is the point of some tests).
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn ok(out: Output) -> Vec<u8> {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn create_key(dir: &Path, region: &str) -> String {
    let id = String::from_utf8(ok(keyhold(dir, &["local-kms", "create-key", "--region", region], b""))).unwrap();
    assert!(id.ends_with('\n') && id.trim().starts_with("lk-") && !id.trim().contains(char::is_whitespace), "{id:?}");
    id.trim().to_owned()
}

#[test]
fn encrypt_then_decrypt_through_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (create_key(dir.path(), "eu-central-1"), create_key(dir.path(), "eu-west-1"));
    let plaintext: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let ct = ok(keyhold(
        dir.path(),
        &[
            "encrypt",
            "--key",
            &k1,
            "--key",
            &k2,
            "--tenant",
            "acme",
            "--purpose",
            "billing",
            "--context",
            "table=users",
        ],
        &plaintext,
    ));
    assert_eq!(ct[0], 2, "format version 2");
    let pt = ok(keyhold(dir.path(), &["decrypt", "--tenant", "acme"], &ct));
    assert_eq!(pt, plaintext);
    // Either region's key alone is enough.
    ok(keyhold(dir.path(), &["local-kms", "disable-key", &k1], b""));
    assert_eq!(ok(keyhold(dir.path(), &["decrypt", "--tenant", "acme"], &ct)), plaintext);
}

#[test]
fn decrypt_refuses_another_tenant_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = create_key(dir.path(), "eu-central-1");
    let ct = ok(keyhold(dir.path(), &["encrypt", "--key", &k, "--tenant", "acme", "--purpose", "p"], b"secret"));
    let out = keyhold(dir.path(), &["decrypt", "--tenant", "globex"], &ct);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "plaintext was written");
    assert!(stderr(&out).contains("belongs to tenant acme, not globex"), "{}", stderr(&out));
}

#[test]
fn disabled_and_deleted_keys_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let k = create_key(dir.path(), "eu-central-1");
    let ct = ok(keyhold(dir.path(), &["encrypt", "--key", &k, "--tenant", "acme", "--purpose", "p"], b"secret"));
    ok(keyhold(dir.path(), &["local-kms", "disable-key", &k], b""));
    for args in [&["decrypt", "--tenant", "acme"][..], &["encrypt", "--key", &k, "--tenant", "acme", "--purpose", "p"]]
    {
        let out = keyhold(dir.path(), args, &ct);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        assert!(stderr(&out).contains(&format!("key {k} is disabled")), "{}", stderr(&out));
    }
    ok(keyhold(dir.path(), &["local-kms", "enable-key", &k], b""));
    let d = String::from_utf8(ok(keyhold(dir.path(), &["local-kms", "schedule-key-deletion", &k, "--days", "7"], b"")))
        .unwrap();
    assert!(d.contains("\"KeyState\": \"PendingDeletion\"") && d.contains("DeletionDate"), "{d}");
    let out = keyhold(dir.path(), &["decrypt", "--tenant", "acme"], &ct);
    assert!(stderr(&out).contains("pending deletion"), "{}", stderr(&out));
    ok(keyhold(dir.path(), &["local-kms", "cancel-key-deletion", &k], b""));
    let d = String::from_utf8(ok(keyhold(dir.path(), &["local-kms", "describe-key", &k], b""))).unwrap();
    assert!(d.contains("\"KeyState\": \"Disabled\""), "{d}");
}

#[test]
fn rotation_and_listing() {
    let dir = tempfile::tempdir().unwrap();
    let k = create_key(dir.path(), "ap-southeast-2");
    let old = ok(keyhold(dir.path(), &["encrypt", "--key", &k, "--tenant", "t", "--purpose", "p"], b"before"));
    let d = String::from_utf8(ok(keyhold(dir.path(), &["local-kms", "rotate-key", &k], b""))).unwrap();
    assert!(d.contains("\"MaterialVersions\": 2"), "{d}");
    let new = ok(keyhold(
        dir.path(),
        &["encrypt", "--key", &k, "--tenant", "t", "--purpose", "p", "--suite", "0x0578"],
        b"after",
    ));
    assert_eq!(ok(keyhold(dir.path(), &["decrypt", "--tenant", "t"], &old)), b"before");
    assert_eq!(ok(keyhold(dir.path(), &["decrypt", "--tenant", "t"], &new)), b"after");
    let list = String::from_utf8(ok(keyhold(dir.path(), &["local-kms", "list-keys"], b""))).unwrap();
    assert!(
        list.lines().nth(1).unwrap().starts_with(&k) && list.contains("ap-southeast-2") && list.contains("Enabled"),
        "{list}"
    );
}

#[test]
fn bad_input_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let k = create_key(dir.path(), "eu-central-1");
    let cases: &[(&[&str], &[u8], &str)] = &[
        (&["decrypt", "--tenant", "acme"], b"not a message", "unsupported message format version"),
        (&["decrypt", "--tenant", "acme"], b"", "truncated"),
        (&["encrypt", "--key", &k, "--tenant", "acme", "--purpose", "p", "--context", "tenant=x"], b"", "reserved"),
        (
            &["encrypt", "--key", &k, "--tenant", "acme", "--purpose", "p", "--context", "novalue"],
            b"",
            "expected KEY=VALUE",
        ),
        (&["encrypt", "--key", &k, "--tenant", "a b", "--purpose", "p"], b"", "invalid --tenant"),
        (
            &["encrypt", "--key", &k, "--tenant", "acme", "--purpose", "p", "--suite", "0x0178"],
            b"",
            "cannot be used to encrypt",
        ),
        (&["encrypt", "--key", "lk-missing", "--tenant", "acme", "--purpose", "p"], b"", "does not exist"),
        (&["local-kms", "create-key", "--region", "EU"], b"", "invalid --region"),
        (&["local-kms", "schedule-key-deletion", &k, "--days", "3"], b"", "7 to 30 days"),
    ];
    for (args, input, expected) in cases {
        let out = keyhold(dir.path(), args, input);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
    }
    // A tampered message writes no plaintext for the tampered frame and exits 1.
    let mut ct = ok(keyhold(dir.path(), &["encrypt", "--key", &k, "--tenant", "acme", "--purpose", "p"], b"data"));
    let n = ct.len();
    ct[n - 20] ^= 1;
    let out = keyhold(dir.path(), &["decrypt", "--tenant", "acme"], &ct);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("failed authentication"), "{}", stderr(&out));
}

/// Peak resident set size of a running process in KiB (0 once it exited).
fn peak_rss_kib(pid: u32) -> u64 {
    keyhold_testkit::peak_rss_kib(pid).unwrap_or(0)
}

#[test]
fn streaming_keeps_memory_bounded() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let k = create_key(dir.path(), "eu-central-1");
    let spawn = |args: &[&str], stdin: Stdio| {
        Command::new(env!("CARGO_BIN_EXE_keyhold"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut enc = spawn(&["encrypt", "--quiet", "--key", &k, "--tenant", "t", "--purpose", "p"], Stdio::piped());
    let mut dec = spawn(&["decrypt", "--quiet", "--tenant", "t"], Stdio::from(enc.stdout.take().unwrap()));
    let total: usize = 128 << 20;
    let mut input = enc.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..(total >> 20) {
            input.write_all(&chunk).unwrap();
        }
    });
    let mut output = dec.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let (mut n, mut all_5a) = (0usize, true);
        loop {
            let r = output.read(&mut buf).unwrap();
            if r == 0 {
                break (n, all_5a);
            }
            all_5a &= buf[..r].iter().all(|&b| b == 0x5a);
            n += r;
        }
    });
    let (mut enc_peak, mut dec_peak) = (0, 0);
    while !reader.is_finished() {
        enc_peak = enc_peak.max(peak_rss_kib(enc.id()));
        dec_peak = dec_peak.max(peak_rss_kib(dec.id()));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    writer.join().unwrap();
    assert_eq!(reader.join().unwrap(), (total, true));
    assert!(enc.wait().unwrap().success() && dec.wait().unwrap().success());
    assert!(enc_peak > 0 && dec_peak > 0, "no memory reading was taken");
    // The binary's own footprint (its resident code and runtime, about 20 MiB for the debug
    // build, which links the server's telemetry stack too): the same command started and
    // left waiting on its input.
    let mut idle = spawn(&["decrypt", "--tenant", "acme", "--quiet"], Stdio::piped());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let base = peak_rss_kib(idle.id());
    let _ = idle.kill();
    let _ = idle.wait();
    assert!(base > 0, "no baseline reading was taken");
    eprintln!("peak RSS: encrypt {enc_peak} KiB, decrypt {dec_peak} KiB, footprint {base} KiB");
    // 128 MiB went through; each process grew far less than that over its footprint (about
    // 10 MiB alone, up to 16 MiB seen with the whole suite running beside it).
    let (enc_growth, dec_growth) = (enc_peak.saturating_sub(base), dec_peak.saturating_sub(base));
    assert!(
        enc_growth < 24 * 1024 && dec_growth < 24 * 1024,
        "peak RSS: encrypt {enc_peak} KiB, decrypt {dec_peak} KiB, over a footprint of {base} KiB"
    );
}

#[test]
fn policy_prints_a_policy_per_region_of_the_realm() {
    let dir = tempfile::tempdir().unwrap();
    let role = "arn:aws:iam::999988887777:role/keyhold";
    let out =
        ok(keyhold(dir.path(), &["policy", "--tenant", "acme", "--realm", "eu", "--platform-principal", role], b""));
    let all: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let regions: Vec<&String> = all.as_object().unwrap().keys().collect();
    assert_eq!(regions, ["eu-central-1", "eu-west-1"]);
    let one = ok(keyhold(
        dir.path(),
        &[
            "policy",
            "--tenant",
            "acme",
            "--realm",
            "eu",
            "--platform-principal",
            role,
            "--region",
            "eu-west-1",
            "--account",
            "111122223333",
        ],
        b"",
    ));
    let p: serde_json::Value = serde_json::from_slice(&one).unwrap();
    assert_eq!(p["Statement"][2]["Condition"]["StringEquals"]["kms:EncryptionContext:tenant"], "acme");
    assert_eq!(p["Statement"][0]["Principal"]["AWS"], "arn:aws:iam::111122223333:root");
    for (args, expected) in [
        (vec!["--realm", "mars"], "unknown realm \"mars\""),
        (vec!["--realm", "eu", "--region", "us-east-1"], "not in realm eu (eu-central-1, eu-west-1)"),
        (vec!["--realm", "eu", "--account", "12"], "not a 12-digit AWS account id"),
    ] {
        let mut full = vec!["policy", "--tenant", "acme", "--platform-principal", role];
        full.extend(args);
        let out = keyhold(dir.path(), &full, b"");
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
    }
}

#[test]
fn template_prints_cloudformation() {
    let dir = tempfile::tempdir().unwrap();
    let role = "arn:aws:iam::999988887777:role/keyhold";
    let common = ["--tenant", "acme", "--realm", "us", "--platform-principal", role];
    let mut args = vec!["template", "--kind", "cmk"];
    args.extend(common);
    let cmk: serde_json::Value = serde_json::from_slice(&ok(keyhold(dir.path(), &args, b""))).unwrap();
    assert_eq!(cmk["Resources"]["Key"]["Type"], "AWS::KMS::Key");
    let mut args = vec!["template", "--kind", "byok-role"];
    args.extend(common);
    let role_t: serde_json::Value = serde_json::from_slice(&ok(keyhold(dir.path(), &args, b""))).unwrap();
    assert!(role_t.to_string().contains(":kms:us-west-2:"));
    let out = keyhold(
        dir.path(),
        &["template", "--kind", "cmk", "--tenant", "acme", "--realm", "us", "--platform-principal", "nope"],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not an IAM principal ARN"), "{}", stderr(&out));
}

#[test]
fn validate_works_with_local_keys() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = create_key(dir.path(), "eu-central-1");
    let k2 = create_key(dir.path(), "eu-west-1");
    let args = ["validate", "--tenant", "acme", "--realm", "eu", "--key", &k1, "--key", &k2];
    let out = keyhold(dir.path(), &args, b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("tenant acme realm eu: usable (0 errors, 0 warnings)"), "{text}");
    assert!(text.contains("round trip ok"), "{text}");

    ok(keyhold(dir.path(), &["local-kms", "disable-key", &k2], b""));
    let out = keyhold(dir.path(), &[&args[..], &["--format", "json"]].concat(), b"");
    assert_eq!(out.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<&str> =
        report["keys"][1]["findings"].as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap()).collect();
    assert!(codes.contains(&"key_disabled"), "{codes:?}");
    assert_eq!(report["keys"][1]["region"], "eu-west-1");

    // A local key in a region outside the realm.
    let out = keyhold(dir.path(), &["validate", "--tenant", "acme", "--realm", "de", "--key", &k2], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[key_region_outside_realm] eu-west-1"));
}

/// `keyhold reencrypt` offline: a new message (new id) under the new keys with the old
/// one's purpose, context and suite, streamed; the old keys can then be disabled. A
/// signed message whose signature fails leaves an unfinished message no decryptor
/// accepts, and exit 1.
#[test]
fn reencrypt_offline_streams_a_new_message_under_new_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (create_key(dir.path(), "eu-central-1"), create_key(dir.path(), "eu-central-1"));
    let plaintext: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    for suite in ["0x0478", "0x0578"] {
        let args = [
            "encrypt",
            "--key",
            &old,
            "--tenant",
            "acme",
            "--purpose",
            "billing",
            "--context",
            "table=users",
            "--suite",
            suite,
        ];
        let ct = ok(keyhold(dir.path(), &args, &plaintext));
        let out = ok(keyhold(dir.path(), &["reencrypt", "--tenant", "acme", "--key", &new, "--quiet"], &ct));
        let (h_old, h_new) = (
            keyhold_envelope::read_header(&ct, &Default::default()).unwrap(),
            keyhold_envelope::read_header(&out, &Default::default()).unwrap(),
        );
        assert_ne!(h_old.message_id(), h_new.message_id());
        assert_eq!(h_old.suite(), h_new.suite());
        assert_eq!(h_new.context_value("table"), Some("users"));
        assert_eq!(h_new.context_value("purpose"), Some("billing"));
        let edks: Vec<_> = h_new.edk_refs().collect();
        assert_eq!(edks.len(), 1);
        assert!(String::from_utf8_lossy(edks[0].provider_info).contains(&new), "wrapped by the new key");
        // Another tenant's message is refused and nothing is written.
        let refused = keyhold(dir.path(), &["reencrypt", "--tenant", "globex", "--key", &new], &ct);
        assert!(!refused.status.success() && refused.stdout.is_empty());
        if suite == "0x0578" {
            // A tampered signature: exit 1, and what was written does not decrypt.
            let mut bad = ct.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            let failed = keyhold(dir.path(), &["reencrypt", "--tenant", "acme", "--key", &new, "--quiet"], &bad);
            assert!(!failed.status.success());
            assert!(!keyhold(dir.path(), &["decrypt", "--tenant", "acme"], &failed.stdout).status.success());
        }
    }
    ok(keyhold(dir.path(), &["local-kms", "disable-key", &old], b""));
    let ct = ok(keyhold(dir.path(), &["encrypt", "--key", &new, "--tenant", "acme", "--purpose", "p"], b"x"));
    let again = ok(keyhold(dir.path(), &["reencrypt", "--tenant", "acme", "--key", &new, "--quiet"], &ct));
    assert_eq!(ok(keyhold(dir.path(), &["decrypt", "--tenant", "acme"], &again)), b"x");
}
