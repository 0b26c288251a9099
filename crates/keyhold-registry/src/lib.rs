//! keyhold's registry: tenants (realm, mode, lifecycle state), each tenant's key per
//! region (reference, state, last check, findings), the service identities allowed to call
//! keyhold, and the storage of the per-tenant hash-chained audit trail.
//!
//! One implementation serves both backends through sqlx's `Any` driver: SQLite (the
//! embedded default, one file in the data dir) and PostgreSQL (`postgres://...`). Each
//! backend has its own migrations (`migrations/sqlite`, `migrations/postgres`), applied
//! on [`Registry::connect`]; queries use `$N` placeholders, which both accept.
//!
//! The audit trail is append-only here: there is no update or delete of an event. The
//! chain hash of each new event is computed by the caller's function from the previous
//! event's hash, inside the transaction that reads it, and the caller's signature over the
//! new head is stored with the head (`keyhold-audit` owns the hashing, the signing key and
//! the verification).
//!
//! Appends to one trail are serialised, so none is lost however many instances write to
//! one tenant: on SQLite by the database write lock (`BEGIN IMMEDIATE`), on PostgreSQL by
//! a transaction-scoped advisory lock per tenant taken before the head is read. A
//! transient failure (busy, serialization failure, deadlock, a lost race for the sequence
//! number) is retried with exponential backoff and jitter for about ten seconds; after
//! that the error is returned, and the caller fails its request closed.
//!
//! A database failure is [`RegistryError::Database`] (retryable); everything else names
//! what the caller did wrong.

#![forbid(unsafe_code)]

mod console;
mod events;
mod ledger;
mod notify;
mod schedule;
mod types;
mod webhooks;

use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::time::{Duration, Instant};

use keyhold_core::{Purpose, RealmId, Region, TenantId};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use console::{ConsoleSession, ConsoleUser};
pub use events::{EventFilter, NewEvent, StoredEvent};
pub use ledger::{DataKeyUses, KeyProtects, Reencrypted, Totals};
pub use notify::{CHANNEL, TenantChanges};
pub use schedule::{ClaimedProbe, KeyTraffic};
pub use types::{
    AuditHead, AuditRow, Cause, KeyCheck, KeyStatus, Purposes, ServiceIdentity, ServiceKey, Tenant, TenantKey,
    TenantMode, TenantState,
};
pub use webhooks::{AttemptOutcome, AttemptRow, ClaimedDelivery, DeliveryRow, TestQueued, WebhookEndpoint};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Which database holds the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, a file in the data dir.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The database URL names no supported backend.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DB")]
    UnsupportedUrl(String),
    /// A tenant with this id exists already.
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),
    /// No such tenant.
    #[error("tenant {0} does not exist")]
    TenantNotFound(TenantId),
    /// The tenant was deleted (crypto-shredded); nothing about it changes any more.
    #[error("tenant {0} was deleted")]
    TenantDeleted(TenantId),
    /// The tenant changed since the caller read it (another instance or request acted
    /// first); nothing was changed. Read it again and decide again.
    #[error("tenant {tenant} changed meanwhile (now {state}, version {version}); nothing was changed")]
    Conflict {
        /// The tenant.
        tenant: TenantId,
        /// Its state now.
        state: TenantState,
        /// Its version now.
        version: u64,
    },
    /// The key is attached to another tenant (or to another region): a key protects one
    /// tenant's data only.
    #[error("key {key} is already attached to another tenant or region")]
    KeyInUse {
        /// The key.
        key: String,
    },
    /// The key was retired from this tenant's history and is never used again.
    #[error("key {key} was retired and cannot be attached again")]
    KeyRetired {
        /// The key.
        key: String,
    },
    /// A stored value does not parse (the database was edited by hand, or by a newer
    /// keyhold).
    #[error("the registry holds an invalid value: {0}")]
    Corrupt(String),
    /// A service with this name is registered already.
    #[error("service {0:?} is already registered")]
    ServiceExists(String),
    /// No service with this name is registered.
    #[error("no service named {0:?} is registered")]
    ServiceNotFound(String),
    /// The caller's signing function could not sign a new audit head, so the event was not
    /// stored.
    #[error("the new audit head could not be signed; the event was not stored")]
    HeadNotSigned,
    /// The key is not in the tenant's history for that region.
    #[error("key {key} is not in the tenant's key history for that region")]
    KeyNotFound {
        /// The key.
        key: String,
    },
    /// The key is the region's active key: attach another one first.
    #[error("key {key} is its region's active key; attach a new key for the region first")]
    KeyActive {
        /// The key.
        key: String,
    },
    /// A write the caller needed did not happen (the cause in words); retry.
    #[error("registry write failed: {0}")]
    Unavailable(String),
    /// The database failed or is unreachable; retry.
    #[error("registry database error: {0}")]
    Database(#[from] sqlx::Error),
}

type Result<T> = std::result::Result<T, RegistryError>;

/// A key's status change in its tenant's history: the key, its status before (`None` when
/// first attached) and after.
pub type StatusChange = (String, Option<KeyStatus>, KeyStatus);

/// The registry.
#[derive(Clone)]
pub struct Registry {
    pool: AnyPool,
    backend: Backend,
    /// The database URL (for PostgreSQL's notification listener); never shown.
    url: std::sync::Arc<str>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// The chain hash function of the audit trail: (previous hash, seq, time, body) to hash.
pub type ChainFn<'f> = dyn Fn(&[u8; 32], u64, u64, &str) -> [u8; 32] + Sync + 'f;

/// The head signer: sees the head it would extend (none for a new trail) and the new
/// head's seq and hash; `None` refuses the append.
pub type SignFn<'f> = dyn Fn(Option<&AuditHead>, u64, &[u8; 32]) -> Option<Vec<u8>> + Sync + 'f;

/// The first event of a new tenant's trail, appended in the tenant's creation
/// transaction: its JSON body, the chain function and the head signer.
pub struct Genesis<'a> {
    /// The event, as JSON.
    pub body: &'a str,
    /// The chain hash function.
    pub chain: &'a ChainFn<'a>,
    /// The head signer (sees the head it would extend: none, for a new tenant).
    pub sign: &'a SignFn<'a>,
}

/// The first pause before retrying an append that failed transiently; it doubles after
/// each attempt up to [`APPEND_MAX_BACKOFF`].
const APPEND_FIRST_BACKOFF: Duration = Duration::from_millis(2);

/// The longest pause between two append attempts.
const APPEND_MAX_BACKOFF: Duration = Duration::from_millis(250);

/// How long an append keeps retrying transient failures before it reports the error: long
/// enough to ride out a burst of contention or a failover, short enough that the request
/// waiting on it fails instead of hanging.
const APPEND_DEADLINE: Duration = Duration::from_secs(10);

impl Registry {
    /// Connects to `url` (`sqlite://PATH` creating the file if needed, or
    /// `postgres://...`) and applies the backend's migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(RegistryError::UnsupportedUrl(url.to_owned()));
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let url = match backend {
            Backend::Sqlite => {
                options = options.max_connections(4).after_connect(|conn, _| {
                    Box::pin(async move {
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 5000").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                        Ok(())
                    })
                });
                if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") }
            }
            Backend::Postgres => {
                options = options.max_connections(16);
                url.to_owned()
            }
        };
        let pool = options.connect(&url).await?;
        let shared_url: std::sync::Arc<str> = url.as_str().into();
        match backend {
            Backend::Sqlite => SQLITE.run(&pool).await,
            Backend::Postgres => POSTGRES.run(&pool).await,
        }
        .map_err(|e| RegistryError::Database(e.into()))?;
        Ok(Self { pool, backend, url: shared_url })
    }

    /// Opens (creating if needed) the SQLite registry at `path`.
    pub async fn open_sqlite(path: &std::path::Path) -> Result<Self> {
        Self::connect(&format!("sqlite://{}", path.display())).await
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers (for readiness checks).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Creates a tenant in state `pending` (cause `created`, version 0); `role_arn` is the
    /// role keyhold assumes for a BYOK tenant.
    pub async fn create_tenant(
        &self,
        id: &TenantId,
        realm: &RealmId,
        mode: TenantMode,
        role_arn: Option<&str>,
        now_ms: u64,
    ) -> Result<Tenant> {
        self.create_tenant_recorded(id, realm, mode, role_arn, now_ms, None, &[]).await
    }

    /// As [`Registry::create_tenant`], appending `genesis` (the creation event) to the
    /// tenant's trail in the same transaction: a tenant never exists without its first
    /// event, whatever crashes.
    #[allow(clippy::too_many_arguments, reason = "the tenant's fields, its first audit event, its lifecycle events")]
    pub async fn create_tenant_recorded(
        &self,
        id: &TenantId,
        realm: &RealmId,
        mode: TenantMode,
        role_arn: Option<&str>,
        now_ms: u64,
        genesis: Option<Genesis<'_>>,
        events: &[NewEvent],
    ) -> Result<Tenant> {
        let mut backoff = Backoff::new();
        loop {
            match self.try_create_tenant(id, realm, mode, role_arn, now_ms, genesis.as_ref(), events).await {
                Err(RegistryError::Database(sqlx::Error::Database(e))) if is_busy(e.as_ref()) && backoff.more() => {
                    backoff.wait().await;
                }
                other => return other,
            }
        }
    }

    #[allow(clippy::too_many_arguments, reason = "the tenant's fields, its first audit event, its lifecycle events")]
    async fn try_create_tenant(
        &self,
        id: &TenantId,
        realm: &RealmId,
        mode: TenantMode,
        role_arn: Option<&str>,
        now_ms: u64,
        genesis: Option<&Genesis<'_>>,
        events: &[NewEvent],
    ) -> Result<Tenant> {
        let now = ms(now_ms);
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "INSERT INTO tenants (id, realm, mode, state, reason, created_ms, updated_ms, role_arn, version, cause) \
             VALUES ($1, $2, $3, $4, NULL, $5, $5, $6, 0, $7)",
        )
        .bind(id.as_str())
        .bind(realm.as_str())
        .bind(mode.as_str())
        .bind(TenantState::Pending.as_str())
        .bind(now)
        .bind(role_arn)
        .bind(Cause::Created.as_str())
        .execute(&mut *tx)
        .await;
        if let Err(e) = r {
            return Err(match e {
                sqlx::Error::Database(e) if e.is_unique_violation() => RegistryError::TenantExists(id.clone()),
                e => e.into(),
            });
        }
        if let Some(g) = genesis
            && self.append_in(&mut tx, id, now_ms, g.body, g.chain, g.sign).await?.is_none()
        {
            return Err(RegistryError::HeadNotSigned);
        }
        self.insert_events(&mut tx, events, now_ms).await?;
        tx.commit().await?;
        match Ok::<(), sqlx::Error>(()) {
            Ok(()) => Ok(Tenant {
                id: id.clone(),
                realm: realm.clone(),
                mode,
                state: TenantState::Pending,
                cause: Some(Cause::Created),
                reason: None,
                version: 0,
                role_arn: role_arn.map(str::to_owned),
                created_ms: now_ms,
                updated_ms: now_ms,
                dek_generation: 0,
            }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(RegistryError::TenantExists(id.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// One tenant.
    pub async fn tenant(&self, id: &TenantId) -> Result<Option<Tenant>> {
        let row = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(tenant_from_row).transpose()
    }

    /// Every tenant, by id.
    pub async fn tenants(&self) -> Result<Vec<Tenant>> {
        let rows =
            sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id")).fetch_all(&self.pool).await?;
        rows.iter().map(tenant_from_row).collect()
    }

    /// How many tenants are in each state (one aggregate query, for metrics).
    pub async fn tenant_states(&self) -> Result<Vec<(TenantState, usize)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM tenants GROUP BY state").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let n: i64 = r.try_get(1)?;
                Ok((parse(r, 0, TenantState::from_str)?, usize::try_from(n).unwrap_or(0)))
            })
            .collect()
    }

    /// Moves `from` (the tenant as the caller read it) to `to`, compare-and-set: the
    /// change happens only if the tenant is still in `from.state` at `from.version`, so of
    /// two instances deciding on the same tenant only one wins; the other gets
    /// [`RegistryError::Conflict`]. Moving to `deleted` also destroys every key reference
    /// of the tenant (crypto-shredding), in the same transaction. A deleted tenant never
    /// changes again.
    pub async fn transition(
        &self,
        from: &Tenant,
        to: TenantState,
        cause: Cause,
        reason: Option<&str>,
        now_ms: u64,
        events: &[NewEvent],
    ) -> Result<Tenant> {
        if to == TenantState::Deleted {
            return Ok(self.delete_tenant(from, reason, now_ms, events).await?.0);
        }
        let mut tx = self.begin_write().await?;
        self.compare_and_set(&mut tx, from, to, cause, reason, now_ms).await?;
        self.insert_events(&mut tx, events, now_ms).await?;
        tx.commit().await?;
        self.tenant(&from.id).await?.ok_or_else(|| RegistryError::TenantNotFound(from.id.clone()))
    }

    /// Deletes `from` (as read), compare-and-set like [`Registry::transition`], destroying
    /// its key history in the same transaction; returns the tenant and the keys whose
    /// references were destroyed (for the caller to shred where it can).
    pub async fn delete_tenant(
        &self,
        from: &Tenant,
        reason: Option<&str>,
        now_ms: u64,
        events: &[NewEvent],
    ) -> Result<(Tenant, Vec<String>)> {
        let mut tx = self.begin_write().await?;
        self.compare_and_set(&mut tx, from, TenantState::Deleted, Cause::Deleted, reason, now_ms).await?;
        let keys: Vec<String> = sqlx::query("SELECT key_arn FROM key_history WHERE tenant_id = $1")
            .bind(from.id.as_str())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        sqlx::query("DELETE FROM key_history WHERE tenant_id = $1").bind(from.id.as_str()).execute(&mut *tx).await?;
        for table in ["data_key_wraps", "data_keys", "reencrypted_messages"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                .bind(from.id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        self.insert_events(&mut tx, events, now_ms).await?;
        tx.commit().await?;
        let t = self.tenant(&from.id).await?.ok_or_else(|| RegistryError::TenantNotFound(from.id.clone()))?;
        Ok((t, keys))
    }

    /// Moves the tenant from `from`'s state and version to `to` within `tx`, or says why
    /// it did not (gone, deleted, or changed meanwhile: [`RegistryError::Conflict`]).
    async fn compare_and_set(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        from: &Tenant,
        to: TenantState,
        cause: Cause,
        reason: Option<&str>,
        now_ms: u64,
    ) -> Result<()> {
        let r = sqlx::query(
            "UPDATE tenants SET state = $1, cause = $2, reason = $3, updated_ms = $4, version = version + 1 \
             WHERE id = $5 AND state = $6 AND version = $7 AND state <> $8",
        )
        .bind(to.as_str())
        .bind(cause.as_str())
        .bind(reason)
        .bind(ms(now_ms))
        .bind(from.id.as_str())
        .bind(from.state.as_str())
        .bind(ms(from.version))
        .bind(TenantState::Deleted.as_str())
        .execute(&mut **tx)
        .await?;
        if r.rows_affected() > 0 {
            return Ok(());
        }
        // Read within the transaction: it holds a connection (and on SQLite the write
        // lock), so asking the pool for another could wait on itself.
        let now = sqlx::query(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"))
            .bind(from.id.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        Err(match now.as_ref().map(tenant_from_row).transpose()? {
            None => RegistryError::TenantNotFound(from.id.clone()),
            Some(t) if t.state == TenantState::Deleted => RegistryError::TenantDeleted(from.id.clone()),
            Some(t) => RegistryError::Conflict { tenant: from.id.clone(), state: t.state, version: t.version },
        })
    }

    /// How many trails have a signed head (a new instance without the audit key must not
    /// start over them).
    pub async fn signed_heads(&self) -> Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM audit_heads WHERE sig IS NOT NULL")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(unms(n))
    }

    /// The trails whose head carries no signature (written before heads were signed).
    pub async fn unsigned_heads(&self) -> Result<Vec<(TenantId, AuditHead)>> {
        let rows =
            sqlx::query("SELECT tenant_id, seq, hash FROM audit_heads WHERE sig IS NULL").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let hash: Vec<u8> = r.try_get(2)?;
                let hash = <[u8; 32]>::try_from(hash.as_slice())
                    .map_err(|_| RegistryError::Corrupt(format!("audit head hash of {} bytes", hash.len())))?;
                Ok((parse(r, 0, TenantId::parse)?, AuditHead { seq: unms(r.try_get(1)?), hash, sig: None }))
            })
            .collect()
    }

    /// Signs an unsigned head where it still is (adoption of trails from before heads were
    /// signed); returns whether it was.
    pub async fn sign_unsigned_head(&self, tenant: &TenantId, head: &AuditHead, sig: &[u8]) -> Result<bool> {
        let r = sqlx::query("UPDATE audit_heads SET sig = $1 WHERE tenant_id = $2 AND seq = $3 AND sig IS NULL")
            .bind(sig.to_vec())
            .bind(tenant.as_str())
            .bind(ms(head.seq))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Attaches `key` as the active key of `region` for `tenant`, with what validation
    /// found (`check`, `findings` JSON): the region's previous active key becomes
    /// `decrypt_only` (it still decrypts what it protects); a key already in the history
    /// becomes active again. In one transaction, bumping the tenant's version. Returns the
    /// status changes made, as (key, previous status or `None`, new status); `events`
    /// turns them into the events stored in the same transaction. Whatever the tenant's
    /// realm and mode now: the lifecycle, which validated the key for them, uses
    /// [`Registry::attach_key_for`].
    #[allow(clippy::too_many_arguments, reason = "the key, what validation found, and the change's events")]
    pub async fn attach_key(
        &self,
        tenant: &TenantId,
        region: &Region,
        key: &str,
        check: KeyCheck,
        findings: &str,
        now_ms: u64,
        events: impl FnOnce(&[StatusChange]) -> Vec<NewEvent> + Send,
    ) -> Result<Vec<StatusChange>> {
        self.attach_key_for(tenant, None, region, key, check, findings, now_ms, events).await
    }

    /// [`Registry::attach_key`], only while the tenant is still in the realm and mode
    /// (`setup`) the key was validated for: a realm or mode chosen meanwhile
    /// ([`Registry::configure_tenant`]) makes it a [`RegistryError::Conflict`].
    #[allow(clippy::too_many_arguments, reason = "the key, what validation found, and the change's events")]
    pub async fn attach_key_for(
        &self,
        tenant: &TenantId,
        setup: Option<(&RealmId, TenantMode)>,
        region: &Region,
        key: &str,
        check: KeyCheck,
        findings: &str,
        now_ms: u64,
        events: impl FnOnce(&[StatusChange]) -> Vec<NewEvent> + Send,
    ) -> Result<Vec<StatusChange>> {
        let mut tx = self.begin_write().await?;
        // The version bump first: it locks the tenant's row (PostgreSQL), so a deletion
        // or a realm change running concurrently either sees this attach's key or makes
        // it fail here.
        let bump = match setup {
            None => "UPDATE tenants SET version = version + 1, updated_ms = $1 WHERE id = $2 AND state <> $3",
            Some(_) => {
                "UPDATE tenants SET version = version + 1, updated_ms = $1 WHERE id = $2 AND state <> $3 \
                 AND realm = $4 AND mode = $5"
            }
        };
        let mut bumped = sqlx::query(bump).bind(ms(now_ms)).bind(tenant.as_str()).bind(TenantState::Deleted.as_str());
        if let Some((realm, mode)) = setup {
            bumped = bumped.bind(realm.as_str()).bind(mode.as_str());
        }
        let bumped = bumped.execute(&mut *tx).await?;
        if bumped.rows_affected() == 0 {
            drop(tx);
            return Err(match self.tenant(tenant).await? {
                Some(t) if t.state != TenantState::Deleted => {
                    RegistryError::Conflict { tenant: tenant.clone(), state: t.state, version: t.version }
                }
                _ => self.not_live(tenant).await,
            });
        }
        let owner: Option<(String, String, String)> =
            sqlx::query("SELECT tenant_id, region, status FROM key_history WHERE key_arn = $1")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .transpose()?;
        let mut changes = Vec::new();
        let previous_status = match owner {
            Some((t, _, _)) if t != tenant.as_str() => {
                return Err(RegistryError::KeyInUse { key: key.to_owned() });
            }
            Some((_, r, _)) if r != region.as_str() => {
                return Err(RegistryError::KeyInUse { key: key.to_owned() });
            }
            Some((_, _, status)) => {
                let status = KeyStatus::from_str(&status).map_err(RegistryError::Corrupt)?;
                if status == KeyStatus::Retired {
                    return Err(RegistryError::KeyRetired { key: key.to_owned() });
                }
                Some(status)
            }
            None => None,
        };
        let demoted: Vec<String> = sqlx::query(
            "SELECT key_arn FROM key_history WHERE tenant_id = $1 AND region = $2 AND status = $3 AND key_arn <> $4",
        )
        .bind(tenant.as_str())
        .bind(region.as_str())
        .bind(KeyStatus::Active.as_str())
        .bind(key)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
        for old in demoted {
            sqlx::query("UPDATE key_history SET status = $1, status_ms = $2 WHERE tenant_id = $3 AND key_arn = $4")
                .bind(KeyStatus::DecryptOnly.as_str())
                .bind(ms(now_ms))
                .bind(tenant.as_str())
                .bind(old.as_str())
                .execute(&mut *tx)
                .await?;
            changes.push((old, Some(KeyStatus::Active), KeyStatus::DecryptOnly));
        }
        sqlx::query(
            "INSERT INTO key_history (tenant_id, region, key_arn, status, state, last_check_ms, findings, attached_ms, \
             status_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $6) \
             ON CONFLICT (tenant_id, region, key_arn) DO UPDATE SET status = excluded.status, \
             state = excluded.state, last_check_ms = excluded.last_check_ms, findings = excluded.findings, \
             status_ms = CASE WHEN key_history.status = excluded.status THEN key_history.status_ms \
             ELSE excluded.status_ms END",
        )
        .bind(tenant.as_str())
        .bind(region.as_str())
        .bind(key)
        .bind(KeyStatus::Active.as_str())
        .bind(check.as_str())
        .bind(ms(now_ms))
        .bind(findings)
        .execute(&mut *tx)
        .await?;
        if previous_status != Some(KeyStatus::Active) {
            changes.push((key.to_owned(), previous_status, KeyStatus::Active));
        }
        self.insert_events(&mut tx, &events(&changes), now_ms).await?;
        tx.commit().await?;
        Ok(changes)
    }

    /// Why a change to `tenant` touched no row: it does not exist, or it was deleted (or
    /// the registry failed saying which).
    pub(crate) async fn not_live(&self, tenant: &TenantId) -> RegistryError {
        match self.tenant(tenant).await {
            Ok(None) => RegistryError::TenantNotFound(tenant.clone()),
            Ok(Some(_)) => RegistryError::TenantDeleted(tenant.clone()),
            Err(e) => e,
        }
    }

    /// Sets a pending tenant's realm, mode and role, bumping its version, with `events` in
    /// the same transaction: only while it is `pending` and has no key in its history.
    /// Returns whether it changed. The tenant's row is locked first and the history read
    /// after, in a statement of its own, so a key attached concurrently is either seen
    /// here or finds the realm changed ([`Registry::attach_key_for`]).
    pub async fn configure_tenant(
        &self,
        tenant: &TenantId,
        realm: &RealmId,
        mode: TenantMode,
        role_arn: Option<&str>,
        now_ms: u64,
        events: &[NewEvent],
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let locked =
            sqlx::query("UPDATE tenants SET version = version + 1, updated_ms = $1 WHERE id = $2 AND state = $3")
                .bind(ms(now_ms))
                .bind(tenant.as_str())
                .bind(TenantState::Pending.as_str())
                .execute(&mut *tx)
                .await?;
        if locked.rows_affected() == 0 {
            return Ok(false);
        }
        let keyed = sqlx::query("SELECT 1 FROM key_history WHERE tenant_id = $1 LIMIT 1")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if keyed.is_some() {
            return Ok(false);
        }
        sqlx::query("UPDATE tenants SET realm = $1, mode = $2, role_arn = $3 WHERE id = $4")
            .bind(realm.as_str())
            .bind(mode.as_str())
            .bind(role_arn)
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        self.insert_events(&mut tx, events, now_ms).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Sets a BYOK tenant's role, bumping its version, with `events` in the same
    /// transaction.
    pub async fn set_role(&self, tenant: &TenantId, role_arn: &str, now_ms: u64, events: &[NewEvent]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE tenants SET role_arn = $1, version = version + 1, updated_ms = $2 WHERE id = $3 AND state <> $4",
        )
        .bind(role_arn)
        .bind(ms(now_ms))
        .bind(tenant.as_str())
        .bind(TenantState::Deleted.as_str())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            drop(tx);
            return Err(self.not_live(tenant).await);
        }
        self.insert_events(&mut tx, events, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records what a validation or probe found of a key in the history (its status is
    /// unchanged). When the check differs from the one stored, `on_change` is stored with
    /// it, in one transaction: of several instances reporting the same change, one stores
    /// the event. Returns whether the key was found.
    pub async fn record_check(
        &self,
        tenant: &TenantId,
        key: &str,
        check: KeyCheck,
        findings: Option<&str>,
        now_ms: u64,
        on_change: Option<&NewEvent>,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let changed = sqlx::query(
            "UPDATE key_history SET state = $1, last_check_ms = $2, findings = COALESCE($3, findings) \
             WHERE tenant_id = $4 AND key_arn = $5 AND state <> $1",
        )
        .bind(check.as_str())
        .bind(ms(now_ms))
        .bind(findings)
        .bind(tenant.as_str())
        .bind(key)
        .execute(&mut *tx)
        .await?;
        if changed.rows_affected() > 0 {
            if let Some(e) = on_change {
                self.insert_events(&mut tx, std::slice::from_ref(e), now_ms).await?;
            }
            tx.commit().await?;
            return Ok(true);
        }
        let r = sqlx::query(
            "UPDATE key_history SET last_check_ms = $1, findings = COALESCE($2, findings) \
             WHERE tenant_id = $3 AND key_arn = $4",
        )
        .bind(ms(now_ms))
        .bind(findings)
        .bind(tenant.as_str())
        .bind(key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// A tenant's key history: every key attached and not destroyed, by region, then
    /// oldest first.
    pub async fn keys(&self, tenant: &TenantId) -> Result<Vec<TenantKey>> {
        let rows = sqlx::query(
            "SELECT tenant_id, region, key_arn, status, state, last_check_ms, findings, attached_ms, status_ms \
             FROM key_history WHERE tenant_id = $1 ORDER BY region, attached_ms, key_arn",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TenantKey {
                    tenant: parse(r, 0, TenantId::parse)?,
                    region: parse(r, 1, Region::parse)?,
                    key: r.try_get(2)?,
                    status: parse(r, 3, KeyStatus::from_str)?,
                    state: parse(r, 4, KeyCheck::from_str)?,
                    last_check_ms: r.try_get::<Option<i64>, _>(5)?.map(unms),
                    findings: r.try_get(6)?,
                    attached_ms: unms(r.try_get(7)?),
                    status_ms: unms(r.try_get(8)?),
                })
            })
            .collect()
    }

    /// Registers a new service identity with its first key; refuses a name in use.
    pub async fn add_service(
        &self,
        name: &str,
        purposes: &Purposes,
        public_key: &[u8],
        now_ms: u64,
    ) -> Result<ServiceIdentity> {
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO service_identities (name, public_key, purposes, created_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(public_key.to_vec())
        .bind(purposes.to_string())
        .bind(ms(now_ms))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(RegistryError::ServiceExists(name.to_owned()));
        }
        insert_service_key(&mut tx, name, public_key, now_ms).await?;
        tx.commit().await?;
        self.service(name).await?.ok_or_else(|| RegistryError::ServiceNotFound(name.to_owned()))
    }

    /// Rotates a service's key: `public_key` becomes its newest key, and every older key
    /// is accepted `overlap_ms` more at most (an earlier expiry stays). Keys already
    /// expired are dropped. Returns the service as it is now.
    pub async fn rotate_service_key(
        &self,
        name: &str,
        public_key: &[u8],
        overlap_ms: u64,
        now_ms: u64,
    ) -> Result<ServiceIdentity> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE service_identities SET public_key = $2 WHERE name = $1")
            .bind(name)
            .bind(public_key.to_vec())
            .execute(&mut *tx)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(RegistryError::ServiceNotFound(name.to_owned()));
        }
        let until = ms(now_ms.saturating_add(overlap_ms));
        sqlx::query(
            "UPDATE service_keys SET expires_ms = $2 WHERE service = $1 AND (expires_ms IS NULL OR expires_ms > $2)",
        )
        .bind(name)
        .bind(until)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM service_keys WHERE service = $1 AND expires_ms IS NOT NULL AND expires_ms <= $2")
            .bind(name)
            .bind(ms(now_ms))
            .execute(&mut *tx)
            .await?;
        let id = service_key_id(public_key);
        sqlx::query("DELETE FROM service_keys WHERE service = $1 AND key_id = $2")
            .bind(name)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        insert_service_key(&mut tx, name, public_key, now_ms).await?;
        tx.commit().await?;
        self.service(name).await?.ok_or_else(|| RegistryError::ServiceNotFound(name.to_owned()))
    }

    /// Replaces what a service may use.
    pub async fn set_service_purposes(&self, name: &str, purposes: &Purposes) -> Result<ServiceIdentity> {
        let updated = sqlx::query("UPDATE service_identities SET purposes = $2 WHERE name = $1")
            .bind(name)
            .bind(purposes.to_string())
            .execute(&self.pool)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(RegistryError::ServiceNotFound(name.to_owned()));
        }
        self.service(name).await?.ok_or_else(|| RegistryError::ServiceNotFound(name.to_owned()))
    }

    /// Removes a service and its keys; returns whether it existed.
    pub async fn remove_service(&self, name: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM service_keys WHERE service = $1").bind(name).execute(&mut *tx).await?;
        let removed =
            sqlx::query("DELETE FROM service_identities WHERE name = $1").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(removed.rows_affected() > 0)
    }

    /// One service identity with its keys.
    pub async fn service(&self, name: &str) -> Result<Option<ServiceIdentity>> {
        Ok(self.services_where(Some(name)).await?.into_iter().next())
    }

    /// Every service identity with its keys, by name.
    pub async fn services(&self) -> Result<Vec<ServiceIdentity>> {
        self.services_where(None).await
    }

    async fn services_where(&self, name: Option<&str>) -> Result<Vec<ServiceIdentity>> {
        let (filter_s, filter_k) = match name {
            Some(_) => (" WHERE name = $1", " WHERE service = $1"),
            None => ("", ""),
        };
        let services = format!("SELECT name, purposes, created_ms FROM service_identities{filter_s} ORDER BY name");
        let keys = format!(
            "SELECT service, key_id, public_key, created_ms, expires_ms FROM service_keys{filter_k} \
             ORDER BY service, created_ms, key_id"
        );
        let (srows, krows) = match name {
            Some(n) => (
                sqlx::query(&services).bind(n).fetch_all(&self.pool).await?,
                sqlx::query(&keys).bind(n).fetch_all(&self.pool).await?,
            ),
            None => {
                (sqlx::query(&services).fetch_all(&self.pool).await?, sqlx::query(&keys).fetch_all(&self.pool).await?)
            }
        };
        let mut out = Vec::with_capacity(srows.len());
        for r in &srows {
            out.push(ServiceIdentity {
                name: r.try_get(0)?,
                purposes: parse(r, 1, Purposes::from_str)?,
                created_ms: unms(r.try_get(2)?),
                keys: Vec::new(),
            });
        }
        for r in &krows {
            let service: String = r.try_get(0)?;
            let key = ServiceKey {
                id: r.try_get(1)?,
                public_key: r.try_get(2)?,
                created_ms: unms(r.try_get(3)?),
                expires_ms: r.try_get::<Option<i64>, _>(4)?.map(unms),
            };
            if let Some(s) = out.iter_mut().find(|s| s.name == service) {
                s.keys.push(key);
            }
        }
        Ok(out)
    }

    /// Appends an event to `tenant`'s audit trail. `chain(prev_hash, seq, at_ms, body)`
    /// computes the new event's hash (the first event's previous hash is all zeros), and
    /// `sign(seq, hash)` the signature stored with the new head (`None` if it cannot sign:
    /// then nothing is stored and [`RegistryError::HeadNotSigned`] is returned).
    ///
    /// Appends to one tenant's trail are serialised (see the crate documentation), and a
    /// transient failure is retried with backoff for about ten seconds before its error is
    /// returned: an append is either stored or reported, never silently dropped.
    pub async fn append_audit(
        &self,
        tenant: &TenantId,
        at_ms: u64,
        body: &str,
        chain: impl Fn(&[u8; 32], u64, u64, &str) -> [u8; 32] + Sync,
        sign: impl Fn(Option<&AuditHead>, u64, &[u8; 32]) -> Option<Vec<u8>> + Sync,
    ) -> Result<AuditRow> {
        let mut backoff = Backoff::new();
        loop {
            match self.try_append(tenant, at_ms, body, &chain, &sign).await {
                Ok(Some(row)) => return Ok(row),
                Ok(None) => return Err(RegistryError::HeadNotSigned),
                Err(sqlx::Error::Database(e)) if is_transient(e.as_ref()) && backoff.more() => backoff.wait().await,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Begins a write transaction: on SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so a transaction that reads before writing waits for other writers
    /// instead of failing when it upgrades.
    async fn begin_write(&self) -> std::result::Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    async fn try_append(
        &self,
        tenant: &TenantId,
        at_ms: u64,
        body: &str,
        chain: &(impl Fn(&[u8; 32], u64, u64, &str) -> [u8; 32] + Sync),
        sign: &(impl Fn(Option<&AuditHead>, u64, &[u8; 32]) -> Option<Vec<u8>> + Sync),
    ) -> std::result::Result<Option<AuditRow>, sqlx::Error> {
        let mut tx = self.begin_write().await?;
        let row = self.append_in(&mut tx, tenant, at_ms, body, chain, sign).await?;
        if row.is_some() {
            tx.commit().await?;
        }
        Ok(row)
    }

    /// Appends within `tx` (which the caller commits); `None` when the signer refused.
    async fn append_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        tenant: &TenantId,
        at_ms: u64,
        body: &str,
        chain: &ChainFn<'_>,
        sign: &SignFn<'_>,
    ) -> std::result::Result<Option<AuditRow>, sqlx::Error> {
        if self.backend == Backend::Postgres {
            // Serialise appends to this trail across every connection and instance until
            // this transaction ends, so the head read next is the one this append
            // extends. Executed rather than fetched: the Any driver cannot decode `void`.
            // Two tenants whose ids hash alike merely share a lock.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(tenant.as_str())
                .execute(&mut **tx)
                .await?;
        }
        let last = sqlx::query("SELECT seq, hash, sig FROM audit_heads WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        let head = match last {
            None => None,
            Some(r) => {
                let hash: Vec<u8> = r.try_get(1)?;
                let hash = <[u8; 32]>::try_from(hash.as_slice())
                    .map_err(|_| sqlx::Error::Decode("stored audit hash is not 32 bytes".into()))?;
                Some(AuditHead { seq: unms(r.try_get::<i64, _>(0)?), hash, sig: r.try_get(2)? })
            }
        };
        let (seq, prev_hash) = head.as_ref().map_or((1, [0u8; 32]), |h| (h.seq + 1, h.hash));
        let hash = chain(&prev_hash, seq, at_ms, body);
        // The signer sees the head it would extend, so it can refuse to sign on top of a
        // head it did not sign. Dropping the transaction rolls it back: an unsigned head
        // is never stored.
        let Some(sig) = sign(head.as_ref(), seq, &hash) else { return Ok(None) };
        sqlx::query(
            "INSERT INTO audit_events (tenant_id, seq, at_ms, body, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant.as_str())
        .bind(ms(seq))
        .bind(ms(at_ms))
        .bind(body)
        .bind(prev_hash.to_vec())
        .bind(hash.to_vec())
        .execute(&mut **tx)
        .await?;
        // Under the lock the head is still where this append read it; should two appends
        // ever race anyway, the loser's event insert above has already failed on the
        // `(tenant, seq)` key and it retries.
        sqlx::query(
            "INSERT INTO audit_heads (tenant_id, seq, hash, sig) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, sig = excluded.sig",
        )
        .bind(tenant.as_str())
        .bind(ms(seq))
        .bind(hash.to_vec())
        .bind(sig)
        .execute(&mut **tx)
        .await?;
        Ok(Some(AuditRow { tenant: tenant.clone(), seq, at_ms, body: body.to_owned(), prev_hash, hash }))
    }

    /// Up to `limit` events of `tenant` with sequence numbers above `after_seq`, oldest
    /// first.
    pub async fn audit(&self, tenant: &TenantId, after_seq: u64, limit: u32) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(
            "SELECT tenant_id, seq, at_ms, body, prev_hash, hash FROM audit_events \
             WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(ms(after_seq))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let hash = |i: usize| -> Result<[u8; 32]> {
                    let v: Vec<u8> = r.try_get(i)?;
                    <[u8; 32]>::try_from(v.as_slice())
                        .map_err(|_| RegistryError::Corrupt(format!("audit hash of {} bytes", v.len())))
                };
                Ok(AuditRow {
                    tenant: parse(r, 0, TenantId::parse)?,
                    seq: unms(r.try_get(1)?),
                    at_ms: unms(r.try_get(2)?),
                    body: r.try_get(3)?,
                    prev_hash: hash(4)?,
                    hash: hash(5)?,
                })
            })
            .collect()
    }

    /// The head of `tenant`'s trail as recorded beside it: the newest event's sequence
    /// number and hash, and the signature over them (`None` before the first event).
    pub async fn audit_head(&self, tenant: &TenantId) -> Result<Option<AuditHead>> {
        let row = sqlx::query("SELECT seq, hash, sig FROM audit_heads WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let hash: Vec<u8> = r.try_get(1)?;
            let hash = <[u8; 32]>::try_from(hash.as_slice())
                .map_err(|_| RegistryError::Corrupt(format!("audit head hash of {} bytes", hash.len())))?;
            Ok(AuditHead { seq: unms(r.try_get(0)?), hash, sig: r.try_get(2)? })
        })
        .transpose()
    }

    /// Runs raw SQL against the database. Test support: lets a test tamper with stored
    /// rows to prove verification notices; keyhold itself never calls it.
    #[doc(hidden)]
    pub async fn execute_raw(&self, sql: &str) -> Result<u64> {
        Ok(sqlx::query(sql).execute(&self.pool).await?.rows_affected())
    }
}

const TENANT_COLUMNS: &str =
    "id, realm, mode, state, reason, created_ms, updated_ms, role_arn, version, cause, dek_generation";

fn tenant_from_row(r: &AnyRow) -> Result<Tenant> {
    Ok(Tenant {
        id: parse(r, 0, TenantId::parse)?,
        realm: parse(r, 1, RealmId::parse)?,
        mode: parse(r, 2, TenantMode::from_str)?,
        state: parse(r, 3, TenantState::from_str)?,
        reason: r.try_get(4)?,
        created_ms: unms(r.try_get(5)?),
        updated_ms: unms(r.try_get(6)?),
        role_arn: r.try_get(7)?,
        version: unms(r.try_get(8)?),
        cause: r
            .try_get::<Option<String>, _>(9)?
            .map(|c| Cause::from_str(&c).map_err(|e| RegistryError::Corrupt(format!("tenant cause: {e}"))))
            .transpose()?,
        dek_generation: unms(r.try_get(10)?),
    })
}

/// A service key's id: its public key in hex (the whole key, so no two keys share an id).
pub fn service_key_id(public_key: &[u8]) -> String {
    public_key.iter().map(|b| format!("{b:02x}")).collect()
}

async fn insert_service_key(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    name: &str,
    public_key: &[u8],
    now_ms: u64,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO service_keys (service, key_id, public_key, created_ms, expires_ms) VALUES ($1, $2, $3, $4, NULL)",
    )
    .bind(name)
    .bind(service_key_id(public_key))
    .bind(public_key.to_vec())
    .bind(ms(now_ms))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn parse<T, E: std::fmt::Display>(r: &AnyRow, i: usize, f: impl Fn(&str) -> std::result::Result<T, E>) -> Result<T> {
    let s: String = r.try_get(i)?;
    f(&s).map_err(|e| RegistryError::Corrupt(format!("column {i} holds {s:?}: {e}")))
}

fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Whether an append that failed with `e` may succeed if tried again.
/// Busy, locked, serialization failure or deadlock: retry (a unique violation is not).
fn is_busy(e: &dyn sqlx::error::DatabaseError) -> bool {
    !e.is_unique_violation() && is_transient(e)
}

fn is_transient(e: &dyn sqlx::error::DatabaseError) -> bool {
    // PostgreSQL: serialization failure, deadlock. SQLite: SQLITE_BUSY (5) and
    // SQLITE_LOCKED (6) with their extended codes (low byte). Both: a lost race for the
    // next sequence number.
    e.is_unique_violation()
        || match e.code().as_deref() {
            Some("40001" | "40P01") => true,
            Some(c) => c.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)),
            None => false,
        }
}

/// A pause drawn uniformly from `[0, max]`.
/// Retries of a write that failed transiently: exponential backoff with full jitter (so
/// writers that collided once spread out instead of colliding again in lockstep), within
/// [`APPEND_DEADLINE`].
struct Backoff {
    started: Instant,
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { started: Instant::now(), next: APPEND_FIRST_BACKOFF }
    }

    /// Whether another attempt fits in the deadline.
    fn more(&self) -> bool {
        self.started.elapsed() < APPEND_DEADLINE
    }

    async fn wait(&mut self) {
        tokio::time::sleep(jitter(self.next)).await;
        self.next = (self.next * 2).min(APPEND_MAX_BACKOFF);
    }
}

fn jitter(max: Duration) -> Duration {
    // The std hasher's per-instance random keys are randomness enough for spreading
    // retries out; nothing depends on it being unpredictable.
    let r = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let max_us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(r % max_us.saturating_add(1))
}

/// Purposes parse from the registry's text form.
impl FromStr for Purposes {
    type Err = keyhold_core::IdError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        if s == "*" {
            return Ok(Purposes::All);
        }
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(Purpose::parse)
            .collect::<std::result::Result<_, _>>()
            .map(Purposes::Only)
    }
}
