//! Running the server: assembling the state from a [`ServeConfig`] (registry, local and
//! AWS KMS providers, development credentials, the lifecycle layer), listening with or
//! without TLS, flushing usage counts to the audit trail every
//! [`ServeConfig::usage_flush_interval`], and shutting down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyhold_audit::{AuditKey, Auditor};
use keyhold_core::{Clock, Region};
use keyhold_lifecycle::{Lifecycle, Parts};
use keyhold_onboarding::RealmCatalog;
use keyhold_provider::KeyProvider;
use keyhold_provider_aws::{AwsKmsConfig, AwsSdkConfig, TenantRouter};
use keyhold_provider_local::LocalKms;
use keyhold_registry::Registry;
use keyhold_service::Settings;

use crate::AppState;
use crate::conn::Limits;
use crate::devcreds::{self, Created};

/// How to run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// keyhold's state: the local keystore, the SQLite registry, development credentials.
    pub data_dir: PathBuf,
    /// `postgres://...` or `sqlite://...`; default: `<data_dir>/registry.db`.
    pub database_url: Option<String>,
    /// Where to listen.
    pub listen: SocketAddr,
    /// TLS certificate chain and private key (PEM files); plain HTTP without.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The IAM principal keyhold runs as (for generated key policies and their analysis).
    pub platform_principal: Option<String>,
    /// The address clients reach keyhold at (`scheme://host[:port]`): console links are
    /// built on it and console forms must come from it; `None`: the request's `Host`.
    pub public_url: Option<String>,
    /// The region this instance runs in (decryption asks its keys first).
    pub local_region: Option<Region>,
    /// Service-layer settings (cache limits, message limits).
    pub settings: Settings,
    /// The AWS configuration to reach KMS and STS with; default: the standard one
    /// (environment, profiles, `AWS_ENDPOINT_URL_KMS` / `_STS`).
    pub aws: Option<AwsSdkConfig>,
    /// How often the health monitor probes every tenant's keys; `None` disables it.
    pub probe_interval: Option<Duration>,
    /// How often usage counts (and other events held in memory) are written to the audit
    /// trail: the most a `kill -9` can lose.
    pub usage_flush_interval: Duration,
    /// Timeouts and connection limits of the HTTP edge.
    pub limits: Limits,
    /// Create development credentials (admin key, `dev` service) in the data dir even
    /// outside the embedded default.
    pub dev: bool,
    /// The admin public key (Ed25519, 32 bytes) that verifies admin and tenant-admin
    /// tokens; when set, no development credentials are created.
    pub admin_public_key: Option<Vec<u8>>,
    /// Webhook delivery.
    pub webhooks: crate::webhooks::WebhookConfig,
    /// Per-tenant and per-service limits (this instance's).
    pub tenant_limits: keyhold_lifecycle::limits::TenantLimits,
}

pub use keyhold_lifecycle::limits::TenantLimits;

/// The default budget of key-service calls per tenant per minute, per instance.
pub const DEFAULT_KMS_BUDGET: u32 = 6000;

/// The SQLite registry's file in the data dir (the embedded default).
pub const REGISTRY_FILE: &str = "registry.db";

impl ServeConfig {
    /// Whether development credentials are created: on the embedded default (SQLite in the
    /// data dir) or with [`ServeConfig::dev`], and never when an admin key is configured.
    pub fn dev_credentials(&self) -> bool {
        self.admin_public_key.is_none() && (self.dev || self.database_url.is_none())
    }
}

/// Makes the data dir readable by its owner only: the directory 0700, the registry's
/// files 0600 (created so before SQLite opens them; its WAL and shared-memory files take
/// the database file's mode). Looser modes found on existing files are tightened, with a
/// log line each.
pub fn secure_data_dir(dir: &std::path::Path, embedded_registry: bool) -> Result<(), ServeError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let fail = |path: &std::path::Path| {
        let path = path.to_owned();
        move |e| ServeError::DataDir(path, e)
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(fail(dir))?;
    let tighten = |path: &std::path::Path, mode: u32| -> Result<(), ServeError> {
        let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
        let found = meta.permissions().mode() & 0o777;
        if found & !mode != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(fail(path))?;
            tracing::info!(path = %path.display(), from = format!("{found:o}"), to = format!("{mode:o}"), "permissions tightened");
        }
        Ok(())
    };
    tighten(dir, 0o700)?;
    let db = dir.join(REGISTRY_FILE);
    if embedded_registry && !db.exists() {
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&db).map_err(fail(&db))?;
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        tighten(&dir.join(format!("{REGISTRY_FILE}{suffix}")), 0o600)?;
    }
    Ok(())
}

/// The audit signing key's file in the data dir (Ed25519, PKCS#8, mode 0600).
pub const AUDIT_KEY_FILE: &str = "audit-signing.key";

/// The audit public key's file in the data dir (base64, written at every start), for
/// operators and tenants to verify exports with.
pub const AUDIT_PUBLIC_KEY_FILE: &str = "audit-signing.pub";

/// The default [`ServeConfig::usage_flush_interval`].
pub const DEFAULT_USAGE_FLUSH: Duration = Duration::from_secs(2);

impl ServeConfig {
    /// The embedded default over `data_dir`: SQLite registry and local keys there, plain
    /// HTTP on [`DEFAULT_LISTEN`], the standard AWS configuration, no platform principal,
    /// the health monitor every [`keyhold_lifecycle::monitor::DEFAULT_INTERVAL`].
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database_url: None,
            listen: DEFAULT_LISTEN,
            tls: None,
            platform_principal: None,
            public_url: None,
            local_region: None,
            settings: Settings::default(),
            aws: None,
            probe_interval: Some(keyhold_lifecycle::monitor::DEFAULT_INTERVAL),
            usage_flush_interval: DEFAULT_USAGE_FLUSH,
            limits: Limits::default(),
            dev: false,
            admin_public_key: None,
            webhooks: crate::webhooks::WebhookConfig::default(),
            tenant_limits: keyhold_lifecycle::limits::TenantLimits {
                kms_per_minute: Some(DEFAULT_KMS_BUDGET),
                ..Default::default()
            },
        }
    }
}

/// Where `serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 8700));

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data dir could not be prepared.
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    /// Registry.
    #[error(transparent)]
    Registry(#[from] keyhold_registry::RegistryError),
    /// Credentials.
    #[error(transparent)]
    Credentials(#[from] devcreds::CredError),
    /// Local provider.
    #[error("local key provider: {0}")]
    Local(String),
    /// The audit signing key could not be read or created.
    #[error("audit signing key: {0}")]
    AuditKey(String),
    /// Not the embedded default, no `--dev`, and no admin key configured.
    #[error(
        "no admin key: outside the embedded default (SQLite in the data dir) keyhold creates no development \
         credentials; set admin_public_key (--admin-public-key, KEYHOLD_ADMIN_PUBLIC_KEY; `keyhold admin-key create` \
         makes one), or pass --dev for development credentials in the data dir"
    )]
    NoAdminKey,
    /// Listening or serving.
    #[error("listening on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// TLS files.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Builds the shared state; returns what development credentials were created.
pub async fn build(
    config: &ServeConfig,
    catalog: RealmCatalog,
    clock: Arc<dyn Clock>,
) -> Result<(Arc<AppState>, Created), ServeError> {
    secure_data_dir(&config.data_dir, config.database_url.is_none())?;
    let url = match &config.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", config.data_dir.join(REGISTRY_FILE).display()),
    };
    let registry = Registry::connect(&url).await?;
    let (admin_public_key, created) = match (&config.admin_public_key, config.dev_credentials()) {
        (Some(key), _) => (key.clone(), Created::default()),
        (None, true) => devcreds::ensure(&config.data_dir, &registry, clock.now_millis()).await?,
        (None, false) => return Err(ServeError::NoAdminKey),
    };
    let local = LocalKms::open(&config.data_dir).map_err(|e| ServeError::Local(e.to_string()))?;
    let aws = Arc::new(match &config.aws {
        Some(sdk) => TenantRouter::new(sdk, AwsKmsConfig::default()),
        None => TenantRouter::from_env(AwsKmsConfig::default()).await,
    });
    let local = Arc::new(local);
    // The audit signing key lives in the data dir, never in the database: someone who can
    // write the database cannot re-sign a rewritten trail.
    let key_path = config.data_dir.join(AUDIT_KEY_FILE);
    let new_key = !key_path.exists();
    if new_key && registry.signed_heads().await? > 0 {
        // Another instance signed these trails: a new key would refuse to extend them.
        return Err(ServeError::AuditKey(format!(
            "{} is missing but the registry holds trails signed by an audit key: copy the key file from the \
             instance that created it (every instance sharing a registry needs the same key)",
            key_path.display()
        )));
    }
    let audit_key = Arc::new(AuditKey::load_or_create(&key_path).map_err(|e| ServeError::AuditKey(e.to_string()))?);
    {
        use base64::Engine as _;
        let public = base64::engine::general_purpose::STANDARD.encode(audit_key.public_key());
        let path = config.data_dir.join(AUDIT_PUBLIC_KEY_FILE);
        std::fs::write(&path, format!("{public}\n")).map_err(|e| ServeError::DataDir(path, e))?;
    }
    let auditor = Auditor::new(registry.clone(), audit_key).with_genesis_rule();
    if new_key {
        // Trails from before heads were signed are adopted once, when the key is born.
        auditor.adopt_unsigned_heads().await.map_err(|e| ServeError::AuditKey(e.to_string()))?;
    }
    let providers: Vec<Arc<dyn KeyProvider>> = vec![local.clone(), aws.clone()];
    let lifecycle = Lifecycle::new(Parts {
        auditor,
        registry,
        providers,
        local: Some(local),
        aws: Some(aws),
        catalog,
        platform_principal: config.platform_principal.clone(),
        settings: config.settings,
        local_region: config.local_region.clone(),
        clock,
        limits: config.tenant_limits,
    });
    let mut state = AppState::new(lifecycle, admin_public_key, config.limits);
    state.webhooks = config.webhooks;
    state.console = crate::console::ConsoleConfig {
        secure_cookies: config.tls.is_some(),
        probe_interval: config.probe_interval,
        public_url: config.public_url.clone(),
        ..Default::default()
    };
    Ok((Arc::new(state), created))
}

/// Serves until `shutdown` completes, then finishes in-flight requests and writes the
/// remaining usage counts. `ready` is called with the bound address.
pub async fn run(
    config: &ServeConfig,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let tls = match &config.tls {
        None => None,
        Some((cert, key)) => Some(crate::tls::acceptor(cert, key).map_err(ServeError::Tls)?),
    };
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.map_err(|e| ServeError::Listen(config.listen, e))?;
    let addr = listener.local_addr().map_err(|e| ServeError::Listen(config.listen, e))?;
    let flusher = {
        let lifecycle = state.lifecycle.clone();
        let every = config.usage_flush_interval.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                lifecycle.flush(false).await;
            }
        })
    };
    let monitor = config.probe_interval.map(|i| keyhold_lifecycle::monitor::spawn(state.lifecycle.clone(), i));
    let notifications = keyhold_lifecycle::propagation::spawn_listener(state.lifecycle.clone());
    let dispatcher = crate::webhooks::spawn(Arc::new(crate::webhooks::Dispatcher::new(
        state.lifecycle.registry().clone(),
        config.webhooks,
        state.lifecycle.clock(),
    )));
    let app = crate::router(state.clone());
    ready(addr);
    crate::conn::serve(listener, tls, app, config.limits, shutdown).await;
    flusher.abort();
    dispatcher.abort();
    if let Some(l) = notifications {
        l.abort();
    }
    if let Some(m) = monitor {
        m.abort();
    }
    state.lifecycle.shutdown().await;
    Ok(())
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called (inside
/// the runtime), not when the future is first polled: a signal that arrives between the
/// "listening" line and the first poll still stops the server gracefully.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        let term = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let int = async {
            match int.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = term => {},
            () = int => {},
        }
    }
}
