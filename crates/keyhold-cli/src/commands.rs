//! Turns parsed flags into real objects and runs them.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use aws_lc_rs::rand::SystemRandom;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use keyhold_core::{EncryptionContext, KeyRef, Purpose, Region, SystemClock, TenantId};
use keyhold_envelope::stream::{decrypt_stream, encrypt_stream, read_header_from};
use keyhold_envelope::{AlgorithmSuite, DecryptConfig, EncryptConfig};
use keyhold_onboarding::{
    PolicyParams, Realm, RealmCatalog, Validation, byok_role_template, cmk_template, external_id, key_policy,
};
use keyhold_provider::{KeyDescription, KeyProvider, KeyState};
use keyhold_provider_aws::{AssumeRole, AwsKms, AwsKmsConfig};
use keyhold_provider_local::LocalKms;
use keyhold_service::{EncryptParams, Keyhold, Settings};

use crate::flags::{
    AwsArgs, Cli, Command, DecryptArgs, EncryptArgs, Format, LocalKms as LocalCmd, OnboardingArgs, PolicyArgs,
    ReencryptArgs, TemplateArgs, TemplateKind, ValidateArgs,
};

/// Inputs larger than this get a progress bar on a terminal.
const PROGRESS_THRESHOLD: u64 = 8 << 20;

/// Runs one command; the exit code is 0 on success, 2 when validation finds the keys
/// unusable (errors of the command itself are returned).
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::LocalKms(cmd) => local_kms(&cli.data_dir, cmd)?,
        Command::Encrypt(args) => encrypt(&cli.data_dir, args)?,
        Command::Decrypt(args) => decrypt(&cli.data_dir, args)?,
        Command::Reencrypt(args) => reencrypt(&cli.data_dir, args)?,
        Command::Policy(args) => policy(args)?,
        Command::Template(args) => template(args)?,
        Command::Validate(args) => return validate(&cli.data_dir, args),
        Command::Serve(args) => crate::server_cmds::serve(&cli.data_dir, *args)?,
        Command::Token(args) => crate::server_cmds::token(&cli.data_dir, args)?,
        Command::Tenant(cmd) => crate::server_cmds::tenant(cmd)?,
        Command::ConsoleLink { tenant, client } => crate::server_cmds::console_link(tenant, &client)?,
        Command::Key(cmd) => return crate::server_cmds::key(cmd),
        Command::Audit(cmd) => return crate::server_cmds::audit(&cli.data_dir, cmd),
        Command::Service(cmd) => crate::server_cmds::service(&cli.data_dir, cmd)?,
        Command::AdminKey(cmd) => crate::server_cmds::admin_key(&cli.data_dir, cmd)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(dir: &std::path::Path, args: ValidateArgs) -> Result<ExitCode> {
    let catalog = catalog(args.realms_file.as_deref())?;
    let realm = catalog.get(&args.realm).context("invalid --realm")?.clone();
    let tenant = TenantId::parse(&args.tenant).context("invalid --tenant")?;
    let rt = runtime()?;
    let need_aws = args.keys.iter().any(|k| k.contains("arn:"));
    let providers = rt.block_on(providers(dir, &args.aws, &tenant, need_aws))?;
    let report = rt.block_on(keyhold_onboarding::validate(&Validation {
        tenant: &tenant,
        realm: &realm,
        keys: &args.keys,
        platform_principal: args.platform_principal.as_deref(),
        providers: &providers,
    }));
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Text => write!(out, "{}", report.to_text())?,
        Format::Json => writeln!(out, "{}", report.to_json())?,
    }
    Ok(if report.usable { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// The key providers a command needs: the local provider always, AWS KMS when a key is
/// an ARN (built only then: loading the AWS configuration may probe the network).
async fn providers(
    dir: &std::path::Path,
    aws: &AwsArgs,
    tenant: &TenantId,
    need_aws: bool,
) -> Result<Vec<Arc<dyn KeyProvider>>> {
    let mut providers: Vec<Arc<dyn KeyProvider>> = vec![Arc::new(open_local(dir)?)];
    if need_aws {
        let config = AwsKmsConfig::default();
        let kms = match &aws.assume_role {
            Some(role_arn) => {
                let external = aws.external_id.clone().unwrap_or_else(|| external_id(tenant));
                let role = AssumeRole::for_tenant(tenant, role_arn, &external);
                AwsKms::assume_role(&role, config).await
            }
            None => AwsKms::from_env(config).await,
        };
        providers.push(Arc::new(kms));
    }
    Ok(providers)
}

pub fn catalog(file: Option<&std::path::Path>) -> Result<RealmCatalog> {
    Ok(match file {
        Some(path) => {
            let json = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            RealmCatalog::from_json(&json)?
        }
        None => RealmCatalog::builtin(),
    })
}

/// The realm and tenant the onboarding flags name.
fn onboarding(args: &OnboardingArgs) -> Result<(Realm, TenantId)> {
    let catalog = catalog(args.realms_file.as_deref())?;
    let realm = catalog.get(&args.realm).context("invalid --realm")?.clone();
    let tenant = TenantId::parse(&args.tenant).context("invalid --tenant")?;
    Ok((realm, tenant))
}

fn template(args: TemplateArgs) -> Result<()> {
    let (realm, tenant) = onboarding(&args.onboarding)?;
    let principal = &args.onboarding.platform_principal;
    let document = match args.kind {
        TemplateKind::Cmk => cmk_template(&tenant, principal)?,
        TemplateKind::ByokRole => byok_role_template(&tenant, principal, &realm.regions)?,
    };
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(())
}

fn policy(args: PolicyArgs) -> Result<()> {
    let (realm, tenant) = onboarding(&args.onboarding)?;
    let params = PolicyParams {
        tenant: &tenant,
        platform_principal: &args.onboarding.platform_principal,
        tenant_account: args.account.as_deref(),
    };
    let document = key_policy(&params)?;
    let output = match &args.region {
        Some(r) => {
            let region = Region::parse(r).context("invalid --region")?;
            if !realm.regions.contains(&region) {
                bail!(
                    "region {region} is not in realm {} ({})",
                    realm.id,
                    realm.regions.iter().map(Region::as_str).collect::<Vec<_>>().join(", ")
                );
            }
            document
        }
        None => serde_json::Value::Object(realm.regions.iter().map(|r| (r.to_string(), document.clone())).collect()),
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

fn open_local(dir: &std::path::Path) -> Result<LocalKms> {
    LocalKms::open(dir).with_context(|| format!("opening the local key provider in {}", dir.display()))
}

fn key_ref(s: &str) -> Result<KeyRef> {
    KeyRef::parse(s).with_context(|| format!("invalid key {s:?}"))
}

fn local_kms(dir: &std::path::Path, cmd: LocalCmd) -> Result<()> {
    let kms = open_local(dir)?;
    let mut out = std::io::stdout().lock();
    match cmd {
        LocalCmd::CreateKey { region, description } => {
            let region = Region::parse(&region).context("invalid --region")?;
            let d = kms.create_key(&region, &description)?;
            writeln!(out, "{}", d.key)?;
        }
        LocalCmd::ListKeys => {
            writeln!(out, "{:<36} {:<16} {:<16} {:>8}  CREATED", "KEY", "REGION", "STATE", "VERSIONS")?;
            for d in kms.list_keys()? {
                writeln!(
                    out,
                    "{:<36} {:<16} {:<16} {:>8}  {}",
                    d.key,
                    d.region,
                    d.state.name(),
                    d.material_versions.map_or_else(|| "-".to_owned(), |v| v.to_string()),
                    time(d.created_ms)
                )?;
            }
        }
        LocalCmd::DescribeKey { key } => print_description(&mut out, &kms.describe_key(&key_ref(&key)?)?)?,
        LocalCmd::DisableKey { key } => print_description(&mut out, &kms.disable_key(&key_ref(&key)?)?)?,
        LocalCmd::EnableKey { key } => print_description(&mut out, &kms.enable_key(&key_ref(&key)?)?)?,
        LocalCmd::ScheduleKeyDeletion { key, days } => {
            print_description(&mut out, &kms.schedule_key_deletion(&key_ref(&key)?, days)?)?;
        }
        LocalCmd::CancelKeyDeletion { key } => print_description(&mut out, &kms.cancel_key_deletion(&key_ref(&key)?)?)?,
        LocalCmd::RotateKey { key } => print_description(&mut out, &kms.rotate_key(&key_ref(&key)?)?)?,
    }
    Ok(())
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

fn print_description(out: &mut impl Write, d: &KeyDescription) -> Result<()> {
    let mut v = serde_json::json!({
        "KeyId": d.key.as_str(),
        "Region": d.region.as_str(),
        "KeyState": d.state.name(),
        "CreationDate": time(d.created_ms),
        "Origin": match d.origin { keyhold_provider::KeyOrigin::External => "EXTERNAL", _ => "KEYHOLD_LOCAL" },
        "MaterialVersions": d.material_versions,
        "Description": d.description,
    });
    if let (KeyState::PendingDeletion { deletion_at_ms }, Some(obj)) = (d.state, v.as_object_mut()) {
        obj.insert("DeletionDate".into(), serde_json::Value::String(time(deletion_at_ms)));
    }
    writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    Ok(())
}

fn service(providers: Vec<Arc<dyn KeyProvider>>, settings: Settings, aws: &AwsArgs) -> Result<Keyhold> {
    let service = Keyhold::new(providers, settings, Arc::new(SystemClock));
    Ok(match &aws.local_region {
        Some(r) => service.with_local_region(Region::parse(r).context("invalid --local-region")?),
        None => service,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// `--context KEY=VALUE` flags as pairs.
fn context_pairs(flags: &[String]) -> Result<Vec<(String, String)>> {
    flags
        .iter()
        .map(|c| match c.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => bail!("invalid --context {c:?}: expected KEY=VALUE"),
        })
        .collect()
}

fn encrypt(dir: &std::path::Path, args: EncryptArgs) -> Result<()> {
    let pairs = context_pairs(&args.context)?;
    if args.keys.is_empty() {
        return crate::server_cmds::remote_encrypt(&args.client, &args.tenant, &args.purpose, &pairs);
    }
    let tenant = TenantId::parse(&args.tenant).context("invalid --tenant")?;
    let purpose = Purpose::parse(&args.purpose).context("invalid --purpose")?;
    let keys = args.keys.iter().map(|k| key_ref(k)).collect::<Result<Vec<_>>>()?;
    let suite: AlgorithmSuite = args.suite.parse().map_err(anyhow::Error::msg).context("invalid --suite")?;
    let context = EncryptionContext::from_caller_pairs(pairs).context("invalid --context")?;
    if args.frame_length == 0 {
        bail!("invalid --frame-length 0: frames hold at least one byte");
    }
    let rt = runtime()?;
    let need_aws = keys.iter().any(|k| k.as_str().starts_with("arn:"));
    let service = service(rt.block_on(providers(dir, &args.aws, &tenant, need_aws))?, Settings::default(), &args.aws)?;
    let params = EncryptParams { tenant, purpose, keys: keys.into(), context, suite, generation: 0 };
    let materials = rt.block_on(service.encryption_materials(&params, 0))?;
    let materials = &materials.message;
    let stdin = std::io::stdin().lock();
    let size = input_size();
    let bar = progress(size, args.quiet);
    let config = EncryptConfig { frame_length: args.frame_length };
    encrypt_stream(materials, &config, &SystemRandom::new(), stdin, std::io::stdout().lock(), |n| bar.set_position(n))
        .context("encrypting")?;
    bar.finish_and_clear();
    Ok(())
}

fn decrypt(dir: &std::path::Path, args: DecryptArgs) -> Result<()> {
    if args.client.url.is_some() {
        return crate::server_cmds::remote_decrypt(&args.client, &args.tenant);
    }
    let tenant = TenantId::parse(&args.tenant).context("invalid --tenant")?;
    let config = DecryptConfig { require_commitment: args.require_commitment, ..DecryptConfig::default() };
    let mut stdin = std::io::stdin().lock();
    let (header, leftover) = read_header_from(&mut stdin, &config).context("reading the message header")?;
    let rt = runtime()?;
    let need_aws = header.edk_refs().any(|e| e.provider_id == keyhold_provider_aws::PROVIDER_ID);
    let providers = rt.block_on(providers(dir, &args.aws, &tenant, need_aws))?;
    let service = service(providers, Settings { decrypt: config, ..Settings::default() }, &args.aws)?;
    // The tenant check happens inside, before any key is used or any byte is written.
    // Offline, the operator holds the keys: any key the providers serve may be asked.
    let body = rt.block_on(service.body_decryptor(&tenant, header, &keyhold_service::AnyKey, &mut Vec::new()))?;
    let bar = progress(input_size(), args.quiet);
    decrypt_stream(body, leftover, &mut stdin, std::io::stdout().lock(), |n| bar.set_position(n))
        .context("decrypting")?;
    bar.finish_and_clear();
    Ok(())
}

/// Offline: decrypts with any key the providers serve and encrypts under `--key`s,
/// streaming; the purpose, caller context and (committing) suite are the old message's.
fn reencrypt(dir: &std::path::Path, args: ReencryptArgs) -> Result<()> {
    if args.keys.is_empty() {
        return crate::server_cmds::remote_reencrypt(&args.client, &args.tenant);
    }
    let tenant = TenantId::parse(&args.tenant).context("invalid --tenant")?;
    let keys = args.keys.iter().map(|k| key_ref(k)).collect::<Result<Vec<_>>>()?;
    if args.frame_length == 0 {
        bail!("invalid --frame-length 0: frames hold at least one byte");
    }
    let config = DecryptConfig::default();
    let mut stdin = std::io::stdin().lock();
    let (header, leftover) = read_header_from(&mut stdin, &config).context("reading the message header")?;
    keyhold_service::check_tenant(&tenant, &header)?;
    let purpose = header
        .context_value(keyhold_core::RESERVED_PURPOSE_KEY)
        .and_then(|p| Purpose::parse(p).ok())
        .context("the message carries no purpose; keyhold did not write it")?;
    let (context, suite) = keyhold_service::reencryption_params(&header).context("the message's context")?;
    let rt = runtime()?;
    let need_aws = keys.iter().any(|k| k.as_str().starts_with("arn:"))
        || header.edk_refs().any(|e| e.provider_id == keyhold_provider_aws::PROVIDER_ID);
    let service = service(rt.block_on(providers(dir, &args.aws, &tenant, need_aws))?, Settings::default(), &args.aws)?;
    let params = EncryptParams { tenant: tenant.clone(), purpose, keys: keys.into(), context, suite, generation: 0 };
    let materials = rt.block_on(service.encryption_materials(&params, 0))?;
    let body = rt.block_on(service.body_decryptor(&tenant, header, &keyhold_service::AnyKey, &mut Vec::new()))?;
    let bar = progress(input_size(), args.quiet);
    let out = EncryptConfig { frame_length: args.frame_length };
    keyhold_envelope::stream::reencrypt_stream(
        body,
        leftover,
        &mut stdin,
        &materials.message,
        &out,
        &SystemRandom::new(),
        std::io::stdout().lock(),
        |n| bar.set_position(n),
    )
    .context("re-encrypting")?;
    bar.finish_and_clear();
    Ok(())
}

/// The size of standard input when it is a regular file.
fn input_size() -> Option<u64> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    meta.is_file().then_some(meta.len())
}

fn progress(size: Option<u64>, quiet: bool) -> ProgressBar {
    let interactive = std::io::stderr().is_terminal() && !quiet;
    match size {
        Some(n) if interactive && n >= PROGRESS_THRESHOLD => {
            let bar = ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            {
                bar.set_style(style);
            }
            bar
        }
        _ => ProgressBar::hidden(),
    }
}
