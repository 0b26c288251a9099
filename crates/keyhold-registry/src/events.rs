//! Lifecycle events as the registry stores them: an id in commit order, the tenant (none
//! for a platform-wide event), a type, a time and a JSON body the caller built
//! (`keyhold-lifecycle` owns the catalogue). A change that has a transaction of its own
//! (a tenant transition, a key attached or retired, a role changed) writes its event in
//! that transaction: the change and its event are stored together or not at all.

use keyhold_core::TenantId;
use sqlx::Row;

use crate::{Registry, RegistryError, Result, ms, unms};

/// An event to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The tenant it concerns; `None` for a platform-wide event.
    pub tenant: Option<TenantId>,
    /// Its stable type (`tenant.suspended`, `key.revoked`, ...).
    pub kind: &'static str,
    /// Its body, JSON.
    pub data: String,
    /// When set, at most one event with this key is ever stored: the second report of the
    /// same finding (another instance, a retry) is dropped.
    pub dedupe: Option<String>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its id: events are numbered in the order they were committed.
    pub id: u64,
    /// The tenant it concerns; `None` for a platform-wide event.
    pub tenant: Option<TenantId>,
    /// Its type.
    pub kind: String,
    /// When it was stored (ms since the Unix epoch).
    pub at_ms: u64,
    /// Its body, JSON.
    pub data: String,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter<'a> {
    /// Only this tenant's.
    pub tenant: Option<&'a TenantId>,
    /// Only events of these types (any, when empty).
    pub kinds: &'a [String],
    /// Only events after this id.
    pub after: u64,
    /// At most this many.
    pub limit: u32,
    /// Newest first, only events before this id (`u64::MAX`: the latest): when set,
    /// `after` still bounds the page from below.
    pub before: Option<u64>,
}

impl Registry {
    /// Stores `events` within `tx`, after everything else the transaction changed: the
    /// sequence row stays locked from here to the commit, so ids follow commit order.
    pub(crate) async fn insert_events(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        events: &[NewEvent],
        now_ms: u64,
    ) -> Result<u64> {
        let mut stored = 0;
        for e in events {
            if let Some(id) = self.insert_event_row(tx, e, now_ms).await? {
                self.enqueue_deliveries(tx, id, e, now_ms).await?;
                if let Some(t) = &e.tenant {
                    self.notify_tenant(tx, t).await?;
                }
                stored += 1;
            }
        }
        Ok(stored)
    }

    /// Stores one event row within `tx`; its id, or `None` when its dedupe key was taken.
    pub(crate) async fn insert_event_row(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        e: &NewEvent,
        now_ms: u64,
    ) -> Result<Option<u64>> {
        let id: i64 = sqlx::query("UPDATE event_seq SET next = next + 1 WHERE one = 1 RETURNING next")
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
        let r = sqlx::query(
            "INSERT INTO events (id, tenant_id, kind, at_ms, data, dedupe) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (dedupe) DO NOTHING",
        )
        .bind(id)
        .bind(e.tenant.as_ref().map(TenantId::as_str))
        .bind(e.kind)
        .bind(ms(now_ms))
        .bind(&e.data)
        .bind(e.dedupe.as_deref())
        .execute(&mut **tx)
        .await?;
        Ok((r.rows_affected() > 0).then_some(unms(id)))
    }

    /// Queues event `id` for every enabled endpoint that takes it: the tenant's own and
    /// the platform-wide ones, whose type filter (if any) names its type.
    async fn enqueue_deliveries(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        id: u64,
        e: &NewEvent,
        now_ms: u64,
    ) -> Result<()> {
        let pattern = format!("%,{},%", e.kind.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        sqlx::query(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, created_ms, next_ms, attempts, state) \
             SELECT id, $1, $2, $2, 0, 'pending' FROM webhook_endpoints \
             WHERE disabled_ms IS NULL AND (tenant_id IS NULL OR tenant_id = $3) \
             AND (types IS NULL OR types LIKE $4 ESCAPE '\\')",
        )
        .bind(ms(id))
        .bind(ms(now_ms))
        .bind(e.tenant.as_ref().map(TenantId::as_str))
        .bind(pattern)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Stores one event on its own (a finding that changes no other row); returns whether
    /// it was stored (`false`: its dedupe key was taken).
    pub async fn add_event(&self, event: &NewEvent, now_ms: u64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = self.insert_events(&mut tx, std::slice::from_ref(event), now_ms).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Events in id order (newest first with [`EventFilter::before`]), as `filter` says.
    pub async fn events(&self, filter: &EventFilter<'_>) -> Result<Vec<StoredEvent>> {
        let mut sql = String::from("SELECT id, tenant_id, kind, at_ms, data FROM events WHERE id > $1");
        let mut n = 1;
        if filter.tenant.is_some() {
            n += 1;
            sql.push_str(&format!(" AND tenant_id = ${n}"));
        }
        if !filter.kinds.is_empty() {
            let marks: Vec<String> = (0..filter.kinds.len()).map(|i| format!("${}", n + 1 + i)).collect();
            n += filter.kinds.len();
            sql.push_str(&format!(" AND kind IN ({})", marks.join(", ")));
        }
        if filter.before.is_some() {
            n += 1;
            sql.push_str(&format!(" AND id < ${n} ORDER BY id DESC"));
        } else {
            sql.push_str(" ORDER BY id");
        }
        sql.push_str(&format!(" LIMIT ${}", n + 1));
        let mut q = sqlx::query(&sql).bind(ms(filter.after));
        if let Some(t) = filter.tenant {
            q = q.bind(t.as_str());
        }
        for k in filter.kinds {
            q = q.bind(k.as_str());
        }
        if let Some(before) = filter.before {
            q = q.bind(ms(before));
        }
        let rows = q.bind(i64::from(filter.limit)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let tenant: Option<String> = r.try_get(1)?;
                Ok(StoredEvent {
                    id: unms(r.try_get(0)?),
                    tenant: tenant
                        .map(|t| TenantId::parse(&t).map_err(|e| RegistryError::Corrupt(format!("event tenant: {e}"))))
                        .transpose()?,
                    kind: r.try_get(2)?,
                    at_ms: unms(r.try_get(3)?),
                    data: r.try_get(4)?,
                })
            })
            .collect()
    }
}
