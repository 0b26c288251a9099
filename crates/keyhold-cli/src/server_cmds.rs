//! `keyhold serve` and `keyhold token`, and the commands that talk to a running server:
//! `tenant`, `key`, `audit`, and `encrypt` / `decrypt` through `--url`.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use hyper::Method;
use keyhold_core::{Region, SystemClock};
use keyhold_server::auth::{ADMIN_ISSUER, MAX_LIFETIME_S, Scope};
use keyhold_server::conn::Limits;
use keyhold_server::devcreds;
use keyhold_server::serve::{ServeConfig, build, run, shutdown_signal};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Client, Upload, copy_answer, pump};
use crate::flags::{AdminKeyCmd, AuditCmd, ClientArgs, KeyCmd, LogFormat, ServeArgs, ServiceCmd, TenantCmd, TokenArgs};

/// The configuration file's keys (all optional; flags and the environment win).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<String>,
    database_url: Option<String>,
    tls_cert: Option<std::path::PathBuf>,
    tls_key: Option<std::path::PathBuf>,
    platform_principal: Option<String>,
    public_url: Option<String>,
    local_region: Option<String>,
    realms_file: Option<std::path::PathBuf>,
    probe_interval: Option<u64>,
    usage_flush_interval_ms: Option<u64>,
    admin_public_key: Option<String>,
    dev: Option<bool>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    otlp_endpoint: Option<String>,
    handshake_timeout: Option<u64>,
    header_timeout: Option<u64>,
    body_timeout: Option<u64>,
    idle_timeout: Option<u64>,
    max_connections: Option<usize>,
    max_in_flight: Option<usize>,
    webhook_allow_private: Option<bool>,
    webhook_retry_scale: Option<f64>,
    tenant_rate: Option<f64>,
    service_rate: Option<f64>,
    tenant_kms_budget: Option<u32>,
}

/// `--public-url`: `http(s)://host[:port]`, nothing after (a trailing `/` is dropped).
fn public_url(given: Option<String>) -> Result<Option<String>> {
    let Some(url) = given else { return Ok(None) };
    let url = url.trim_end_matches('/').to_owned();
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', '@', ' ']) => Ok(Some(url)),
        _ => bail!("--public-url must be http(s)://HOST[:PORT] (the origin clients reach keyhold at), not {url:?}"),
    }
}

/// A key given as base64 or hex, or a file holding it.
fn public_key_arg(value: &str, what: &str) -> Result<Vec<u8>> {
    let text = match std::fs::read_to_string(value) {
        Ok(t) => t.trim().to_owned(),
        Err(_) => value.to_owned(),
    };
    Ok(keyhold_audit::parse_public_key(&text).with_context(|| format!("invalid {what}"))?.to_vec())
}

/// Seconds from a flag, the file or the default; 0 is refused.
fn seconds(name: &str, value: Option<u64>, default: std::time::Duration) -> Result<std::time::Duration> {
    match value {
        Some(0) => bail!("--{name} must be at least 1 second"),
        Some(s) => Ok(std::time::Duration::from_secs(s)),
        None => Ok(default),
    }
}

/// A database URL as it may be logged: without its password (in the user info or a
/// `password=` parameter).
fn redact_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{}?{}", redact_userinfo(base), query.join("&"))
        }
        None => redact_userinfo(url),
    }
}

fn redact_userinfo(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if at > scheme.len() + 3 => {
            let userinfo = rest.get(..at - scheme.len() - 3).unwrap_or_default();
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{}", url.get(at + 1..).unwrap_or_default())
        }
        _ => url.to_owned(),
    }
}

pub fn serve(data_dir: &Path, args: ServeArgs) -> Result<()> {
    let file: ConfigFile = match &args.config {
        Some(path) => toml::from_str(
            &std::fs::read_to_string(path).with_context(|| format!("reading the configuration {}", path.display()))?,
        )
        .with_context(|| format!("parsing the configuration {}", path.display()))?,
        None => ConfigFile::default(),
    };
    let defaults = ServeConfig::embedded(data_dir);
    let listen = match args.listen.or(file.listen) {
        Some(l) => l.parse().with_context(|| format!("invalid listen address {l:?}: expected HOST:PORT"))?,
        None => defaults.listen,
    };
    let tls = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => bail!("TLS needs both a certificate and a key (--tls-cert and --tls-key)"),
    };
    let local_region = match args.local_region.or(file.local_region) {
        Some(r) => Some(Region::parse(&r).context("invalid local region")?),
        None => None,
    };
    let catalog = crate::commands::catalog(args.realms_file.or(file.realms_file).as_deref())?;
    let probe_interval = match args.probe_interval.or(file.probe_interval) {
        Some(0) => None,
        Some(s) => Some(std::time::Duration::from_secs(s)),
        None => defaults.probe_interval,
    };
    let usage_flush_interval = match args.usage_flush_interval_ms.or(file.usage_flush_interval_ms) {
        Some(0) => bail!("--usage-flush-interval-ms must be at least 1"),
        Some(ms) => std::time::Duration::from_millis(ms),
        None => defaults.usage_flush_interval,
    };
    let telemetry = keyhold_server::telemetry::Telemetry {
        format: match args.log_format.or(file.log_format) {
            Some(LogFormat::Json) => keyhold_server::telemetry::LogFormat::Json,
            Some(LogFormat::Text) | None => keyhold_server::telemetry::LogFormat::Text,
        },
        filter: args.log_level.or(file.log_level),
        otlp_endpoint: args.otlp_endpoint.or(file.otlp_endpoint).filter(|e| !e.is_empty()),
    };
    let d = Limits::default();
    let limits = Limits {
        handshake_timeout: seconds(
            "handshake-timeout",
            args.handshake_timeout.or(file.handshake_timeout),
            d.handshake_timeout,
        )?,
        header_timeout: seconds("header-timeout", args.header_timeout.or(file.header_timeout), d.header_timeout)?,
        body_timeout: seconds("body-timeout", args.body_timeout.or(file.body_timeout), d.body_timeout)?,
        idle_timeout: seconds("idle-timeout", args.idle_timeout.or(file.idle_timeout), d.idle_timeout)?,
        max_connections: match args.max_connections.or(file.max_connections) {
            Some(0) => bail!("--max-connections must be at least 1"),
            Some(n) => n,
            None => d.max_connections,
        },
        max_in_flight: match args.max_in_flight.or(file.max_in_flight) {
            Some(0) => bail!("--max-in-flight must be at least 1"),
            Some(n) => n,
            None => d.max_in_flight,
        },
    };
    let admin_public_key = match args.admin_public_key.or(file.admin_public_key) {
        Some(k) => Some(public_key_arg(&k, "admin public key")?),
        None => None,
    };
    let webhooks = keyhold_server::webhooks::WebhookConfig {
        allow_private: args.webhook_allow_private || file.webhook_allow_private.unwrap_or(false),
        retry_scale: match args.webhook_retry_scale.or(file.webhook_retry_scale) {
            Some(s) if s.is_finite() && s >= 0.0 => s,
            Some(s) => bail!("--webhook-retry-scale must be a number at least 0, not {s}"),
            None => 1.0,
        },
        ..keyhold_server::webhooks::WebhookConfig::default()
    };
    let rate = |name: &str, v: Option<f64>| -> Result<Option<f64>> {
        match v {
            Some(r) if !r.is_finite() || r < 0.0 => bail!("--{name} must be a number at least 0, not {r}"),
            Some(0.0) => Ok(None),
            other => Ok(other),
        }
    };
    let tenant_limits = keyhold_server::serve::TenantLimits {
        tenant_per_s: rate("tenant-rate", args.tenant_rate.or(file.tenant_rate))?,
        service_per_s: rate("service-rate", args.service_rate.or(file.service_rate))?,
        kms_per_minute: match args.tenant_kms_budget.or(file.tenant_kms_budget) {
            Some(0) => None,
            Some(b) => Some(b),
            None => defaults.tenant_limits.kms_per_minute,
        },
    };
    let config = ServeConfig {
        tenant_limits,
        webhooks,
        usage_flush_interval,
        database_url: args.database_url.or(file.database_url),
        listen,
        tls,
        platform_principal: args.platform_principal.or(file.platform_principal),
        public_url: public_url(args.public_url.or(file.public_url))?,
        local_region,
        probe_interval,
        limits,
        dev: args.dev || file.dev.unwrap_or(false),
        admin_public_key,
        ..defaults
    };
    let _telemetry = keyhold_server::telemetry::init(&telemetry)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let served = rt.block_on(async {
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            data_dir = %config.data_dir.display(),
            registry = %config.database_url.as_deref().map_or_else(|| "sqlite (data dir)".to_owned(), redact_url),
            listen = %config.listen,
            tls = config.tls.is_some(),
            platform_principal = config.platform_principal.as_deref().unwrap_or("none"),
            public_url = config.public_url.as_deref().unwrap_or("none (the request's Host)"),
            local_region = config.local_region.as_ref().map_or("none", |r| r.as_str()),
            probe_interval_s = config.probe_interval.map_or(0, |d| d.as_secs()),
            usage_flush_interval_ms = u64::try_from(config.usage_flush_interval.as_millis()).unwrap_or(u64::MAX),
            handshake_timeout_s = limits.handshake_timeout.as_secs(),
            header_timeout_s = limits.header_timeout.as_secs(),
            body_timeout_s = limits.body_timeout.as_secs(),
            idle_timeout_s = limits.idle_timeout.as_secs(),
            max_connections = limits.max_connections,
            max_in_flight = limits.max_in_flight,
            webhook_allow_private = config.webhooks.allow_private,
            webhook_retry_scale = config.webhooks.retry_scale,
            tenant_rate = config.tenant_limits.tenant_per_s.unwrap_or(0.0),
            service_rate = config.tenant_limits.service_per_s.unwrap_or(0.0),
            tenant_kms_budget = config.tenant_limits.kms_per_minute.unwrap_or(0),
            admin_key = if config.admin_public_key.is_some() { "configured" } else { "data dir" },
            dev_credentials = config.dev_credentials(),
            otlp_endpoint = telemetry.otlp_endpoint.as_deref().unwrap_or("none"),
            "keyhold starting"
        );
        let (state, created) = build(&config, catalog, Arc::new(SystemClock)).await?;
        if let Some(p) = &created.admin {
            tracing::info!(path = %p.display(), "created the development admin key");
        }
        if let Some(p) = &created.dev_service {
            tracing::info!(path = %p.display(), "created the development service \"dev\" (every purpose)");
        }
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        run(&config, state, shutdown_signal(), |addr| {
            println!("keyhold listening on {scheme}://{addr}");
            tracing::info!(%addr, scheme, "listening");
            if config.dev_credentials() {
                tracing::info!(
                    "tokens: keyhold --data-dir {} token --admin | --service dev",
                    config.data_dir.display()
                );
            }
            let _ = std::io::stdout().flush();
        })
        .await?;
        tracing::info!("keyhold stopped");
        Ok::<(), anyhow::Error>(())
    });
    if let Err(e) = &served {
        tracing::error!(error = format!("{e:#}"), "keyhold stopped on an error");
    }
    served
}

pub fn token(data_dir: &Path, args: TokenArgs) -> Result<()> {
    if args.lifetime == 0 || args.lifetime > MAX_LIFETIME_S {
        bail!("invalid --lifetime {}: tokens live 1 to {MAX_LIFETIME_S} seconds", args.lifetime);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let token = if let Some(service) = &args.service {
        let path = devcreds::service_key_path(data_dir, service);
        let key = devcreds::read_key(&path).with_context(|| format!("no key for service {service:?}"))?;
        key.token(service, Scope::Service, None, now, args.lifetime)
    } else {
        let key = devcreds::read_key(&devcreds::admin_key_path(data_dir))
            .context("no admin key in the data dir (run keyhold serve once to create it)")?;
        match &args.tenant_admin {
            Some(t) => key.token(ADMIN_ISSUER, Scope::TenantAdmin, Some(t), now, args.lifetime),
            None => key.token(ADMIN_ISSUER, Scope::Admin, None, now, args.lifetime),
        }
    };
    println!("{token}");
    Ok(())
}

fn rt() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")
}

fn print(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn path_segment(s: &str) -> Result<&str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        bail!("{s:?} is not a valid tenant id or region");
    }
    Ok(s)
}

/// `s` as one path segment: every byte but unreserved ones percent-encoded.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `console-link`: asks the server for a link and prints it under the URL the server was
/// reached at.
pub fn console_link(tenant: Option<String>, client: &ClientArgs) -> Result<()> {
    rt()?.block_on(async {
        let body = match &tenant {
            Some(t) => json!({ "tenant": t }),
            None => json!({}),
        };
        let link = Client::new(client)?.call(Method::POST, "/v1/console/links", Some(&body)).await?;
        let path =
            link.get("path").and_then(Value::as_str).ok_or_else(|| anyhow!("the server's answer has no path"))?;
        let base = client.url.as_deref().unwrap_or_default().trim_end_matches('/');
        println!("{base}{path}");
        Ok(())
    })
}

pub fn tenant(cmd: TenantCmd) -> Result<()> {
    rt()?.block_on(async {
        match cmd {
            TenantCmd::Create { id, realm, mode, role_arn, client } => {
                let mut body = json!({"id": id, "realm": realm, "mode": mode});
                if let (Some(arn), Some(obj)) = (role_arn, body.as_object_mut()) {
                    obj.insert("role_arn".into(), Value::String(arn));
                }
                print(&Client::new(&client)?.call(Method::POST, "/v1/tenants", Some(&body)).await?)
            }
            TenantCmd::List { client } => {
                let list = Client::new(&client)?.call(Method::GET, "/v1/tenants", None).await?;
                println!("{:<32} {:<6} {:<6} {:<10} KEYS", "TENANT", "REALM", "MODE", "STATE");
                for t in list.as_array().into_iter().flatten() {
                    println!(
                        "{:<32} {:<6} {:<6} {:<10} {}",
                        t.get("id").and_then(Value::as_str).unwrap_or_default(),
                        t.get("realm").and_then(Value::as_str).unwrap_or_default(),
                        t.get("mode").and_then(Value::as_str).unwrap_or_default(),
                        t.get("state").and_then(Value::as_str).unwrap_or_default(),
                        t.get("keys").and_then(Value::as_array).map_or(0, Vec::len)
                    );
                }
                Ok(())
            }
            TenantCmd::Show { id, client } => {
                let path = format!("/v1/tenants/{}", path_segment(&id)?);
                print(&Client::new(&client)?.call(Method::GET, &path, None).await?)
            }
            TenantCmd::Delete { id, client } => {
                let path = format!("/v1/tenants/{}", path_segment(&id)?);
                print(&Client::new(&client)?.call(Method::DELETE, &path, None).await?)
            }
        }
    })
}

/// `key attach` and `key validate` exit 0 when the key set is usable, 2 when not.
pub fn key(cmd: KeyCmd) -> Result<ExitCode> {
    rt()?.block_on(async {
        let report = match cmd {
            KeyCmd::Attach { tenant, region, key, client } => {
                let path = format!("/v1/tenants/{}/keys/{}", path_segment(&tenant)?, path_segment(&region)?);
                Client::new(&client)?.call(Method::PUT, &path, Some(&json!({"key_arn": key}))).await?
            }
            KeyCmd::Validate { tenant, client } => {
                let path = format!("/v1/tenants/{}/validate", path_segment(&tenant)?);
                Client::new(&client)?.call(Method::POST, &path, None).await?
            }
            KeyCmd::Role { tenant, role_arn, client } => {
                let path = format!("/v1/tenants/{}/role", path_segment(&tenant)?);
                let report =
                    Client::new(&client)?.call(Method::PUT, &path, Some(&json!({"role_arn": role_arn}))).await?;
                print(&report)?;
                return Ok(if report.get("changed").and_then(Value::as_bool) == Some(true) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                });
            }
            KeyCmd::List { tenant, client } => {
                let path = format!("/v1/tenants/{}/keys", path_segment(&tenant)?);
                print(&Client::new(&client)?.call(Method::GET, &path, None).await?)?;
                return Ok(ExitCode::SUCCESS);
            }
            KeyCmd::Progress { tenant, client } => {
                let path = format!("/v1/tenants/{}/key-change", path_segment(&tenant)?);
                print(&Client::new(&client)?.call(Method::GET, &path, None).await?)?;
                return Ok(ExitCode::SUCCESS);
            }
            KeyCmd::Retire { tenant, region, key, force, client } => {
                let path = format!(
                    "/v1/tenants/{}/keys/{}/{}/retire?force={force}",
                    path_segment(&tenant)?,
                    path_segment(&region)?,
                    percent_encode(&key)
                );
                print(&Client::new(&client)?.call(Method::POST, &path, None).await?)?;
                return Ok(ExitCode::SUCCESS);
            }
            KeyCmd::RotateDataKeys { tenant, client } => {
                let path = format!("/v1/tenants/{}/rotate-data-keys", path_segment(&tenant)?);
                print(&Client::new(&client)?.call(Method::POST, &path, None).await?)?;
                return Ok(ExitCode::SUCCESS);
            }
        };
        print(&report)?;
        Ok(if report.get("usable").and_then(Value::as_bool) == Some(true) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        })
    })
}

/// `audit export` writes JSON lines; `audit verify` exits 2 on a broken chain.
pub fn audit(data_dir: &Path, cmd: AuditCmd) -> Result<ExitCode> {
    rt()?.block_on(async {
        match cmd {
            AuditCmd::Export { tenant, client } => {
                let client = Client::new(&client)?;
                let segment = path_segment(&tenant)?;
                // The checkpoint first: the export ends at the head it signs, however many
                // events are appended while it runs.
                let checkpoint =
                    client.call(Method::GET, &format!("/v1/tenants/{segment}/audit/checkpoint"), None).await?;
                let head = checkpoint.get("seq").and_then(Value::as_u64).unwrap_or(0);
                let mut after = 0u64;
                let mut out = std::io::stdout().lock();
                while after < head {
                    let path = format!("/v1/tenants/{segment}/audit?after={after}&limit=1000");
                    let page = client.call(Method::GET, &path, None).await?;
                    let events = page.get("events").and_then(Value::as_array).cloned().unwrap_or_default();
                    if events.is_empty() {
                        bail!("the trail ended at event {after}, before its checkpoint's head {head}");
                    }
                    for e in events.iter().filter(|e| e.get("seq").and_then(Value::as_u64).is_some_and(|s| s <= head)) {
                        writeln!(out, "{}", serde_json::to_string(e)?)?;
                        after = e.get("seq").and_then(Value::as_u64).unwrap_or(after);
                    }
                    if events.last().and_then(|e| e.get("seq")).and_then(Value::as_u64).is_some_and(|s| s >= head) {
                        break;
                    }
                }
                writeln!(out, "{}", serde_json::json!({ "checkpoint": checkpoint }))?;
                Ok(ExitCode::SUCCESS)
            }
            AuditCmd::Verify { file: Some(file), public_key: Some(key), .. } => {
                let key = match std::fs::read_to_string(&key) {
                    Ok(text) => text.trim().to_owned(),
                    Err(_) => key,
                };
                let key = keyhold_audit::parse_public_key(&key).context("invalid --public-key")?;
                let reader = std::io::BufReader::new(
                    std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?,
                );
                match keyhold_audit::verify_export(reader, &key) {
                    Ok(v) => {
                        println!(
                            "audit export of {} intact: {} events, signed head at event {}",
                            v.tenant, v.events, v.head_seq
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(e) => {
                        println!("audit export {} BROKEN: {e}", file.display());
                        Ok(ExitCode::from(2))
                    }
                }
            }
            AuditCmd::Verify { tenant: Some(tenant), client, .. } => {
                let path = format!("/v1/tenants/{}/audit/verify", path_segment(&tenant)?);
                let v = Client::new(&client)?.call(Method::GET, &path, None).await?;
                if v.get("ok").and_then(Value::as_bool) == Some(true) {
                    println!(
                        "audit trail of {tenant} intact: {} events",
                        v.get("events").and_then(Value::as_u64).unwrap_or(0)
                    );
                    Ok(ExitCode::SUCCESS)
                } else {
                    println!(
                        "audit trail of {tenant} BROKEN: {}",
                        v.get("message").and_then(Value::as_str).unwrap_or("unknown")
                    );
                    Ok(ExitCode::from(2))
                }
            }
            AuditCmd::Verify { .. } => bail!("give --tenant (through the server) or --file with --public-key"),
            AuditCmd::PublicKey { client } if client.url.as_deref().is_some_and(|u| !u.is_empty()) => {
                let v = Client::new(&client)?.call(Method::GET, "/v1/audit/public-key", None).await?;
                println!("{}", v.get("public_key").and_then(Value::as_str).unwrap_or_default());
                Ok(ExitCode::SUCCESS)
            }
            AuditCmd::PublicKey { .. } => {
                // Without a server: the public key `serve` wrote beside the signing key.
                let path = data_dir.join(keyhold_server::serve::AUDIT_PUBLIC_KEY_FILE);
                let key = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {} (written by `keyhold serve`)", path.display()))?;
                println!("{}", key.trim());
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Encrypts standard input through the server's `/v1/encrypt/stream`, writing the
/// message as it arrives.
pub fn remote_encrypt(client: &ClientArgs, tenant: &str, purpose: &str, context: &[(String, String)]) -> Result<()> {
    let context: serde_json::Map<String, Value> =
        context.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let context = serde_json::to_string(&context)?;
    let path = format!("/v1/encrypt/stream?tenant={}&purpose={}", percent_encode(tenant), percent_encode(purpose));
    rt()?.block_on(async {
        let client = Client::new(client)?;
        let (tx, upload) = Upload::channel();
        pump(std::io::stdin(), tx);
        let resp = client.stream(&path, &[("x-keyhold-context", &context)], upload).await?;
        copy_answer(resp, &mut std::io::stdout().lock()).await.map(drop)
    })
}

/// Decrypts standard input through the server's `/v1/decrypt/stream`, writing the
/// plaintext as it arrives (an answer the server aborts is an error: discard the output).
pub fn remote_decrypt(client: &ClientArgs, tenant: &str) -> Result<()> {
    let path = format!("/v1/decrypt/stream?tenant={}", percent_encode(tenant));
    rt()?.block_on(async {
        let client = Client::new(client)?;
        let (tx, upload) = Upload::channel();
        pump(std::io::stdin(), tx);
        let resp = client.stream(&path, &[], upload).await?;
        copy_answer(resp, &mut std::io::stdout().lock()).await.map(drop)
    })
}

/// `keyhold reencrypt --url`: the server's `/v1/reencrypt/stream` re-encrypts under the
/// tenant's active keys as the message streams through. The message header is read here
/// first and sent alone, so a message under the active keys already, which the server
/// answers after its header, is written back unchanged from what was read (and said on
/// standard error) without uploading the rest.
pub fn remote_reencrypt(client: &ClientArgs, tenant: &str) -> Result<()> {
    let mut stdin = std::io::stdin();
    let (_, head) = keyhold_envelope::stream::read_header_bytes_from(&mut stdin, &Default::default())
        .context("the input is not a keyhold message")?;
    let path = format!("/v1/reencrypt/stream?tenant={}", percent_encode(tenant));
    rt()?.block_on(async {
        let client = Client::new(client)?;
        let (tx, upload) = Upload::channel();
        tx.send(Ok(Bytes::copy_from_slice(&head))).await.map_err(|_| anyhow::anyhow!("the upload closed"))?;
        let resp = client.stream(&path, &[], upload).await?;
        let changed = resp.headers().get("x-keyhold-changed").and_then(|v| v.to_str().ok()) != Some("false");
        let mut out = std::io::stdout().lock();
        if changed {
            pump(stdin, tx);
            copy_answer(resp, &mut out).await.map(drop)
        } else {
            drop(tx);
            eprintln!("keyhold: the message is under tenant {tenant}'s active keys already; written back unchanged");
            out.write_all(&head)?;
            std::io::copy(&mut stdin, &mut out).context("copying the message")?;
            out.flush()?;
            Ok(())
        }
    })
}

async fn registry(data_dir: &Path, url: Option<&str>) -> Result<keyhold_registry::Registry> {
    let url = match url {
        Some(u) => u.to_owned(),
        None => format!("sqlite://{}", data_dir.join("registry.db").display()),
    };
    keyhold_registry::Registry::connect(&url).await.context("opening the registry")
}

fn now_ms() -> Result<u64> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
    Ok(u64::try_from(now).unwrap_or(u64::MAX))
}

pub fn service(data_dir: &Path, cmd: ServiceCmd) -> Result<()> {
    use keyhold_server::services;
    rt()?.block_on(async {
        match cmd {
            ServiceCmd::Add { name, purposes, all_purposes, database_url } => {
                services::check_name(&name)?;
                let purposes = services::purposes(&purposes, all_purposes)?;
                let reg = registry(data_dir, database_url.as_deref()).await?;
                if reg.service(&name).await?.is_some() {
                    bail!("service {name:?} is already registered");
                }
                std::fs::create_dir_all(data_dir)?;
                let path = devcreds::service_key_path(data_dir, &name);
                let key = devcreds::write_new_key(&path)?;
                services::register(&reg, &name, &purposes, &key.public_key(), now_ms()?).await?;
                println!("service {name} (purposes {purposes}) registered; its key is {}", path.display());
            }
            ServiceCmd::List { database_url } => {
                let now = now_ms()?;
                println!("{:<24} {:<32} {:<18} {:>10} EXPIRES", "SERVICE", "PURPOSES", "KEY", "AGE");
                for s in registry(data_dir, database_url.as_deref()).await?.services().await? {
                    for k in s.accepted_keys(now) {
                        let age = humantime::format_duration(std::time::Duration::from_secs(
                            now.saturating_sub(k.created_ms) / 1000,
                        ));
                        let expires = match k.expires_ms {
                            None => "never".to_owned(),
                            Some(e) => format!(
                                "in {}",
                                humantime::format_duration(std::time::Duration::from_secs(
                                    e.saturating_sub(now) / 1000
                                ))
                            ),
                        };
                        println!(
                            "{:<24} {:<32} {:<18} {:>10} {expires}",
                            s.name,
                            s.purposes.to_string(),
                            k.id,
                            age.to_string()
                        );
                    }
                }
            }
            ServiceCmd::Remove { name, database_url } => {
                let reg = registry(data_dir, database_url.as_deref()).await?;
                services::remove(&reg, &name).await?;
                let path = devcreds::service_key_path(data_dir, &name);
                for p in [path.clone(), path.with_extension("key.previous")] {
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
                    }
                }
                println!("service {name} removed: its tokens are refused (by running servers within 5 s)");
            }
            ServiceCmd::Rotate { name, overlap, database_url } => {
                services::check_name(&name)?;
                let reg = registry(data_dir, database_url.as_deref()).await?;
                let Some(current) = reg.service(&name).await? else {
                    bail!("no service named {name:?} is registered");
                };
                // The new key is written beside the current one first; the registry learns
                // it next; only then does it take the current key's file name. A new key
                // left by an interrupted rotation that the registry already knows is
                // installed, never replaced (its private half exists nowhere else).
                let path = devcreds::service_key_path(data_dir, &name);
                let fresh = path.with_extension("key.new");
                let leftover = match devcreds::read_key(&fresh) {
                    Ok(k) => {
                        let id = keyhold_registry::service_key_id(&k.public_key());
                        current.keys.iter().any(|r| r.id == id).then_some(k)
                    }
                    Err(_) => None,
                };
                let key = match leftover {
                    Some(k) => k,
                    None => {
                        let _ = std::fs::remove_file(&fresh);
                        let k = devcreds::write_new_key(&fresh)?;
                        services::rotate(&reg, &name, &k.public_key(), overlap.as_secs(), now_ms()?).await?;
                        k
                    }
                };
                if path.exists() {
                    std::fs::rename(&path, path.with_extension("key.previous"))
                        .with_context(|| format!("keeping the previous key {}", path.display()))?;
                }
                std::fs::rename(&fresh, &path).with_context(|| format!("installing the new key {}", path.display()))?;
                println!(
                    "service {name}: new key {} in {}; previous keys accepted for {} more",
                    keyhold_registry::service_key_id(&key.public_key()).get(..16).unwrap_or_default(),
                    path.display(),
                    humantime::format_duration(overlap)
                );
            }
            ServiceCmd::Purposes { name, purposes, all_purposes, database_url } => {
                let purposes = services::purposes(&purposes, all_purposes)?;
                let reg = registry(data_dir, database_url.as_deref()).await?;
                let s = services::set_purposes(&reg, &name, &purposes).await?;
                println!("service {name} may now use purposes {}", s.purposes);
            }
        }
        Ok(())
    })
}

pub fn admin_key(data_dir: &Path, cmd: AdminKeyCmd) -> Result<()> {
    use base64::Engine as _;
    let path = devcreds::admin_key_path(data_dir);
    let key = match cmd {
        AdminKeyCmd::Create if !path.exists() => {
            std::fs::create_dir_all(data_dir)?;
            let key = devcreds::write_new_key(&path)?;
            eprintln!(
                "created the admin key {} (keep it secret; `keyhold token --admin` signs with it)",
                path.display()
            );
            key
        }
        AdminKeyCmd::Create | AdminKeyCmd::Show => devcreds::read_key(&path)?,
    };
    println!("{}", base64::engine::general_purpose::STANDARD.encode(key.public_key()));
    Ok(())
}
