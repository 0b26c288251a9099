//! `keyhold serve` as a process, driven by the CLI's client commands: the README quick
//! start, configuration precedence (flags over environment over file), TLS, graceful
//! shutdown on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::json;

use super::{keyhold_env, ok, stderr};

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyhold"));
        cmd.arg("--data-dir").arg(dir).arg("serve").args(args).stdout(Stdio::piped()).stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().strip_prefix("keyhold listening on ").unwrap_or_else(|| panic!("{line:?}")).to_owned();
        Server { child, url }
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn run(dir: &Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> std::process::Output {
    keyhold_env(dir, args, stdin, env)
}

fn token(dir: &Path, who: &[&str]) -> String {
    let mut args = vec!["token"];
    args.extend(who);
    String::from_utf8(ok(run(dir, &args, b"", &[]))).unwrap().trim().to_owned()
}

/// The README's quick start, step for step.
#[test]
fn quick_start_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &["--listen", "127.0.0.1:0"], &[]);
    assert!(server.url.starts_with("http://127.0.0.1:"));
    // A fresh data dir got development credentials, readable by their owner only, and the
    // server said where.
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["admin.key", "service-keys/dev.key"] {
        let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // The log is written out every 50 ms.
    let mut log = String::new();
    for _ in 0..40 {
        log = std::fs::read_to_string(d.join("serve.log")).unwrap();
        if log.contains("admin.key") && log.contains("dev.key") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(log.contains("admin.key") && log.contains("dev.key"), "{log}");
    let k1 = String::from_utf8(ok(run(d, &["local-kms", "create-key", "--region", "eu-central-1"], b"", &[]))).unwrap();
    let k2 = String::from_utf8(ok(run(d, &["local-kms", "create-key", "--region", "eu-west-1"], b"", &[]))).unwrap();
    let admin = token(d, &["--admin"]);
    let env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", admin.as_str())];
    ok(run(d, &["tenant", "create", "--id", "acme", "--realm", "eu", "--mode", "local"], b"", &env));
    let out = run(d, &["key", "attach", "--tenant", "acme", "--region", "eu-central-1", "--key", k1.trim()], b"", &env);
    assert_eq!(out.status.code(), Some(2), "one region of two: not yet usable");
    ok(run(d, &["key", "attach", "--tenant", "acme", "--region", "eu-west-1", "--key", k2.trim()], b"", &env));
    let list = String::from_utf8(ok(run(d, &["tenant", "list"], b"", &env))).unwrap();
    assert!(list.lines().any(|l| l.starts_with("acme") && l.contains("active")), "{list}");

    let dev = token(d, &["--service", "dev"]);
    let env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", dev.as_str())];
    let canary = b"CANARY-0d9e-never-logged";
    let canary_ct = ok(run(d, &["encrypt", "--tenant", "acme", "--purpose", "billing"], canary, &env));
    assert_eq!(ok(run(d, &["decrypt", "--tenant", "acme"], &canary_ct, &env)), canary);
    let ct = ok(run(d, &["encrypt", "--tenant", "acme", "--purpose", "billing"], b"hello\n", &env));
    assert!(ct.len() > 100);
    assert_eq!(ok(run(d, &["decrypt", "--tenant", "acme"], &ct, &env)), b"hello\n");
    // The server wrote a standard message: the CLI decrypts it offline with the same keys.
    assert_eq!(ok(run(d, &["decrypt", "--tenant", "acme"], &ct, &[("KEYHOLD_URL", "")])), b"hello\n");
    // Another tenant id: refused by the server, with its error code.
    let out = run(d, &["decrypt", "--tenant", "globex"], &ct, &env);
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(stderr(&out).contains("tenant_mismatch (HTTP 403)"), "{}", stderr(&out));

    let admin = token(d, &["--admin"]);
    let env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", admin.as_str())];
    let export = String::from_utf8(ok(run(d, &["audit", "export", "--tenant", "acme"], b"", &env))).unwrap();
    assert!(export.lines().count() >= 6, "{export}");
    assert!(export.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    let verify = String::from_utf8(ok(run(d, &["audit", "verify", "--tenant", "acme"], b"", &env))).unwrap();
    assert!(verify.contains("intact"), "{verify}");
    // Offline: the export ends with a signed checkpoint, checked against the public key.
    std::fs::write(d.join("trail.jsonl"), &export).unwrap();
    let key = String::from_utf8(ok(run(d, &["audit", "public-key"], b"", &env))).unwrap();
    let trail = d.join("trail.jsonl");
    let offline =
        ok(run(d, &["audit", "verify", "--file", trail.to_str().unwrap(), "--public-key", key.trim()], b"", &[]));
    assert!(String::from_utf8_lossy(&offline).contains("intact"));
    let show = String::from_utf8(ok(run(d, &["tenant", "delete", "acme"], b"", &env))).unwrap();
    assert!(show.contains("\"deleted\""), "{show}");
    // No token: the server says so.
    let out = run(d, &["tenant", "list"], b"", &[("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", "")]);
    assert!(stderr(&out).contains("unauthenticated (HTTP 401)"), "{}", stderr(&out));
    assert!(server.stop().success(), "graceful shutdown exits 0");
    // Neither the server's log nor the audit export holds the canary plaintext.
    let log = std::fs::read(d.join("serve.log")).unwrap();
    assert!(!log.windows(canary.len()).any(|w| w == canary));
    assert!(!export.contains("CANARY"));
    assert!(String::from_utf8_lossy(&log).contains("stopped"));
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("keyhold.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nplatform_principal = \"arn:aws:iam::111111111111:role/from-file\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let policy_principal = |server: &Server| {
        let admin = token(d, &["--admin"]);
        let env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", admin.as_str())];
        let _ = run(d, &["tenant", "create", "--id", "acme", "--realm", "de", "--mode", "cmk"], b"", &env);
        // The policy names the principal the server runs with.
        let out = run(d, &["tenant", "show", "acme"], b"", &env);
        assert!(out.status.success());
        let url = format!("{}/v1/tenants/acme/key-policy?region=eu-central-1", server.url);
        let body = String::from_utf8(
            Command::new("python3")
                .args(["-c", "import sys,urllib.request as u; r=u.Request(sys.argv[1], headers={'Authorization':'Bearer '+sys.argv[2]}); print(u.urlopen(r).read().decode())", &url, &admin])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        ["from-file", "from-env", "from-flag"].into_iter().find(|p| body.contains(p)).unwrap_or("none").to_owned()
    };
    let s = Server::start(d, &["--config", config], &[]);
    assert_eq!(policy_principal(&s), "from-file");
    drop(s);
    let env = [("KEYHOLD_PLATFORM_PRINCIPAL", "arn:aws:iam::111111111111:role/from-env")];
    let s = Server::start(d, &["--config", config], &env);
    assert_eq!(policy_principal(&s), "from-env");
    drop(s);
    let s = Server::start(
        d,
        &["--config", config, "--platform-principal", "arn:aws:iam::111111111111:role/from-flag"],
        &env,
    );
    assert_eq!(policy_principal(&s), "from-flag");
}

#[test]
fn serves_tls_from_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let server = Server::start(
        d,
        &["--listen", "127.0.0.1:0", "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
        &[],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let admin = token(d, &["--admin"]);
    let env = [
        ("KEYHOLD_URL", server.url.as_str()),
        ("KEYHOLD_TOKEN", admin.as_str()),
        ("KEYHOLD_CA_CERT", cert.to_str().unwrap()),
    ];
    ok(run(d, &["tenant", "create", "--id", "acme", "--realm", "de", "--mode", "local"], b"", &env));
    // Without trusting the certificate, the client refuses the server.
    let out = run(d, &["tenant", "list"], b"", &env[..2]);
    assert!(!out.status.success());
    assert!(server.stop().success());
}

/// Services are registered with their purposes; a token of one may use only those.
#[test]
fn registered_services_are_limited_to_their_purposes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &["--listen", "127.0.0.1:0"], &[]);
    let out =
        String::from_utf8(ok(run(d, &["service", "add", "--name", "hr-app", "--purpose", "hr"], b"", &[]))).unwrap();
    assert!(out.contains("hr-app") && out.contains("service-keys/hr-app.key"), "{out}");
    let dup = run(d, &["service", "add", "--name", "hr-app", "--purpose", "hr"], b"", &[]);
    assert!(!dup.status.success() && stderr(&dup).contains("already registered"));
    let list = String::from_utf8(ok(run(d, &["service", "list"], b"", &[]))).unwrap();
    assert!(list.contains("hr-app") && list.contains("dev"), "{list}");

    let k1 = String::from_utf8(ok(run(d, &["local-kms", "create-key", "--region", "eu-central-1"], b"", &[]))).unwrap();
    let admin = token(d, &["--admin"]);
    let env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", admin.as_str())];
    ok(run(d, &["tenant", "create", "--id", "acme", "--realm", "de", "--mode", "local"], b"", &env));
    ok(run(d, &["key", "attach", "--tenant", "acme", "--region", "eu-central-1", "--key", k1.trim()], b"", &env));
    let hr = token(d, &["--service", "hr-app"]);
    let env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", hr.as_str())];
    let ct = ok(run(d, &["encrypt", "--tenant", "acme", "--purpose", "hr"], b"salary", &env));
    assert_eq!(ok(run(d, &["decrypt", "--tenant", "acme"], &ct, &env)), b"salary");
    let out = run(d, &["encrypt", "--tenant", "acme", "--purpose", "billing"], b"x", &env);
    assert!(stderr(&out).contains("forbidden (HTTP 403)"), "{}", stderr(&out));
    // A billing message cannot be decrypted by the hr service.
    let dev = token(d, &["--service", "dev"]);
    let dev_env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", dev.as_str())];
    let billing = ok(run(d, &["encrypt", "--tenant", "acme", "--purpose", "billing"], b"invoice", &dev_env));
    let out = run(d, &["decrypt", "--tenant", "acme"], &billing, &env);
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(stderr(&out).contains("may not use purpose billing"), "{}", stderr(&out));
}

/// Sets up tenant acme (realm de, one local key) on `server`; returns a dev-service env.
fn active_tenant(d: &Path, server: &Server) -> Vec<(String, String)> {
    let k = String::from_utf8(ok(run(d, &["local-kms", "create-key", "--region", "eu-central-1"], b"", &[]))).unwrap();
    let admin = token(d, &["--admin"]);
    let env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", admin.as_str())];
    ok(run(d, &["tenant", "create", "--id", "acme", "--realm", "de", "--mode", "local"], b"", &env));
    ok(run(d, &["key", "attach", "--tenant", "acme", "--region", "eu-central-1", "--key", k.trim()], b"", &env));
    vec![("KEYHOLD_URL".into(), server.url.clone()), ("KEYHOLD_TOKEN".into(), token(d, &["--service", "dev"]))]
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Finding 5: usage counts lived only in memory until their minute ended, so a `kill -9`
/// lost up to a minute of them (a third of the operations in the review). Now they are
/// written every flush interval, the current minute included: after one interval, a
/// `kill -9` loses nothing.
#[test]
fn usage_counts_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &["--listen", "127.0.0.1:0", "--usage-flush-interval-ms", "200"], &[]);
    let env = active_tenant(d, &server);
    let env = pairs(&env);
    let n = 25;
    let mut ct = Vec::new();
    for i in 0..n {
        ct = ok(run(d, &["encrypt", "--tenant", "acme", "--purpose", "billing"], format!("{i}").as_bytes(), &env));
    }
    for _ in 0..5 {
        ok(run(d, &["decrypt", "--tenant", "acme"], &ct, &env));
    }
    // Two flush intervals later, killed without a chance to flush.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = Server::start(d, &["--listen", "127.0.0.1:0"], &[]);
    let admin = token(d, &["--admin"]);
    let env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", admin.as_str())];
    let export = String::from_utf8(ok(run(d, &["audit", "export", "--tenant", "acme"], b"", &env))).unwrap();
    let (mut encrypts, mut decrypts) = (0, 0);
    for line in export.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["event"]["type"] == "usage" {
            encrypts += v["event"]["encrypts"].as_u64().unwrap();
            decrypts += v["event"]["decrypts"].as_u64().unwrap();
        }
    }
    assert_eq!((encrypts, decrypts), (n, 5), "{export}");
}

/// Findings 6 and the offline check: a tenant exports its trail (ending with a signed
/// checkpoint) and verifies it with the audit public key alone; an edited or cut export
/// fails; a trail wiped in the database fails verification by the server.
#[test]
fn a_tenant_verifies_its_export_offline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &["--listen", "127.0.0.1:0"], &[]);
    let env = active_tenant(d, &server);
    let env = pairs(&env);
    ok(run(d, &["encrypt", "--tenant", "acme", "--purpose", "billing"], b"x", &env));
    let ta = token(d, &["--tenant-admin", "acme"]);
    let env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", ta.as_str())];
    let export = ok(run(d, &["audit", "export", "--tenant", "acme"], b"", &env));
    let key = String::from_utf8(ok(run(d, &["audit", "public-key"], b"", &env))).unwrap();
    let file = d.join("export.jsonl");
    std::fs::write(&file, &export).unwrap();
    let verify = |path: &Path, key: &str| {
        run(d, &["audit", "verify", "--file", path.to_str().unwrap(), "--public-key", key], b"", &[])
    };
    let out = verify(&file, key.trim());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));
    // The key may also be given as a file: the one `serve` writes in the data dir holds
    // the same key, and `audit public-key` without a server prints it.
    let key_file = d.join("audit-signing.pub");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), key.trim());
    assert_eq!(verify(&file, key_file.to_str().unwrap()).status.code(), Some(0));
    let local = String::from_utf8(ok(run(d, &["audit", "public-key"], b"", &[("KEYHOLD_URL", "")]))).unwrap();
    assert_eq!(local.trim(), key.trim());

    let text = String::from_utf8(export).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut = d.join("cut.jsonl");
    std::fs::write(&cut, [&lines[..1], &lines[2..]].concat().join("\n")).unwrap();
    assert_eq!(verify(&cut, key.trim()).status.code(), Some(2), "an export missing an event");
    let truncated = d.join("truncated.jsonl");
    std::fs::write(&truncated, lines[..lines.len() - 1].join("\n")).unwrap();
    assert_eq!(verify(&truncated, key.trim()).status.code(), Some(2), "an export without its checkpoint");
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_eq!(verify(&file, other).status.code(), Some(2), "another key");

    // Someone with write access to the database wipes the tenant's whole trail.
    let script = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"DELETE FROM audit_events WHERE tenant_id='acme'\"); c.execute(\"DELETE FROM audit_heads WHERE tenant_id='acme'\"); c.commit()";
    let status = Command::new("python3").args(["-c", script]).arg(d.join("registry.db")).status().unwrap();
    assert!(status.success());
    let out = run(d, &["audit", "verify", "--tenant", "acme"], b"", &env);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Runs the README quick start's key uses on a server started with `args`; returns the
/// server's log after a graceful stop.
fn serve_and_use(args: &[&str], canary: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend(args);
    let server = Server::start(d, &all, &[("RUST_LOG", "")]);
    let env = active_tenant(d, &server);
    let env = pairs(&env);
    let ct =
        ok(run(d, &["encrypt", "--tenant", "acme", "--purpose", "billing", "--context", "order=42"], canary, &env));
    assert_eq!(ok(run(d, &["decrypt", "--tenant", "acme"], &ct, &env)), canary);
    let out = run(d, &["decrypt", "--tenant", "globex"], &ct, &env);
    assert!(!out.status.success());
    assert!(server.stop().success());
    std::fs::read_to_string(d.join("serve.log")).unwrap()
}

/// The plaintext canary reaches no log line at any format or level, and at the default
/// level every request has its line: request id, route, status, latency, tenant, service.
#[test]
fn logs_hold_a_line_per_request_and_never_a_plaintext_at_any_format_or_level() {
    use base64::Engine as _;
    let canary = b"CANARY-5e1f-plaintext-never-logged";
    let encoded = base64::engine::general_purpose::STANDARD.encode(canary);
    for format in ["text", "json"] {
        for level in ["error", "warn", "info", "debug", "trace"] {
            let log = serve_and_use(&["--log-format", format, "--log-level", level], canary);
            assert!(!log.contains("CANARY") && !log.contains(&encoded), "{format}/{level}: the canary was logged");
            if level == "error" || level == "warn" {
                assert!(!log.contains("keyhold starting"), "{format}/{level}: info lines at {level}");
                continue;
            }
            assert!(log.contains("keyhold starting") && log.contains("keyhold stopped"), "{format}/{level}: {log}");
            let requests: Vec<&str> =
                log.lines().filter(|l| l.contains("keyhold::request") && l.contains("/v1/encrypt")).collect();
            assert!(!requests.is_empty(), "{format}/{level}: no request line");
            let line = requests[0];
            if format == "json" {
                for l in log.lines() {
                    serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                }
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["status"], 200, "{line}");
                assert!(v["latency_us"].is_u64(), "{line}");
                assert_eq!(v["route"], "/v1/encrypt/stream", "{line}");
                assert_eq!(v["tenant"], "acme", "{line}");
                assert_eq!(v["service"], "dev", "{line}");
                assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
            } else {
                for needle in
                    ["route=/v1/encrypt/stream", "tenant=acme", "service=dev", "status=200", "latency_us=", "id="]
                {
                    assert!(line.contains(needle), "{needle} missing: {line}");
                }
            }
            // The refused cross-tenant decrypt has its line with its status.
            assert!(log.lines().any(|l| l.contains("/v1/decrypt") && l.contains("403")), "{format}/{level}");
        }
    }
}

/// Spans reach an OTLP/HTTP collector: a stand-in collector on loopback receives the
/// protobuf export posted to /v1/traces, naming the service and the request spans.
#[test]
fn traces_are_exported_over_otlp() {
    use std::io::{Read as _, Write as _};
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<(String, Vec<u8>)>();
    std::thread::spawn(move || {
        for conn in collector.incoming() {
            let Ok(mut conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                loop {
                    // One request: headers, then Content-Length bytes of body.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if conn.read_exact(&mut body).is_err() {
                        return;
                    }
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    let _ = tx.send((line, body));
                    let resp = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                    if conn.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let log = serve_and_use(&["--otlp-endpoint", &endpoint], b"otlp-test");
    assert!(log.contains(&endpoint), "the effective configuration names the collector: {log}");
    let mut posts = Vec::new();
    while let Ok(p) = rx.recv_timeout(std::time::Duration::from_secs(5)) {
        posts.push(p);
        if posts.iter().any(|(_, b)| b.windows(11).any(|w| w == b"/v1/encrypt")) {
            break;
        }
    }
    assert!(!posts.is_empty(), "no export reached the collector");
    assert!(
        posts.iter().all(|(l, _)| l.starts_with("POST /v1/traces ")),
        "{:?}",
        posts.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    let all: Vec<u8> = posts.into_iter().flat_map(|(_, b)| b).collect();
    for needle in [&b"keyhold"[..], b"request", b"/v1/encrypt", b"acme"] {
        assert!(all.windows(needle.len()).any(|w| w == needle), "{} not exported", String::from_utf8_lossy(needle));
    }
}

/// Service keys through the CLI: rotation (the previous key refused once its overlap of 0
/// ends), narrowing and removal, each enforced by the running server within its view
/// bound; `service list` shows purposes and key age.
#[test]
fn service_keys_rotate_narrow_and_are_removed_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &["--listen", "127.0.0.1:0"], &[]);
    active_tenant(d, &server);
    ok(run(d, &["service", "add", "--name", "app", "--purpose", "billing"], b"", &[]));
    let before = token(d, &["--service", "app"]);
    let use_it = |tok: &str| {
        let env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", tok)];
        run(d, &["encrypt", "--tenant", "acme", "--purpose", "billing"], b"x", &env)
    };
    // Eventually (within the 5 s view bound, polled for 7 s) the outcome turns.
    let within_bound = |tok: &str, want_ok: bool| {
        let started = std::time::Instant::now();
        loop {
            let out = use_it(tok);
            if out.status.success() == want_ok {
                return (out, started.elapsed());
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(7), "not enforced: {}", stderr(&out));
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    };
    within_bound(&before, true);
    let list = String::from_utf8(ok(run(d, &["service", "list"], b"", &[]))).unwrap();
    assert!(list.lines().any(|l| l.starts_with("app ") && l.contains("billing") && l.contains("never")), "{list}");

    let out =
        String::from_utf8(ok(run(d, &["service", "rotate", "--name", "app", "--overlap", "0s"], b"", &[]))).unwrap();
    assert!(out.contains("new key"), "{out}");
    assert!(d.join("service-keys/app.key.previous").exists());
    let after = token(d, &["--service", "app"]);
    let (out, took) = within_bound(&before, false);
    assert!(stderr(&out).contains("unauthenticated (HTTP 401)"), "{}", stderr(&out));
    assert!(took < std::time::Duration::from_secs(6), "{took:?}");
    within_bound(&after, true);

    ok(run(d, &["service", "purposes", "--name", "app", "--purpose", "hr"], b"", &[]));
    let (out, _) = within_bound(&after, false);
    assert!(stderr(&out).contains("forbidden (HTTP 403)"), "{}", stderr(&out));
    ok(run(d, &["service", "purposes", "--name", "app", "--all-purposes"], b"", &[]));
    within_bound(&after, true);

    ok(run(d, &["service", "remove", "--name", "app"], b"", &[]));
    assert!(!d.join("service-keys/app.key").exists());
    let (out, _) = within_bound(&after, false);
    assert!(stderr(&out).contains("unauthenticated (HTTP 401)"), "{}", stderr(&out));
    let list = String::from_utf8(ok(run(d, &["service", "list"], b"", &[]))).unwrap();
    assert!(!list.contains("app "), "{list}");
    assert!(server.stop().success());
}

/// A new, empty PostgreSQL database on the server the test command starts.
fn fresh_postgres(prefix: &str) -> String {
    let base = std::env::var("KEYHOLD_TEST_POSTGRES_URL")
        .expect("KEYHOLD_TEST_POSTGRES_URL is not set: run scripts/test, which starts PostgreSQL");
    let name = format!("{prefix}_{}", std::process::id());
    for sql in [format!("DROP DATABASE IF EXISTS {name}"), format!("CREATE DATABASE {name}")] {
        let status = std::process::Command::new("psql").arg(&base).args(["-q", "-c", &sql]).status().unwrap();
        assert!(status.success(), "{sql}");
    }
    format!("{}/{name}", base.rsplit_once('/').unwrap().0)
}

/// On PostgreSQL no development credentials appear: without an admin key in the
/// configuration (or --dev) the server refuses to start and says what to do; with one it
/// serves admin tokens signed by that key, and no `dev` service exists.
#[test]
fn postgres_deployments_take_their_admin_key_from_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = fresh_postgres("keyhold_cli_admin");
    let out = run(d, &["serve", "--listen", "127.0.0.1:0", "--database-url", &url], b"", &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no admin key") && stderr(&out).contains("--admin-public-key"), "{}", stderr(&out));
    assert!(!d.join("admin.key").exists() && !d.join("service-keys").exists());

    let public = String::from_utf8(ok(run(d, &["admin-key", "create"], b"", &[]))).unwrap();
    assert_eq!(String::from_utf8(ok(run(d, &["admin-key", "show"], b"", &[]))).unwrap(), public);
    let server = Server::start(
        d,
        &["--listen", "127.0.0.1:0", "--database-url", &url, "--admin-public-key", public.trim()],
        &[],
    );
    let admin = token(d, &["--admin"]);
    let env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", admin.as_str())];
    ok(run(d, &["tenant", "list"], b"", &env));
    let services = String::from_utf8(ok(run(d, &["service", "list", "--database-url", &url], b"", &[]))).unwrap();
    assert!(!services.contains("dev"), "{services}");
    assert!(!d.join("service-keys/dev.key").exists());
    assert!(server.stop().success());
}

/// An existing data dir and registry left readable by others are tightened at start, and
/// the log says so.
#[test]
fn loose_data_dir_permissions_are_tightened_at_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    std::fs::create_dir(&d).unwrap();
    let server = Server::start(&d, &["--listen", "127.0.0.1:0"], &[]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d), 0o700);
    assert_eq!(mode(&d.join("registry.db")), 0o600);
    for wal in ["registry.db-wal", "registry.db-shm"] {
        if d.join(wal).exists() {
            assert_eq!(mode(&d.join(wal)), 0o600, "{wal}");
        }
    }
    assert!(server.stop().success());
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(d.join("registry.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = Server::start(&d, &["--listen", "127.0.0.1:0"], &[]);
    assert_eq!((mode(&d), mode(&d.join("registry.db"))), (0o700, 0o600));
    assert!(server.stop().success());
    let log = std::fs::read_to_string(d.join("serve.log")).unwrap();
    assert!(log.contains("permissions tightened") && log.contains("registry.db"), "{log}");
}

/// A 1 GiB object goes through `/v1/encrypt/stream`, `/v1/decrypt/stream` and
/// `/v1/reencrypt/stream` of a `keyhold serve` process, driven by curl (an independent
/// HTTP client, chunked uploads), with the server's peak RSS under 64 MiB throughout.
/// Prints MB/s per endpoint.
#[test]
fn a_gibibyte_streams_through_each_endpoint_in_bounded_memory() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &["--listen", "127.0.0.1:0"], &[]);
    let key = |r: &str| {
        String::from_utf8(ok(run(d, &["local-kms", "create-key", "--region", r], b"", &[]))).unwrap().trim().to_owned()
    };
    let (k1, k2) = (key("eu-central-1"), key("eu-west-1"));
    let admin = token(d, &["--admin"]);
    let env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", admin.as_str())];
    ok(run(d, &["tenant", "create", "--id", "acme", "--realm", "eu", "--mode", "local"], b"", &env));
    // One region of two: exit 2 (not yet usable); the second makes the tenant active.
    run(d, &["key", "attach", "--tenant", "acme", "--region", "eu-central-1", "--key", &k1], b"", &env);
    ok(run(d, &["key", "attach", "--tenant", "acme", "--region", "eu-west-1", "--key", &k2], b"", &env));
    let dev = token(d, &["--service", "dev"]);
    // The process's own footprint once serving (the debug binary's code alone is tens
    // of MiB): streams must add little to it.
    let rss_kib = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap()
    };
    let baseline = rss_kib(server.child.id());
    const SIZE: u64 = 1 << 30;
    // curl uploads `input` (or 1 GiB of a repeating pattern from a pipe) and writes the
    // answer to `output`; returns the seconds it took.
    let curl = |path: &str, input: Option<&Path>, output: &Path| -> f64 {
        let started = std::time::Instant::now();
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--fail", "-X", "POST", "-H", "content-type: application/octet-stream"])
            .args(["-H", &format!("authorization: Bearer {dev}")])
            .args(["-H", "expect:", "-o"])
            .arg(output)
            .arg("-T")
            .arg(input.map_or("-".into(), |p| p.display().to_string()))
            .arg(format!("{}{path}", server.url))
            .stdin(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if input.is_none() {
            let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
            for _ in 0..SIZE >> 20 {
                stdin.write_all(&chunk).unwrap();
            }
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let log = std::fs::read_to_string(d.join("serve.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        assert!(out.status.success(), "curl {path}: {} / server: {tail:?}", String::from_utf8_lossy(&out.stderr));
        started.elapsed().as_secs_f64()
    };
    let (ct, pt, re, pt2) = (d.join("ct"), d.join("pt"), d.join("re"), d.join("pt2"));
    let t_enc = curl("/v1/encrypt/stream?tenant=acme&purpose=billing", None, &ct);
    assert!(std::fs::metadata(&ct).unwrap().len() > SIZE);
    let t_dec = curl("/v1/decrypt/stream?tenant=acme", Some(&ct), &pt);
    assert_eq!(std::fs::metadata(&pt).unwrap().len(), SIZE);
    // Spot checks of the plaintext: the pattern at both ends and in the middle.
    {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let mut f = std::fs::File::open(&pt).unwrap();
        for at in [0, SIZE / 2 + 12_345, SIZE - 4096] {
            let mut b = [0u8; 4096];
            f.seek(SeekFrom::Start(at)).unwrap();
            f.read_exact(&mut b).unwrap();
            for (i, v) in b.iter().enumerate() {
                assert_eq!(u64::from(*v), ((at + i as u64) % (1 << 20)) % 251, "byte {}", at + i as u64);
            }
        }
    }
    std::fs::remove_file(&pt).unwrap();
    // A new eu-west-1 key, then the object re-encrypted under it.
    let k3 = key("eu-west-1");
    ok(run(d, &["key", "attach", "--tenant", "acme", "--region", "eu-west-1", "--key", &k3], b"", &env));
    let t_re = curl("/v1/reencrypt/stream?tenant=acme", Some(&ct), &re);
    std::fs::remove_file(&ct).unwrap();
    {
        use std::io::Read as _;
        let mut b = vec![0u8; 4096];
        std::fs::File::open(&re).unwrap().read_exact(&mut b).unwrap();
        let (h, _) = keyhold_envelope::stream::read_header_from(&b[..], &Default::default()).unwrap();
        assert!(h.edk_refs().any(|e| String::from_utf8_lossy(e.provider_info).contains(&k3)), "under the new key");
    }
    let t_dec2 = curl("/v1/decrypt/stream?tenant=acme", Some(&re), &pt2);
    assert_eq!(std::fs::metadata(&pt2).unwrap().len(), SIZE);
    let peak = keyhold_testkit::peak_rss_kib(server.child.id()).unwrap();
    let mb = SIZE as f64 / 1e6;
    eprintln!(
        "1 GiB streams (debug build): encrypt {:.0} MB/s, decrypt {:.0} MB/s, reencrypt {:.0} MB/s, decrypt again \
         {:.0} MB/s; server RSS {} MiB serving, peak {} MiB",
        mb / t_enc,
        mb / t_dec,
        mb / t_re,
        mb / t_dec2,
        baseline / 1024,
        peak / 1024
    );
    assert!(peak.saturating_sub(baseline) < 32 * 1024, "1 GiB streams grew the server from {baseline} to {peak} KiB");
    assert!(server.stop().success());
}

/// `keyhold encrypt`, `decrypt` and `reencrypt` with `--url` stream through the server's
/// stream endpoints: a message already under the active keys is written back unchanged
/// from its header alone; after a key change it is re-encrypted under the new key; a
/// message that fails to authenticate midway ends the command with an error, not with a
/// complete-looking output.
#[test]
fn the_cli_streams_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &["--listen", "127.0.0.1:0"], &[]);
    let env = active_tenant(d, &server);
    let env = pairs(&env);
    let plaintext: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let ct =
        ok(run(d, &["encrypt", "--tenant", "acme", "--purpose", "billing", "--context", "doc=7"], &plaintext, &env));
    let (header, _) = keyhold_envelope::stream::read_header_from(&ct[..], &Default::default()).unwrap();
    assert_eq!(header.context_value("doc"), Some("7"));
    assert_eq!(ok(run(d, &["decrypt", "--tenant", "acme"], &ct, &env)), plaintext);

    // Under the active key already: the same bytes back, said on standard error.
    let out = run(d, &["reencrypt", "--tenant", "acme"], &ct, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, ct);
    assert!(stderr(&out).contains("written back unchanged"), "{}", stderr(&out));

    // A new key: the message is re-encrypted under it, with its context, and decrypts.
    let k2 = String::from_utf8(ok(run(d, &["local-kms", "create-key", "--region", "eu-central-1"], b"", &[]))).unwrap();
    let admin = token(d, &["--admin"]);
    let admin_env = [("KEYHOLD_URL", server.url.as_str()), ("KEYHOLD_TOKEN", admin.as_str())];
    ok(run(d, &["key", "attach", "--tenant", "acme", "--region", "eu-central-1", "--key", k2.trim()], b"", &admin_env));
    let re = ok(run(d, &["reencrypt", "--tenant", "acme"], &ct, &env));
    let (new_header, _) = keyhold_envelope::stream::read_header_from(&re[..], &Default::default()).unwrap();
    assert!(new_header.edk_refs().any(|e| String::from_utf8_lossy(e.provider_info).contains(k2.trim())));
    assert_ne!(new_header.message_id(), header.message_id());
    assert_eq!(new_header.context_value("doc"), Some("7"));
    assert_eq!(ok(run(d, &["decrypt", "--tenant", "acme"], &re, &env)), plaintext);
    let progress = ok(run(d, &["key", "progress", "--tenant", "acme"], b"", &admin_env));
    let progress: serde_json::Value = serde_json::from_slice(&progress).unwrap();
    assert_eq!(progress["reencrypted"], 1, "{progress}");

    // A corrupted last frame: both commands fail, saying the output is incomplete.
    let mut bad = ct.clone();
    let at = bad.len() - 40;
    bad[at] ^= 1;
    for args in [&["decrypt", "--tenant", "acme"][..], &["reencrypt", "--tenant", "acme"][..]] {
        let out = run(d, args, &bad, &env);
        assert!(!out.status.success(), "{args:?} succeeded on a corrupted message");
        assert!(stderr(&out).contains("incomplete"), "{args:?}: {}", stderr(&out));
        if args[0] == "decrypt" {
            assert!(out.stdout.len() < plaintext.len(), "decrypt wrote a whole answer");
        }
    }
    assert!(server.stop().success());
}

/// A stream whose client stops (after its status was sent) is closed after the idle
/// timeout, and its answer never ends as if complete; a stream whose message header does
/// not arrive gets 408 within the body timeout.
#[test]
fn a_stalled_stream_is_closed_and_never_looks_complete() {
    use std::io::{Read as _, Write as _};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &["--listen", "127.0.0.1:0", "--idle-timeout", "2", "--body-timeout", "2"], &[]);
    let env = active_tenant(d, &server);
    let token = env[1].1.clone();
    let ct = ok(run(d, &["encrypt", "--tenant", "acme", "--purpose", "billing"], &[7u8; 300_000], &pairs(&env)));
    let addr = server.url.trim_start_matches("http://").to_owned();
    let open = |first: &[u8]| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let head = format!(
            "POST /v1/decrypt/stream?tenant=acme HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            first.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(first).unwrap();
        s.write_all(b"\r\n").unwrap();
        s
    };
    let read_all = |s: &mut std::net::TcpStream| {
        let started = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    panic!(
                        "still open after {:?}: {}",
                        started.elapsed(),
                        String::from_utf8_lossy(&got[..got.len().min(200)])
                    )
                }
                Err(_) => break,
            }
        }
        (got, started.elapsed())
    };
    // Header and a first part of the body sent, then nothing: answered 200 with the
    // frames so far, then closed after the idle timeout without the terminating chunk.
    let mut s = open(&ct[..100_000]);
    let (got, took) = read_all(&mut s);
    let text = String::from_utf8_lossy(&got[..got.len().min(200)]).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!got.ends_with(b"0\r\n\r\n"), "a stalled stream ended as if complete");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(7), "closed after {took:?}");
    // Half a message header, then nothing: 408 within the body timeout.
    let mut s = open(&ct[..5]);
    let (got, took) = read_all(&mut s);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408") && text.contains("request_timeout"), "{text}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    // The server still serves.
    assert_eq!(ok(run(d, &["decrypt", "--tenant", "acme"], &ct, &pairs(&env))), vec![7u8; 300_000]);
    assert!(server.stop().success());
}

/// A JSON call through curl: the status and the answer.
fn api(url: &str, method: &str, path: &str, token: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "-H", &format!("authorization: Bearer {token}"), "-w", "\n%{http_code}"]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data", &b.to_string()]);
    }
    let out = cmd.arg(format!("{url}{path}")).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

/// The test command's Python, with the reference `standardwebhooks` verifier.
fn python() -> String {
    std::env::var("KEYHOLD_TEST_PYTHON")
        .expect("KEYHOLD_TEST_PYTHON is not set: run scripts/test, which installs the webhook verifier")
}

/// A receiver process logging to `log`, on `port` (0: any); its port.
fn receiver(log: &Path, port: u16) -> (Child, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks/receiver.py");
    let mut child =
        Command::new(python()).arg(script).arg(log).arg(port.to_string()).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    (child, line.trim().parse().unwrap())
}

/// Every logged request, verified by the reference library with each path's secrets.
fn verified(log: &Path, secrets: &serde_json::Value) -> Vec<serde_json::Value> {
    let file = log.with_extension("secrets.json");
    std::fs::write(&file, secrets.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks/verify.py");
    let out = Command::new(python()).arg(script).arg(log).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Waits up to 20 s for `done` to hold of the verified log.
fn wait_log(
    log: &Path,
    secrets: &serde_json::Value,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    for _ in 0..200 {
        if log.exists() {
            let v = verified(log, secrets);
            if done(&v) {
                return v;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the webhook log never got there: {:?}", log.exists().then(|| verified(log, secrets)));
}

/// Signed webhooks end to end, every delivery checked by the reference `standardwebhooks`
/// verifier (PyPI): a test send and a real event reach the endpoint; a flaky endpoint
/// gets the same `webhook-id` again after 500s and then the delivery; 410 disables an
/// endpoint; a rotated secret's deliveries verify under the old and the new secret; a
/// delivery queued while the receiver was down arrives after keyhold itself was killed
/// with `kill -9` and restarted.
#[test]
fn webhooks_are_signed_retried_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = ["--listen", "127.0.0.1:0", "--webhook-allow-private", "--webhook-retry-scale", "0.001"];
    let server = Server::start(d, &args, &[]);
    active_tenant(d, &server);
    let ta = token(d, &["--tenant-admin", "acme"]);
    let log = d.join("hooks.jsonl");
    let (mut rx, port) = receiver(&log, 0);
    let hook = |path: &str, events: Option<Vec<&str>>| {
        let mut body = json!({"url": format!("http://127.0.0.1:{port}{path}")});
        if let Some(e) = events {
            body["events"] = json!(e);
        }
        let (s, h) = api(&server.url, "POST", "/v1/tenants/acme/webhooks", &ta, Some(body));
        assert_eq!(s, 201, "{h}");
        assert!(h["secret"].as_str().unwrap().starts_with("whsec_"));
        h
    };
    let ok = hook("/ok", None);
    let flaky = hook("/flaky", Some(vec!["data_keys.rotated"]));
    let gone = hook("/gone", None);
    let moved = hook("/moved", Some(vec!["data_keys.rotated"]));
    let secrets = json!({
        "/ok": [ok["secret"]], "/flaky": [flaky["secret"]], "/gone": [gone["secret"]], "/moved": [moved["secret"]],
    });
    // A test send, and a real event.
    let (s, t) =
        api(&server.url, "POST", &format!("/v1/tenants/acme/webhooks/{}/test", ok["id"].as_str().unwrap()), &ta, None);
    assert_eq!(s, 202, "{t}");
    let (s, _) = api(&server.url, "POST", "/v1/tenants/acme/rotate-data-keys", &ta, None);
    assert_eq!(s, 200);
    let got = wait_log(&log, &secrets, |v| {
        v.iter().filter(|r| r["path"] == "/ok").count() >= 2
            && v.iter().any(|r| r["path"] == "/flaky" && r["status"] == 200)
            && v.iter().any(|r| r["path"] == "/gone")
            && v.iter().any(|r| r["path"] == "/moved")
    });
    for r in &got {
        let secret = secrets[r["path"].as_str().unwrap()][0].as_str().unwrap();
        assert_eq!(r["verified"][secret], true, "{r}");
        assert_eq!(r["keys"], json!(["data", "timestamp", "type"]), "{r}");
    }
    let ok_types: Vec<&str> = got.iter().filter(|r| r["path"] == "/ok").map(|r| r["type"].as_str().unwrap()).collect();
    assert!(ok_types.contains(&"webhook.test") && ok_types.contains(&"data_keys.rotated"), "{ok_types:?}");
    // The flaky endpoint: 500, 500, then 200, all three with one webhook-id.
    let flaky_seen: Vec<&serde_json::Value> = got.iter().filter(|r| r["path"] == "/flaky").collect();
    assert_eq!(flaky_seen.iter().map(|r| r["status"].as_u64().unwrap()).collect::<Vec<_>>(), [500, 500, 200]);
    assert!(flaky_seen.iter().all(|r| r["id"] == flaky_seen[0]["id"] && r["type"] == "data_keys.rotated"));
    // 410: disabled, and sent nothing more.
    let (_, g) =
        api(&server.url, "GET", &format!("/v1/tenants/acme/webhooks/{}", gone["id"].as_str().unwrap()), &ta, None);
    assert!(g["disabled_ms"].is_u64(), "{g}");
    let (_, deliveries) = api(
        &server.url,
        "GET",
        &format!("/v1/tenants/acme/webhooks/{}/deliveries", flaky["id"].as_str().unwrap()),
        &ta,
        None,
    );
    assert_eq!(deliveries["deliveries"][0]["state"], "delivered", "{deliveries}");
    assert_eq!(deliveries["attempts"].as_array().unwrap().len(), 3, "{deliveries}");
    // A redirect is not followed: the delivery stays pending, the answer logged.
    let (_, m) = api(
        &server.url,
        "GET",
        &format!("/v1/tenants/acme/webhooks/{}/deliveries", moved["id"].as_str().unwrap()),
        &ta,
        None,
    );
    assert_eq!(
        (m["deliveries"][0]["state"].as_str(), m["deliveries"][0]["last_status"].as_u64()),
        (Some("pending"), Some(307)),
        "{m}"
    );
    assert_eq!(ok_types.iter().filter(|t| **t == "data_keys.rotated").count(), 1, "the redirect was followed");

    // A rotated secret: deliveries verify under the new secret and the old one.
    let (s, rotated) = api(
        &server.url,
        "POST",
        &format!("/v1/tenants/acme/webhooks/{}/rotate-secret", ok["id"].as_str().unwrap()),
        &ta,
        None,
    );
    assert_eq!(s, 200, "{rotated}");
    assert_ne!(rotated["secret"], ok["secret"]);
    let secrets =
        json!({"/ok": [ok["secret"], rotated["secret"]], "/flaky": [flaky["secret"]], "/gone": [gone["secret"]]});
    api(&server.url, "POST", &format!("/v1/tenants/acme/webhooks/{}/test", ok["id"].as_str().unwrap()), &ta, None);
    let got = wait_log(&log, &secrets, |v| v.iter().filter(|r| r["path"] == "/ok").count() >= 3);
    let last = got.iter().rfind(|r| r["path"] == "/ok").unwrap();
    for s in secrets["/ok"].as_array().unwrap() {
        assert_eq!(last["verified"][s.as_str().unwrap()], true, "{last}");
    }
    assert_eq!(got.iter().filter(|r| r["path"] == "/gone").count(), 1, "a disabled endpoint got more");

    // Receiver down; an event queued; keyhold killed with -9 and restarted; receiver up:
    // the event arrives, verified.
    rx.kill().unwrap();
    rx.wait().unwrap();
    let before = got.len();
    let (s, _) = api(&server.url, "POST", "/v1/tenants/acme/rotate-data-keys", &ta, None);
    assert_eq!(s, 200);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut server = server;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let (mut rx, _) = receiver(&log, port);
    let server = Server::start(d, &args, &[]);
    let got = wait_log(&log, &secrets, |v| v.len() > before && v.iter().skip(before).any(|r| r["path"] == "/ok"));
    let after = got.iter().skip(before).find(|r| r["path"] == "/ok").unwrap();
    assert_eq!(after["type"], "data_keys.rotated");
    assert_eq!(after["verified"][rotated["secret"].as_str().unwrap()], true, "{after}");
    rx.kill().unwrap();
    assert!(server.stop().success());
}

/// Counts lost to a `kill -9` never let a key retire over messages that were not
/// re-encrypted: remaining messages are counted per data key (one data key's surplus of
/// re-encrypted messages never offsets another's), and the data keys of an instance that
/// died before writing its last counts stay unsettled, so the change is not complete and
/// retiring needs force. A clean shutdown settles its data keys.
#[test]
fn a_crash_never_lets_a_key_retire_over_uncounted_messages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No periodic flush: what is not flushed explicitly is lost to the kill.
    let args = ["--listen", "127.0.0.1:0", "--usage-flush-interval-ms", "600000"];
    let mut server = Server::start(d, &args, &[]);
    let env = active_tenant(d, &server);
    let admin = token(d, &["--admin"]);
    let enc = |env: &[(&str, &str)], ctx: &str, n: usize| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                ok(run(
                    d,
                    &["encrypt", "--tenant", "acme", "--purpose", "billing", "--context", ctx],
                    &[i as u8; 100],
                    env,
                ))
            })
            .collect()
    };
    let kept = enc(&pairs(&env), "run=kept", 5);
    // Looking at the keys flushes this instance's counts: the 5 are counted.
    let (s, keys) = api(&server.url, "GET", "/v1/tenants/acme/keys", &admin, None);
    assert_eq!(s, 200);
    let old = keys["keys"][0]["key_arn"].as_str().unwrap().to_owned();
    assert_eq!(keys["keys"][0]["messages"], 5, "{keys}");
    let lost = enc(&pairs(&env), "run=lost", 30);
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let server = Server::start(d, &args, &[]);
    let env = [("KEYHOLD_URL".to_owned(), server.url.clone()), ("KEYHOLD_TOKEN".to_owned(), env[1].1.clone())];
    let env = pairs(&env);
    let k2 = String::from_utf8(ok(run(d, &["local-kms", "create-key", "--region", "eu-central-1"], b"", &[]))).unwrap();
    let (s, r) =
        api(&server.url, "PUT", "/v1/tenants/acme/keys/eu-central-1", &admin, Some(json!({"key_arn": k2.trim()})));
    assert_eq!(s, 200, "{r}");
    for ct in &lost {
        ok(run(d, &["reencrypt", "--tenant", "acme"], ct, &env));
    }
    let progress = |url: &str| api(url, "GET", "/v1/tenants/acme/key-change", &admin, None).1;
    let retire = |url: &str, force: bool| {
        let path = format!(
            "/v1/tenants/acme/keys/eu-central-1/{}/retire?force={force}",
            old.replace(':', "%3A").replace('/', "%2F")
        );
        api(url, "POST", &path, &admin, None)
    };
    // 30 re-encrypted under a data key whose count was lost: they offset nothing.
    let p = progress(&server.url);
    assert_eq!((p["state"].as_str(), p["remaining"].as_u64()), (Some("in_progress"), Some(5)), "{p}");
    let (s, e) = retire(&server.url, false);
    assert_eq!((s, e["error"]["code"].as_str()), (409, Some("key_protects_data")), "{e}");
    // Every stored message re-encrypted: still unsettled (the dead instance never wrote
    // its last counts), so not complete and retiring needs force.
    let fresh: Vec<Vec<u8>> = kept.iter().map(|ct| ok(run(d, &["reencrypt", "--tenant", "acme"], ct, &env))).collect();
    let p = progress(&server.url);
    assert_eq!((p["state"].as_str(), p["remaining"].as_u64()), (Some("in_progress"), Some(0)), "{p}");
    assert_eq!(p["unsettled_data_keys"], 2, "{p}");
    let (s, e) = retire(&server.url, false);
    assert_eq!(s, 409, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("may be incomplete"), "{e}");
    let (s, r) = retire(&server.url, true);
    assert_eq!(s, 200, "{r}");
    assert_eq!(ok(run(d, &["decrypt", "--tenant", "acme"], &fresh[0], &env)), vec![0u8; 100]);

    // A clean shutdown closes its data keys: the next change completes without waiting.
    let under_k2 = enc(&env, "run=clean", 3);
    assert!(server.stop().success());
    let server = Server::start(d, &args, &[]);
    let env = [("KEYHOLD_URL".to_owned(), server.url.clone()), ("KEYHOLD_TOKEN".to_owned(), env[1].1.to_owned())];
    let k3 = String::from_utf8(ok(run(d, &["local-kms", "create-key", "--region", "eu-central-1"], b"", &[]))).unwrap();
    let (s, _) =
        api(&server.url, "PUT", "/v1/tenants/acme/keys/eu-central-1", &admin, Some(json!({"key_arn": k3.trim()})));
    assert_eq!(s, 200);
    // Under k2 (by the instance that stopped cleanly): settled at once, whatever remains.
    for ct in under_k2.iter().chain(&fresh) {
        ok(run(d, &["reencrypt", "--tenant", "acme"], ct, &pairs(&env)));
    }
    let p = progress(&server.url);
    assert_eq!(p["unsettled_data_keys"], 0, "{p}");
    assert_eq!(p["remaining"], 30, "the 30 re-encrypted earlier were not stored again: {p}");
    assert!(server.stop().success());
}
