//! Instant propagation of tenant changes: every stored event about a tenant (a
//! transition, a key attached, replaced or retired, a changed check, a rotation, a role)
//! sends `NOTIFY keyhold_tenants, '<tenant>'` in its transaction on PostgreSQL, delivered
//! to every listening instance when it commits. [`TenantChanges`] is one instance's
//! subscription. Notifications can be lost (a dropped connection): the tenant-view expiry
//! stays the fallback. SQLite (a single node) has nothing to propagate.
//!
//! Revocation receipts: each instance records when it dropped a suspended or deleted
//! tenant's cached keys ([`Registry::record_receipt`]), and [`Registry::receipts`] tells
//! which running instances confirmed.

use keyhold_core::TenantId;
use sqlx::Row;

use crate::{Backend, Registry, Result, TenantState, ms, unms};

/// The notification channel.
pub const CHANNEL: &str = "keyhold_tenants";

/// One instance's subscription to tenant changes (PostgreSQL).
pub struct TenantChanges(sqlx::postgres::PgListener);

impl TenantChanges {
    /// The next changed tenant. After a lost connection the listener reconnects (and the
    /// caller should treat every view as stale: changes may have been missed); a payload
    /// that is not a tenant id is skipped.
    pub async fn next(&mut self) -> Result<Option<TenantId>> {
        let n = self.0.recv().await?;
        Ok(TenantId::parse(n.payload()).ok())
    }
}

impl Registry {
    /// Subscribes to tenant changes: `None` on SQLite.
    pub async fn tenant_changes(&self) -> Result<Option<TenantChanges>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(TenantChanges(listener)))
    }

    /// Notifies every listening instance that `tenant` changed, when `tx` commits.
    pub(crate) async fn notify_tenant(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        tenant: &TenantId,
    ) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(tenant.as_str()).execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Records that `instance` dropped `tenant`'s cached keys at `dropped_ms`, after the
    /// tenant reached version `version` (suspended or deleted). A second record of the
    /// same changes nothing.
    pub async fn record_receipt(&self, tenant: &TenantId, version: u64, instance: &str, dropped_ms: u64) -> Result<()> {
        sqlx::query(
            "INSERT INTO revocation_receipts (tenant_id, version, instance, dropped_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, version, instance) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(ms(version))
        .bind(instance)
        .bind(ms(dropped_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// For `tenant` at `version`: the running instances (whose ledger flushed since
    /// `alive_since_ms`) that have not confirmed yet, and the latest confirmation time of
    /// those that did.
    pub async fn receipts(&self, tenant: &TenantId, version: u64, alive_since_ms: u64) -> Result<(u64, Option<u64>)> {
        let missing: i64 = sqlx::query(
            "SELECT COUNT(*) FROM ledger_instances i WHERE i.flushed_ms >= $1 AND NOT EXISTS \
             (SELECT 1 FROM revocation_receipts r WHERE r.tenant_id = $2 AND r.version = $3 AND r.instance = i.id)",
        )
        .bind(ms(alive_since_ms))
        .bind(tenant.as_str())
        .bind(ms(version))
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        let last: Option<i64> =
            sqlx::query("SELECT MAX(dropped_ms) FROM revocation_receipts WHERE tenant_id = $1 AND version = $2")
                .bind(tenant.as_str())
                .bind(ms(version))
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?;
        Ok((unms(missing), last.map(unms)))
    }
}

impl Registry {
    /// Suspended or deleted tenants changed since `since_ms` whose current version
    /// `instance` has not confirmed: (tenant, version).
    pub async fn unconfirmed_revocations(&self, instance: &str, since_ms: u64) -> Result<Vec<(TenantId, u64)>> {
        let rows = sqlx::query(
            "SELECT t.id, t.version FROM tenants t WHERE t.state IN ($1, $2) AND t.updated_ms >= $3 AND NOT EXISTS \
             (SELECT 1 FROM revocation_receipts r WHERE r.tenant_id = t.id AND r.version = t.version AND r.instance = $4)",
        )
        .bind(TenantState::Suspended.as_str())
        .bind(TenantState::Deleted.as_str())
        .bind(ms(since_ms))
        .bind(instance)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .filter_map(|r| {
                let id: String = r.try_get(0).ok()?;
                let v: i64 = r.try_get(1).ok()?;
                Some(TenantId::parse(&id).ok().map(|t| (t, unms(v))))
            })
            .flatten()
            .map(Ok)
            .collect()
    }
}

impl Registry {
    /// Suspended or deleted tenants changed since `since_ms` whose revocation at their
    /// current version has no confirmation event yet: (tenant, version).
    pub async fn unconfirmed_confirmations(&self, since_ms: u64) -> Result<Vec<(TenantId, u64)>> {
        let rows = sqlx::query(
            "SELECT t.id, t.version FROM tenants t WHERE t.state IN ($1, $2) AND t.updated_ms >= $3 AND NOT EXISTS \
             (SELECT 1 FROM events e WHERE e.dedupe = t.id || ':revocation:' || t.version)",
        )
        .bind(TenantState::Suspended.as_str())
        .bind(TenantState::Deleted.as_str())
        .bind(ms(since_ms))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let id: String = r.try_get(0).ok()?;
                let v: i64 = r.try_get(1).ok()?;
                TenantId::parse(&id).ok().map(|t| (t, unms(v)))
            })
            .collect())
    }
}
