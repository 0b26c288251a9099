//! Webhook endpoints and their durable delivery queue.
//!
//! A delivery is queued in the transaction that stores its event (see `events.rs`), so
//! an event is never stored without its deliveries nor delivered without being stored.
//! Instances claim due deliveries with a lease ([`Registry::claim_deliveries`]): on
//! PostgreSQL with `FOR UPDATE SKIP LOCKED`, so concurrent claimers take different rows;
//! on SQLite under the write lock. A claimed delivery is sent by its claimer alone until
//! its lease runs out (an instance killed mid-send: another sends it again after the
//! lease, with the same message id). Every attempt is logged.

use keyhold_core::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{NewEvent, Registry, RegistryError, Result, StoredEvent, ms, unms};

/// A webhook endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// Its id (`wh_` and 32 hex digits).
    pub id: String,
    /// The tenant whose events it receives; `None` for a platform-wide endpoint (every
    /// tenant's events and the platform's).
    pub tenant: Option<TenantId>,
    /// Where events are POSTed.
    pub url: String,
    /// The event types it receives; `None` for every type.
    pub types: Option<Vec<String>>,
    /// The signing secret (`whsec_` and base64).
    pub secret: String,
    /// The previous secret and until when (ms) it still signs, after a rotation.
    pub old_secret: Option<(String, u64)>,
    /// When it was registered.
    pub created_ms: u64,
    /// When and why it was disabled (a `410 Gone` answer); deliveries stop.
    pub disabled: Option<(u64, String)>,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("types", &self.types)
            .field("created_ms", &self.created_ms)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A delivery claimed for sending.
#[derive(Clone)]
pub struct ClaimedDelivery {
    /// The delivery.
    pub id: u64,
    /// Its endpoint (as it is now).
    pub endpoint: WebhookEndpoint,
    /// The event to send.
    pub event: StoredEvent,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What a test send came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestQueued {
    /// Queued: the test event's id.
    Queued(u64),
    /// No such endpoint.
    NoEndpoint,
    /// The endpoint is disabled (it answered 410).
    Disabled,
    /// A test of it is still pending.
    Pending,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx answer: delivered.
    Delivered {
        /// The status.
        status: u16,
    },
    /// `410 Gone`: the endpoint is disabled and its pending deliveries cancelled.
    Gone,
    /// Anything else: retried at `next_ms`, or given up when `None`.
    Failed {
        /// The status, when there was an answer.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again; `None`: the schedule is exhausted.
        next_ms: Option<u64>,
    },
}

/// One attempt in an endpoint's delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    /// The delivery.
    pub delivery_id: u64,
    /// The event.
    pub event_id: u64,
    /// Which attempt (1 for the first).
    pub attempt: u32,
    /// When it was made.
    pub at_ms: u64,
    /// The answer's status, if any.
    pub status: Option<u16>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// How long it took.
    pub latency_ms: u64,
}

/// A delivery's state, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    /// The delivery.
    pub id: u64,
    /// The event.
    pub event_id: u64,
    /// `pending`, `delivered`, `failed` (gave up) or `cancelled` (endpoint disabled or
    /// removed).
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it is due next (pending).
    pub next_ms: u64,
    /// The last answer's status.
    pub last_status: Option<u16>,
    /// The last error.
    pub last_error: Option<String>,
}

const ENDPOINT_COLUMNS: &str =
    "id, tenant_id, url, types, secret, old_secret, old_secret_until_ms, created_ms, disabled_ms, disabled_reason";

fn endpoint_from_row(r: &AnyRow, at: usize) -> Result<WebhookEndpoint> {
    let tenant: Option<String> = r.try_get(at + 1)?;
    let types: Option<String> = r.try_get(at + 3)?;
    let old: Option<String> = r.try_get(at + 5)?;
    let old_until: Option<i64> = r.try_get(at + 6)?;
    let disabled_ms: Option<i64> = r.try_get(at + 8)?;
    let reason: Option<String> = r.try_get(at + 9)?;
    Ok(WebhookEndpoint {
        id: r.try_get(at)?,
        tenant: tenant
            .map(|t| TenantId::parse(&t).map_err(|e| RegistryError::Corrupt(format!("webhook tenant: {e}"))))
            .transpose()?,
        url: r.try_get(at + 2)?,
        types: types.map(|t| t.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()),
        secret: r.try_get(at + 4)?,
        old_secret: old.zip(old_until.map(unms)),
        created_ms: unms(r.try_get(at + 7)?),
        disabled: disabled_ms.map(|d| (unms(d), reason.unwrap_or_default())),
    })
}

fn status_of(v: Option<i64>) -> Option<u16> {
    v.and_then(|s| u16::try_from(s).ok())
}

impl Registry {
    /// Registers an endpoint unless its owner (its tenant, or the platform) has `max`
    /// already; returns whether it was. Counted and inserted in one transaction under a
    /// lock per owner, so concurrent registrations never pass the limit.
    pub async fn add_webhook(&self, e: &WebhookEndpoint, max: usize) -> Result<bool> {
        let types = e.types.as_ref().map(|t| format!(",{},", t.join(",")));
        let owner = e.tenant.as_ref().map_or("(platform)", TenantId::as_str);
        let mut tx = self.begin_write().await?;
        if self.backend == crate::Backend::Postgres {
            let key =
                owner.bytes().fold(0x5745_4248_4f4f_4b53_i64, |h, b| h.wrapping_mul(31).wrapping_add(i64::from(b)));
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(key).execute(&mut *tx).await?;
        }
        let count: i64 = match &e.tenant {
            Some(t) => sqlx::query("SELECT COUNT(*) FROM webhook_endpoints WHERE tenant_id = $1")
                .bind(t.as_str())
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?,
            None => sqlx::query("SELECT COUNT(*) FROM webhook_endpoints WHERE tenant_id IS NULL")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?,
        };
        if usize::try_from(count).unwrap_or(usize::MAX) >= max {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, types, secret, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&e.id)
        .bind(e.tenant.as_ref().map(TenantId::as_str))
        .bind(&e.url)
        .bind(types)
        .bind(&e.secret)
        .bind(ms(e.created_ms))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A tenant's endpoints (`Some`), or the platform-wide ones (`None`).
    pub async fn webhooks(&self, tenant: Option<&TenantId>) -> Result<Vec<WebhookEndpoint>> {
        let rows =
            match tenant {
                Some(t) => {
                    sqlx::query(&format!(
                        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY created_ms, id"
                    ))
                    .bind(t.as_str())
                    .fetch_all(&self.pool)
                    .await?
                }
                None => sqlx::query(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id IS NULL ORDER BY created_ms, id"
                ))
                .fetch_all(&self.pool)
                .await?,
            };
        rows.iter().map(|r| endpoint_from_row(r, 0)).collect()
    }

    /// One endpoint.
    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookEndpoint>> {
        sqlx::query(&format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| endpoint_from_row(&r, 0))
            .transpose()
    }

    /// Removes an endpoint, cancelling its pending deliveries; whether it existed.
    pub async fn remove_webhook(&self, id: &str, now_ms: u64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(id).execute(&mut *tx).await?;
        cancel_pending(&mut tx, id, now_ms).await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// Gives an endpoint a new secret; the current one keeps signing (beside it) until
    /// `old_until_ms`. Whether the endpoint exists.
    pub async fn rotate_webhook_secret(&self, id: &str, secret: &str, old_until_ms: u64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE webhook_endpoints SET old_secret = secret, old_secret_until_ms = $1, secret = $2 WHERE id = $3",
        )
        .bind(ms(old_until_ms))
        .bind(secret)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Stores `event` (a test) and queues it for endpoint `id` alone, in one transaction.
    /// Refused for a disabled endpoint, and while a test of it is still pending (one test
    /// at a time: a test send cannot be used to flood an endpoint or the queue).
    pub async fn webhook_test(&self, id: &str, event: &NewEvent, now_ms: u64) -> Result<TestQueued> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT disabled_ms FROM webhook_endpoints WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(TestQueued::NoEndpoint) };
        let disabled: Option<i64> = row.try_get(0)?;
        if disabled.is_some() {
            return Ok(TestQueued::Disabled);
        }
        let pending = sqlx::query(
            "SELECT 1 FROM webhook_deliveries d JOIN events e ON e.id = d.event_id \
             WHERE d.endpoint_id = $1 AND d.state = 'pending' AND e.kind = $2",
        )
        .bind(id)
        .bind(event.kind)
        .fetch_optional(&mut *tx)
        .await?;
        if pending.is_some() {
            return Ok(TestQueued::Pending);
        }
        let event_id = self
            .insert_event_row(&mut tx, event, now_ms)
            .await?
            .ok_or_else(|| RegistryError::Unavailable("the test event was not stored".into()))?;
        sqlx::query(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, created_ms, next_ms, attempts, state) \
             VALUES ($1, $2, $3, $3, 0, 'pending')",
        )
        .bind(id)
        .bind(ms(event_id))
        .bind(ms(now_ms))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TestQueued::Queued(event_id))
    }

    /// Claims up to `limit` due deliveries for `lease_ms`: no other claimer gets them
    /// until the lease runs out or they are finished. At most one delivery per endpoint is
    /// out at a time (the endpoint's earliest due), so a slow or flooded endpoint holds one
    /// sender, never the queue.
    pub async fn claim_deliveries(&self, now_ms: u64, lease_ms: u64, limit: u32) -> Result<Vec<ClaimedDelivery>> {
        let mut tx = self.begin_write().await?;
        // Candidates first (window functions rule out FOR UPDATE); the update claims each
        // only if it is still unleased when its row is locked, so two claimers never get
        // the same delivery.
        let candidates: Vec<i64> = sqlx::query(
            "SELECT id FROM (SELECT d.id, d.next_ms, ROW_NUMBER() OVER (PARTITION BY d.endpoint_id \
             ORDER BY d.next_ms, d.id) AS rn FROM webhook_deliveries d \
             WHERE d.state = 'pending' AND d.next_ms <= $1 AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= $1) \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries b WHERE b.endpoint_id = d.endpoint_id \
             AND b.state = 'pending' AND b.lease_until_ms > $1)) x \
             WHERE rn = 1 ORDER BY next_ms, id LIMIT $2",
        )
        .bind(ms(now_ms))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
        let mut ids = Vec::with_capacity(candidates.len());
        for id in candidates {
            let r = sqlx::query(
                "UPDATE webhook_deliveries SET lease_until_ms = $1 WHERE id = $2 AND state = 'pending' \
                 AND (lease_until_ms IS NULL OR lease_until_ms <= $3)",
            )
            .bind(ms(now_ms.saturating_add(lease_ms)))
            .bind(id)
            .bind(ms(now_ms))
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() > 0 {
                ids.push(id);
            }
        }
        tx.commit().await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(&format!(
                "SELECT d.id, d.attempts, e.id, e.tenant_id, e.kind, e.at_ms, e.data, {} \
                 FROM webhook_deliveries d JOIN events e ON e.id = d.event_id \
                 JOIN webhook_endpoints w ON w.id = d.endpoint_id WHERE d.id = $1",
                ENDPOINT_COLUMNS.split(", ").map(|c| format!("w.{c}")).collect::<Vec<_>>().join(", ")
            ))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
            // Its endpoint was removed meanwhile: nothing to send.
            let Some(r) = row else { continue };
            let tenant: Option<String> = r.try_get(3)?;
            out.push(ClaimedDelivery {
                id: unms(r.try_get(0)?),
                attempts: u32::try_from(r.try_get::<i64, _>(1).unwrap_or_default()).unwrap_or(u32::MAX),
                event: StoredEvent {
                    id: unms(r.try_get(2)?),
                    tenant: tenant
                        .map(|t| TenantId::parse(&t).map_err(|e| RegistryError::Corrupt(format!("event tenant: {e}"))))
                        .transpose()?,
                    kind: r.try_get(4)?,
                    at_ms: unms(r.try_get(5)?),
                    data: r.try_get(6)?,
                },
                endpoint: endpoint_from_row(&r, 7)?,
            });
        }
        Ok(out)
    }

    /// Records an attempt at `d` and what follows from it, in one transaction.
    pub async fn finish_delivery(
        &self,
        d: &ClaimedDelivery,
        outcome: &AttemptOutcome,
        latency_ms: u64,
        now_ms: u64,
    ) -> Result<()> {
        let attempt = i64::from(d.attempts) + 1;
        let (status, error) = match outcome {
            AttemptOutcome::Delivered { status } => (Some(i64::from(*status)), None),
            AttemptOutcome::Gone => (Some(410), Some("410 Gone: the endpoint is disabled".to_owned())),
            AttemptOutcome::Failed { status, error, .. } => (status.map(i64::from), Some(error.clone())),
        };
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, endpoint_id, event_id, attempt, at_ms, status, error, latency_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(ms(d.id))
        .bind(&d.endpoint.id)
        .bind(ms(d.event.id))
        .bind(attempt)
        .bind(ms(now_ms))
        .bind(status)
        .bind(error.as_deref())
        .bind(ms(latency_ms))
        .execute(&mut *tx)
        .await?;
        let (state, next) = match outcome {
            AttemptOutcome::Delivered { .. } => ("delivered", None),
            AttemptOutcome::Gone => ("failed", None),
            AttemptOutcome::Failed { next_ms: Some(n), .. } => ("pending", Some(*n)),
            AttemptOutcome::Failed { next_ms: None, .. } => ("failed", None),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET attempts = $1, state = $2, next_ms = COALESCE($3, next_ms), \
             lease_until_ms = NULL, last_status = $4, last_error = $5, done_ms = $6 WHERE id = $7 AND state = 'pending'",
        )
        .bind(attempt)
        .bind(state)
        .bind(next.map(ms))
        .bind(status)
        .bind(error.as_deref())
        .bind((state != "pending").then_some(ms(now_ms)))
        .bind(ms(d.id))
        .execute(&mut *tx)
        .await?;
        if *outcome == AttemptOutcome::Gone {
            sqlx::query(
                "UPDATE webhook_endpoints SET disabled_ms = $1, disabled_reason = $2 WHERE id = $3 AND disabled_ms IS NULL",
            )
            .bind(ms(now_ms))
            .bind("the endpoint answered 410 Gone")
            .bind(&d.endpoint.id)
            .execute(&mut *tx)
            .await?;
            cancel_pending(&mut tx, &d.endpoint.id, now_ms).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// An endpoint's deliveries, newest first.
    pub async fn webhook_deliveries(&self, endpoint: &str, limit: u32) -> Result<Vec<DeliveryRow>> {
        let rows = sqlx::query(
            "SELECT id, event_id, state, attempts, next_ms, last_status, last_error FROM webhook_deliveries \
             WHERE endpoint_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(endpoint)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRow {
                    id: unms(r.try_get(0)?),
                    event_id: unms(r.try_get(1)?),
                    state: r.try_get(2)?,
                    attempts: u32::try_from(r.try_get::<i64, _>(3)?).unwrap_or(u32::MAX),
                    next_ms: unms(r.try_get(4)?),
                    last_status: status_of(r.try_get(5)?),
                    last_error: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// An endpoint's attempts, newest first.
    pub async fn webhook_attempts(&self, endpoint: &str, limit: u32) -> Result<Vec<AttemptRow>> {
        let rows = sqlx::query(
            "SELECT delivery_id, event_id, attempt, at_ms, status, error, latency_ms FROM webhook_attempts \
             WHERE endpoint_id = $1 ORDER BY at_ms DESC, delivery_id DESC, attempt DESC LIMIT $2",
        )
        .bind(endpoint)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    delivery_id: unms(r.try_get(0)?),
                    event_id: unms(r.try_get(1)?),
                    attempt: u32::try_from(r.try_get::<i64, _>(2)?).unwrap_or(u32::MAX),
                    at_ms: unms(r.try_get(3)?),
                    status: status_of(r.try_get(4)?),
                    error: r.try_get(5)?,
                    latency_ms: unms(r.try_get(6)?),
                })
            })
            .collect()
    }
}

async fn cancel_pending(tx: &mut sqlx::Transaction<'static, sqlx::Any>, endpoint: &str, now_ms: u64) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'cancelled', done_ms = $1, lease_until_ms = NULL \
         WHERE endpoint_id = $2 AND state = 'pending'",
    )
    .bind(ms(now_ms))
    .bind(endpoint)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
