//! Command-line flags, each documented beside its definition.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// keyhold: customer-managed keys for multi-tenant platforms.
#[derive(Debug, Parser)]
#[command(name = "keyhold", version, about)]
pub struct Cli {
    /// Directory holding keyhold's state (the local key provider's keystore).
    #[arg(long, global = true, env = "KEYHOLD_DATA_DIR", default_value = "./keyhold-data")]
    pub data_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage keys of the embedded local key provider (the stand-in for a tenant's KMS).
    #[command(name = "local-kms", subcommand)]
    LocalKms(LocalKms),
    /// Encrypt standard input to standard output as an AWS Encryption SDK message.
    Encrypt(EncryptArgs),
    /// Decrypt a message from standard input to standard output.
    Decrypt(DecryptArgs),
    /// Re-encrypt a message from standard input under new keys to standard output: a new
    /// message (new id and data key) with the old one's purpose and context; streamed
    /// offline (--key), or through the server's /v1/reencrypt/stream with --url.
    Reencrypt(ReencryptArgs),
    /// Print the key policy a tenant applies to its KMS key in each region of its realm.
    Policy(PolicyArgs),
    /// Print a CloudFormation template for the tenant to deploy in its AWS account.
    Template(TemplateArgs),
    /// Check a tenant's keys live and report every fault, per region (exit 0 when usable,
    /// 2 when not).
    Validate(ValidateArgs),
    /// Run the HTTP API (embedded default: SQLite registry and local keys in --data-dir).
    Serve(Box<ServeArgs>),
    /// Print a fresh token signed with a key in --data-dir (development credentials).
    Token(TokenArgs),
    /// Manage tenants through a running server.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Print a one-time console sign-in link (valid 15 minutes, usable once) for a
    /// tenant's administrator (--tenant), or for the admin; needs an admin token.
    #[command(name = "console-link")]
    ConsoleLink {
        /// The tenant whose administrator signs in; without it, the admin.
        #[arg(long)]
        tenant: Option<String>,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Attach and validate tenant keys through a running server.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Export or verify a tenant's audit trail through a running server.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Register the platform services allowed to call keyhold (in the registry directly).
    #[command(subcommand)]
    Service(ServiceCmd),
    /// The admin key: tokens for admins and tenant admins are signed with it.
    #[command(name = "admin-key", subcommand)]
    AdminKey(AdminKeyCmd),
}

/// `keyhold service` commands. They work on the registry directly (`--database-url`, or
/// the data dir's SQLite); a running server sees a change within its view bound (5 s).
#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Register a service: creates its Ed25519 key in --data-dir (service-keys/NAME.key) and
    /// records its public key and purposes; `keyhold token --service NAME` then signs for it.
    Add {
        /// The service's name (its tokens' issuer).
        #[arg(long)]
        name: String,
        /// A purpose it may encrypt and decrypt for; repeatable.
        #[arg(long = "purpose", required_unless_present = "all_purposes")]
        purposes: Vec<String>,
        /// Allow every purpose.
        #[arg(long, conflicts_with = "purposes")]
        all_purposes: bool,
        /// The registry's database [default: SQLite in --data-dir].
        #[arg(long, env = "KEYHOLD_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// List registered services: purposes, and each accepted key with its age and expiry.
    List {
        /// The registry's database [default: SQLite in --data-dir].
        #[arg(long, env = "KEYHOLD_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Remove a service: its tokens are refused from then on (by a running server within
    /// its view bound). Its key file in --data-dir is deleted.
    Remove {
        /// The service's name.
        #[arg(long)]
        name: String,
        /// The registry's database [default: SQLite in --data-dir].
        #[arg(long, env = "KEYHOLD_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Give a service a new key (service-keys/NAME.key; the previous file is kept as
    /// NAME.key.previous); tokens signed with its previous keys are accepted for --overlap.
    Rotate {
        /// The service's name.
        #[arg(long)]
        name: String,
        /// How long the previous keys stay accepted, e.g. 24h, 30m, 0s (a leaked key:
        /// refuse it at once); at most 30 days.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        overlap: std::time::Duration,
        /// The registry's database [default: SQLite in --data-dir].
        #[arg(long, env = "KEYHOLD_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Replace the purposes a service may use (narrowing is enforced like removal).
    Purposes {
        /// The service's name.
        #[arg(long)]
        name: String,
        /// A purpose it may encrypt and decrypt for; repeatable.
        #[arg(long = "purpose", required_unless_present = "all_purposes")]
        purposes: Vec<String>,
        /// Allow every purpose.
        #[arg(long, conflicts_with = "purposes")]
        all_purposes: bool,
        /// The registry's database [default: SQLite in --data-dir].
        #[arg(long, env = "KEYHOLD_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
}

/// `keyhold admin-key` commands.
#[derive(Debug, Subcommand)]
pub enum AdminKeyCmd {
    /// Create the admin key in --data-dir (admin.key, mode 0600) unless it exists, and
    /// print its public half (base64) for `serve --admin-public-key`.
    Create,
    /// Print the public half of the admin key in --data-dir.
    Show,
}

/// Where the server is and who calls it.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The server's URL.
    #[arg(long, env = "KEYHOLD_URL")]
    pub url: Option<String>,
    /// A bearer token (from `keyhold token`).
    #[arg(long, env = "KEYHOLD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Trust this PEM certificate (for a server with a private CA or self-signed cert).
    #[arg(long, env = "KEYHOLD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

/// `keyhold serve` flags. Each may also come from the environment or from the
/// configuration file (flags win over the environment, the environment over the file).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file with any of: listen, database_url, tls_cert, tls_key,
    /// platform_principal, public_url, local_region, realms_file, probe_interval,
    /// usage_flush_interval_ms, admin_public_key, dev, log_format, log_level,
    /// otlp_endpoint, handshake_timeout, header_timeout, body_timeout, idle_timeout,
    /// max_connections, max_in_flight, webhook_allow_private, webhook_retry_scale,
    /// tenant_rate, service_rate, tenant_kms_budget.
    #[arg(long, env = "KEYHOLD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8700].
    #[arg(long, env = "KEYHOLD_LISTEN")]
    pub listen: Option<String>,
    /// postgres://USER@HOST:PORT/DB (or sqlite://PATH) [default: SQLite in --data-dir].
    #[arg(long, env = "KEYHOLD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS.
    #[arg(long, env = "KEYHOLD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "KEYHOLD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// IAM principal ARN keyhold runs as (for key policies and templates).
    #[arg(long, env = "KEYHOLD_PLATFORM_PRINCIPAL")]
    pub platform_principal: Option<String>,
    /// The address clients reach keyhold at (`https://keyhold.example.com`, behind a
    /// proxy): console links are built on it, and console forms must come from it
    /// [default: the request's Host].
    #[arg(long, env = "KEYHOLD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The region this instance runs in (decryption asks its keys first).
    #[arg(long, env = "KEYHOLD_LOCAL_REGION")]
    pub local_region: Option<String>,
    /// Replace the built-in realm catalog with this JSON file.
    #[arg(long, env = "KEYHOLD_REALMS_FILE")]
    pub realms_file: Option<PathBuf>,
    /// Seconds between probes of every tenant's keys (0 disables) [default: 30].
    #[arg(long, env = "KEYHOLD_PROBE_INTERVAL")]
    pub probe_interval: Option<u64>,
    /// Milliseconds between writes of usage counts to the audit trail: the most a crash
    /// (`kill -9`) can lose [default: 2000].
    #[arg(long, env = "KEYHOLD_USAGE_FLUSH_INTERVAL_MS")]
    pub usage_flush_interval_ms: Option<u64>,
    /// The admin public key (Ed25519, base64 or hex, or a file holding it) that verifies
    /// admin and tenant-admin tokens; required outside the embedded default unless --dev.
    #[arg(long, env = "KEYHOLD_ADMIN_PUBLIC_KEY")]
    pub admin_public_key: Option<String>,
    /// Create development credentials (admin key, `dev` service with every purpose) in
    /// --data-dir even on PostgreSQL. Never in production.
    #[arg(long, env = "KEYHOLD_DEV")]
    pub dev: bool,
    /// Log format: text (human-readable) or json (one object per line) [default: text].
    #[arg(long, env = "KEYHOLD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level or filter directives (error, warn, info, debug, trace, or e.g.
    /// "info,keyhold::request=warn"); RUST_LOG when not given [default: info].
    #[arg(long, env = "KEYHOLD_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g.
    /// http://127.0.0.1:4318 (spans are posted to /v1/traces).
    #[arg(long, env = "KEYHOLD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Seconds a TLS handshake may take [default: 10].
    #[arg(long, env = "KEYHOLD_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<u64>,
    /// Seconds a request's head may take to arrive, from its first byte [default: 10].
    #[arg(long, env = "KEYHOLD_HEADER_TIMEOUT")]
    pub header_timeout: Option<u64>,
    /// Seconds a request body may take to arrive in full (408 after) [default: 30].
    #[arg(long, env = "KEYHOLD_BODY_TIMEOUT")]
    pub body_timeout: Option<u64>,
    /// Seconds without a byte moving either way, outside a request being handled, after
    /// which a connection is closed: how long a keep-alive (or new) connection waits for
    /// its next request, and how long a response (a stream's included) may stall
    /// [default: 60].
    #[arg(long, env = "KEYHOLD_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Connections served at once; beyond, 503 overloaded (keep under the file-descriptor
    /// limit, `ulimit -n`) [default: 1024].
    #[arg(long, env = "KEYHOLD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Requests handled at once; beyond, 503 overloaded with Retry-After [default: 512].
    #[arg(long, env = "KEYHOLD_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Let webhook endpoints use http:// and loopback, private or link-local addresses
    /// (development and tests; never where tenants register endpoints).
    #[arg(long, env = "KEYHOLD_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Multiplies the webhook retry schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h,
    /// 20 h, 24 h) [default: 1].
    #[arg(long, env = "KEYHOLD_WEBHOOK_RETRY_SCALE")]
    pub webhook_retry_scale: Option<f64>,
    /// Crypto requests per second per tenant, per instance; beyond, 429 rate_limited
    /// (0: no limit) [default: 0].
    #[arg(long, env = "KEYHOLD_TENANT_RATE")]
    pub tenant_rate: Option<f64>,
    /// Crypto requests per second per service, per instance (0: no limit) [default: 0].
    #[arg(long, env = "KEYHOLD_SERVICE_RATE")]
    pub service_rate: Option<f64>,
    /// Key-service (KMS) calls per minute per tenant, per instance; beyond, 429
    /// rate_limited (0: no limit) [default: 6000].
    #[arg(long, env = "KEYHOLD_TENANT_KMS_BUDGET")]
    pub tenant_kms_budget: Option<u32>,
}

/// How the server writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `keyhold token` flags.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("who").required(true).args(["service", "admin", "tenant_admin"]))]
pub struct TokenArgs {
    /// A token for this service (its key is service-keys/NAME.key in --data-dir).
    #[arg(long)]
    pub service: Option<String>,
    /// An admin token.
    #[arg(long)]
    pub admin: bool,
    /// A tenant-admin token for this tenant.
    #[arg(long)]
    pub tenant_admin: Option<String>,
    /// Lifetime in seconds, at most 600.
    #[arg(long, default_value_t = 300)]
    pub lifetime: u64,
}

/// `keyhold tenant` commands.
#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant (pending until its keys validate).
    Create {
        /// Tenant id.
        #[arg(long)]
        id: String,
        /// Realm id.
        #[arg(long)]
        realm: String,
        /// cmk, byok or local.
        #[arg(long)]
        mode: String,
        /// For byok: the role keyhold assumes in the tenant's account (its ExternalId is
        /// keyhold-<tenant>).
        #[arg(long)]
        role_arn: Option<String>,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tenants.
    List {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a tenant as JSON.
    Show {
        /// Tenant id.
        id: String,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a tenant: its key references are destroyed (crypto-shredding).
    Delete {
        /// Tenant id.
        id: String,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `keyhold key` commands.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Validate a key and attach it for one region; prints the validation report.
    Attach {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Region of the tenant's realm.
        #[arg(long)]
        region: String,
        /// Key ARN (or local key id).
        #[arg(long)]
        key: String,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Validate a tenant's attached keys again.
    Validate {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The key history with what each key protects (from the data-key ledger).
    List {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Progress of the tenant's key change (messages re-encrypted / under decrypt-only
    /// keys).
    Progress {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Retire a decrypt-only key (refused while it protects messages not re-encrypted,
    /// unless --force).
    Retire {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// The key's region.
        #[arg(long)]
        region: String,
        /// Key ARN (or local key id).
        #[arg(long)]
        key: String,
        /// Retire even though messages under it were not re-encrypted.
        #[arg(long)]
        force: bool,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make every instance stop using the tenant's current data keys (suspected leak).
    RotateDataKeys {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Give a BYOK tenant a new role (validated through it first); prints the report.
    Role {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// The new role ARN.
        #[arg(long)]
        role_arn: String,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `keyhold audit` commands.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Write a tenant's audit trail as JSON lines, ending with its signed checkpoint (what
    /// `audit verify --file` checks offline).
    Export {
        /// Tenant id.
        #[arg(long)]
        tenant: String,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Verify a tenant's audit trail (exit 0 when intact, 2 when broken): through a
    /// running server with --tenant, or offline, an export file with --file and the
    /// audit public key with --public-key, trusting no database.
    Verify {
        /// Tenant id (verification by the server).
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        tenant: Option<String>,
        /// An export (`keyhold audit export`) to verify offline.
        #[arg(long, requires = "public_key")]
        file: Option<PathBuf>,
        /// The audit public key to trust (base64 or hex of the 32 bytes, or a file holding
        /// it, as `GET /v1/audit/public-key` or `keyhold audit public-key` print it).
        #[arg(long, requires = "file")]
        public_key: Option<String>,
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the audit public key (base64), to verify exports with: of the server at
    /// --url, or without one the key `serve` wrote in the data dir.
    PublicKey {
        /// Server and token.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// How validation findings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per finding, grouped by region.
    Text,
    /// The whole report as JSON.
    Json,
}

/// `keyhold validate` flags.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Tenant the keys serve.
    #[arg(long)]
    pub tenant: String,
    /// The tenant's data-residency realm.
    #[arg(long)]
    pub realm: String,
    /// A key of the tenant (AWS KMS key ARN, or local key id); one per region of the realm.
    #[arg(long = "key", required = true)]
    pub keys: Vec<String>,
    /// IAM principal ARN keyhold runs as; when given, readable key policies are analysed for it.
    #[arg(long)]
    pub platform_principal: Option<String>,
    /// Replace the built-in realm catalog with this JSON file.
    #[arg(long, env = "KEYHOLD_REALMS_FILE")]
    pub realms_file: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// How to reach AWS KMS.
    #[command(flatten)]
    pub aws: AwsArgs,
}

/// How keyhold reaches AWS KMS keys (used only when a key is an AWS ARN). Credentials,
/// region and endpoints come from the standard AWS configuration (environment, profiles,
/// `AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL_STS`).
#[derive(Debug, Args, Clone)]
pub struct AwsArgs {
    /// BYOK mode: assume this role in the tenant's account (through STS) to use its keys.
    #[arg(long, env = "KEYHOLD_ASSUME_ROLE")]
    pub assume_role: Option<String>,
    /// ExternalId for --assume-role; default keyhold-<tenant>, as in the generated template.
    #[arg(long, requires = "assume_role")]
    pub external_id: Option<String>,
    /// The region this process runs in: decryption asks that region's key first.
    #[arg(long, env = "KEYHOLD_LOCAL_REGION")]
    pub local_region: Option<String>,
}

/// Which CloudFormation template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TemplateKind {
    /// A KMS key, its alias and its key policy (deploy in each region of the realm).
    Cmk,
    /// An IAM role the platform assumes with the tenant's ExternalId.
    ByokRole,
}

/// `keyhold template` flags.
#[derive(Debug, Args)]
pub struct TemplateArgs {
    /// Which template.
    #[arg(long, value_enum)]
    pub kind: TemplateKind,
    /// Tenant, realm, platform principal, realm catalog.
    #[command(flatten)]
    pub onboarding: OnboardingArgs,
}

/// `keyhold policy` flags.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Tenant, realm, platform principal, realm catalog.
    #[command(flatten)]
    pub onboarding: OnboardingArgs,
    /// Only this region's policy, printed bare (ready to paste); default: every region.
    #[arg(long)]
    pub region: Option<String>,
    /// The tenant's AWS account id; without it the policy holds a placeholder to fill in.
    #[arg(long)]
    pub account: Option<String>,
}

/// Flags shared by the onboarding commands.
#[derive(Debug, Args)]
pub struct OnboardingArgs {
    /// Tenant the key or role serves.
    #[arg(long)]
    pub tenant: String,
    /// The tenant's data-residency realm (eu, us, au, ca, de, in, jp, kr, sg, uk).
    #[arg(long)]
    pub realm: String,
    /// IAM principal ARN keyhold runs as, e.g. arn:aws:iam::111122223333:role/keyhold.
    #[arg(long)]
    pub platform_principal: String,
    /// Replace the built-in realm catalog with this JSON file.
    #[arg(long, env = "KEYHOLD_REALMS_FILE")]
    pub realms_file: Option<std::path::PathBuf>,
}

/// Local key provider commands.
#[derive(Debug, Subcommand)]
pub enum LocalKms {
    /// Create a key; prints its id alone on standard output.
    CreateKey {
        /// Region the key belongs to, e.g. eu-central-1.
        #[arg(long)]
        region: String,
        /// Free-form description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List keys that have not been deleted.
    ListKeys,
    /// Describe a key as JSON.
    DescribeKey {
        /// Key id.
        key: String,
    },
    /// Disable a key: it refuses every operation until enabled.
    DisableKey {
        /// Key id.
        key: String,
    },
    /// Enable a disabled key.
    EnableKey {
        /// Key id.
        key: String,
    },
    /// Schedule a key's destruction after a waiting period.
    ScheduleKeyDeletion {
        /// Key id.
        key: String,
        /// Waiting period in days, 7 to 30.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Cancel a scheduled deletion (the key is left disabled).
    CancelKeyDeletion {
        /// Key id.
        key: String,
    },
    /// Add new key material; older ciphertexts still decrypt.
    RotateKey {
        /// Key id.
        key: String,
    },
}

/// `keyhold encrypt` flags.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Root key to protect the data key (local key id or AWS KMS key ARN); repeat for each
    /// region (home region first). Without --key, the server at --url encrypts with the
    /// tenant's registered keys.
    #[arg(long = "key", required_unless_present = "url")]
    pub keys: Vec<String>,
    /// Tenant the data belongs to.
    #[arg(long)]
    pub tenant: String,
    /// Purpose (data class or service) of the data.
    #[arg(long)]
    pub purpose: String,
    /// Extra encryption context as key=value; repeatable.
    #[arg(long = "context", value_name = "KEY=VALUE")]
    pub context: Vec<String>,
    /// Algorithm suite: 0x0478 (default) or 0x0578 (adds an ECDSA P-384 signature).
    #[arg(long, default_value = "0x0478")]
    pub suite: String,
    /// Plaintext bytes per frame.
    #[arg(long, default_value_t = 4096)]
    pub frame_length: u32,
    /// Never show a progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// How to reach AWS KMS.
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Server and token (used when no --key is given).
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `keyhold decrypt` flags.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Tenant the caller acts for; a message of any other tenant is refused.
    #[arg(long)]
    pub tenant: String,
    /// Refuse messages whose algorithm suite does not commit to its data key.
    #[arg(long)]
    pub require_commitment: bool,
    /// Never show a progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// How to reach AWS KMS.
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Decrypt through the server at --url instead of with local or AWS keys directly.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `keyhold reencrypt` flags.
#[derive(Debug, Args)]
pub struct ReencryptArgs {
    /// The tenant the message belongs to; a message of any other tenant is refused.
    #[arg(long)]
    pub tenant: String,
    /// Offline: the new root keys (local key id or AWS KMS key ARN), repeat per region,
    /// home region first. Without --key, the server at --url re-encrypts under the
    /// tenant's active keys.
    #[arg(long = "key", required_unless_present = "url")]
    pub keys: Vec<String>,
    /// Plaintext bytes per frame of the new message (offline).
    #[arg(long, default_value_t = 4096)]
    pub frame_length: u32,
    /// Never show a progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// How to reach AWS KMS.
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Server and token (used when no --key is given).
    #[command(flatten)]
    pub client: ClientArgs,
}
