//! `keyhold serve` and `keyhold token`, and the commands that talk to a running server:
//! `tenant`, `key`, `audit`, and `encrypt` / `decrypt` through `--url`.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hyper::Method;
use keyhold_core::{Region, SystemClock};
use keyhold_server::auth::{ADMIN_ISSUER, MAX_LIFETIME_S, Scope};
use keyhold_server::devcreds;
use keyhold_server::serve::{ServeConfig, build, run, shutdown_signal};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::Client;
use crate::flags::{AuditCmd, ClientArgs, KeyCmd, ServeArgs, ServiceCmd, TenantCmd, TokenArgs};

/// The configuration file's keys (all optional; flags and the environment win).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<String>,
    database_url: Option<String>,
    tls_cert: Option<std::path::PathBuf>,
    tls_key: Option<std::path::PathBuf>,
    platform_principal: Option<String>,
    local_region: Option<String>,
    realms_file: Option<std::path::PathBuf>,
    probe_interval: Option<u64>,
    usage_flush_interval_ms: Option<u64>,
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
    let config = ServeConfig {
        usage_flush_interval,
        database_url: args.database_url.or(file.database_url),
        listen,
        tls,
        platform_principal: args.platform_principal.or(file.platform_principal),
        local_region,
        probe_interval,
        ..defaults
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async {
        let (state, created) = build(&config, catalog, Arc::new(SystemClock)).await?;
        if let Some(p) = &created.admin {
            eprintln!("keyhold: created the development admin key {}", p.display());
        }
        if let Some(p) = &created.dev_service {
            eprintln!("keyhold: created the development service \"dev\" (every purpose), key {}", p.display());
        }
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        run(&config, state, shutdown_signal(), |addr| {
            println!("keyhold listening on {scheme}://{addr}");
            eprintln!(
                "keyhold: tokens: keyhold --data-dir {} token --admin | --service dev",
                config.data_dir.display()
            );
            let _ = std::io::stdout().flush();
        })
        .await?;
        eprintln!("keyhold: stopped");
        Ok(())
    })
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

/// Encrypts standard input through the server.
pub fn remote_encrypt(client: &ClientArgs, tenant: &str, purpose: &str, context: &[(String, String)]) -> Result<()> {
    let mut plaintext = Vec::new();
    std::io::stdin().lock().read_to_end(&mut plaintext)?;
    let context: serde_json::Map<String, Value> =
        context.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let body = json!({"tenant": tenant, "purpose": purpose, "plaintext": B64.encode(&plaintext), "context": context});
    let out = rt()?.block_on(async { Client::new(client)?.call(Method::POST, "/v1/encrypt", Some(&body)).await })?;
    let ct = B64
        .decode(out.get("ciphertext").and_then(Value::as_str).unwrap_or_default())
        .context("the server's ciphertext")?;
    std::io::stdout().lock().write_all(&ct)?;
    Ok(())
}

/// Decrypts standard input through the server.
pub fn remote_decrypt(client: &ClientArgs, tenant: &str) -> Result<()> {
    let mut ct = Vec::new();
    std::io::stdin().lock().read_to_end(&mut ct)?;
    let body = json!({"tenant": tenant, "ciphertext": B64.encode(&ct)});
    let out = rt()?.block_on(async { Client::new(client)?.call(Method::POST, "/v1/decrypt", Some(&body)).await })?;
    let pt = B64
        .decode(out.get("plaintext").and_then(Value::as_str).unwrap_or_default())
        .context("the server's plaintext")?;
    std::io::stdout().lock().write_all(&pt)?;
    Ok(())
}

async fn registry(data_dir: &Path, url: Option<&str>) -> Result<keyhold_registry::Registry> {
    let url = match url {
        Some(u) => u.to_owned(),
        None => format!("sqlite://{}", data_dir.join("registry.db").display()),
    };
    keyhold_registry::Registry::connect(&url).await.context("opening the registry")
}

pub fn service(data_dir: &Path, cmd: ServiceCmd) -> Result<()> {
    rt()?.block_on(async {
        match cmd {
            ServiceCmd::Add { name, purposes, all_purposes, database_url } => {
                if name.is_empty()
                    || name == ADMIN_ISSUER
                    || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    bail!("invalid --name {name:?}: ASCII letters, digits, - and _ (and not {ADMIN_ISSUER})");
                }
                let purposes = if all_purposes {
                    keyhold_registry::Purposes::All
                } else {
                    keyhold_registry::Purposes::Only(
                        purposes
                            .iter()
                            .map(|p| {
                                keyhold_core::Purpose::parse(p).with_context(|| format!("invalid --purpose {p:?}"))
                            })
                            .collect::<Result<_>>()?,
                    )
                };
                let reg = registry(data_dir, database_url.as_deref()).await?;
                if reg.service(&name).await?.is_some() {
                    bail!("service {name:?} is already registered");
                }
                std::fs::create_dir_all(data_dir)?;
                let path = devcreds::service_key_path(data_dir, &name);
                let key = devcreds::write_new_key(&path)?;
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
                reg.put_service(&keyhold_registry::ServiceIdentity {
                    name: name.clone(),
                    public_key: key.public_key(),
                    purposes: purposes.clone(),
                    created_ms: u64::try_from(now).unwrap_or(u64::MAX),
                })
                .await?;
                println!("service {name} (purposes {purposes}) registered; its key is {}", path.display());
            }
            ServiceCmd::List { database_url } => {
                println!("{:<24} PURPOSES", "SERVICE");
                for s in registry(data_dir, database_url.as_deref()).await?.services().await? {
                    println!("{:<24} {}", s.name, s.purposes);
                }
            }
        }
        Ok(())
    })
}
