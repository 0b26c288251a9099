//! The monitor's cluster-wide schedule: which tenant's keys are due for a probe, claimed
//! with a lease so one instance probes each tenant per interval (`FOR UPDATE SKIP LOCKED`
//! on PostgreSQL; the write lock on SQLite), and per key when real traffic last used it
//! successfully.

use keyhold_core::TenantId;
use sqlx::Row;

use crate::{Backend, Registry, Result, TenantState, ms, unms};

/// A tenant claimed for probing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedProbe {
    /// The tenant.
    pub tenant: TenantId,
    /// When its keys were last probed (by any instance), if ever.
    pub last_ms: Option<u64>,
    /// When the probe was due.
    pub due_ms: u64,
}

/// Successful real traffic with a key: (tenant, key, generate ok at, decrypt ok at), 0
/// for "not since the last report".
pub type KeyTraffic = (TenantId, String, u64, u64);

impl Registry {
    /// Adds every watched tenant (active, degraded, suspended) missing from the schedule,
    /// due at `first_due(tenant)` (spread over the interval), and drops deleted ones.
    pub async fn sync_probe_schedule(&self, first_due: impl Fn(&str) -> u64 + Send) -> Result<u64> {
        let missing: Vec<String> = sqlx::query(
            "SELECT t.id FROM tenants t WHERE t.state IN ($1, $2, $3) \
             AND NOT EXISTS (SELECT 1 FROM probe_schedule p WHERE p.tenant_id = t.id)",
        )
        .bind(TenantState::Active.as_str())
        .bind(TenantState::Degraded.as_str())
        .bind(TenantState::Suspended.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
        let mut tx = self.begin_write().await?;
        for id in &missing {
            sqlx::query(
                "INSERT INTO probe_schedule (tenant_id, due_ms) VALUES ($1, $2) ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(id.as_str())
            .bind(ms(first_due(id)))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM probe_schedule WHERE tenant_id IN (SELECT id FROM tenants WHERE state = $1)")
            .bind(TenantState::Deleted.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(missing.len() as u64)
    }

    /// Claims up to `limit` tenants whose probe is due at `now_ms`, for `lease_ms`.
    pub async fn claim_probes(&self, now_ms: u64, lease_ms: u64, limit: u32) -> Result<Vec<ClaimedProbe>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!(
            "UPDATE probe_schedule SET lease_until_ms = $1 WHERE tenant_id IN (SELECT tenant_id FROM probe_schedule \
             WHERE due_ms <= $2 AND (lease_until_ms IS NULL OR lease_until_ms <= $2) ORDER BY due_ms LIMIT $3{lock}) \
             RETURNING tenant_id, last_ms, due_ms"
        ))
        .bind(ms(now_ms.saturating_add(lease_ms)))
        .bind(ms(now_ms))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .filter_map(|r| {
                let id: String = r.try_get(0).ok()?;
                let last: Option<i64> = r.try_get(1).ok()?;
                let due: i64 = r.try_get(2).ok()?;
                Some(TenantId::parse(&id).ok().map(|tenant| ClaimedProbe {
                    tenant,
                    last_ms: last.map(unms),
                    due_ms: unms(due),
                }))
            })
            .flatten()
            .map(Ok)
            .collect()
    }

    /// Records that `tenant`'s keys were probed at `probed_ms`, next due at `due_ms`, and
    /// releases the claim.
    pub async fn probed(&self, tenant: &TenantId, probed_ms: u64, due_ms: u64) -> Result<()> {
        sqlx::query("UPDATE probe_schedule SET last_ms = $1, due_ms = $2, lease_until_ms = NULL WHERE tenant_id = $3")
            .bind(ms(probed_ms))
            .bind(ms(due_ms))
            .bind(tenant.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The earliest due probe (to sleep until), if any.
    pub async fn next_probe_due(&self) -> Result<Option<u64>> {
        let v: Option<i64> =
            sqlx::query("SELECT MIN(due_ms) FROM probe_schedule").fetch_one(&self.pool).await?.try_get(0)?;
        Ok(v.map(unms))
    }

    /// Adds successful real traffic with keys (latest times win).
    pub async fn record_key_traffic(&self, traffic: &[KeyTraffic]) -> Result<()> {
        if traffic.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (tenant, key, generate, decrypt) in traffic {
            sqlx::query(
                "INSERT INTO key_traffic (tenant_id, key_arn, generate_ok_ms, decrypt_ok_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, key_arn) DO UPDATE SET \
                 generate_ok_ms = CASE WHEN excluded.generate_ok_ms > key_traffic.generate_ok_ms \
                 THEN excluded.generate_ok_ms ELSE key_traffic.generate_ok_ms END, \
                 decrypt_ok_ms = CASE WHEN excluded.decrypt_ok_ms > key_traffic.decrypt_ok_ms \
                 THEN excluded.decrypt_ok_ms ELSE key_traffic.decrypt_ok_ms END",
            )
            .bind(tenant.as_str())
            .bind(key.as_str())
            .bind(ms(*generate))
            .bind(ms(*decrypt))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The tenant's keys that both generated and decrypted successfully for real traffic
    /// since `since_ms`.
    pub async fn keys_with_traffic(&self, tenant: &TenantId, since_ms: u64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT key_arn FROM key_traffic WHERE tenant_id = $1 AND generate_ok_ms >= $2 AND decrypt_ok_ms >= $2",
        )
        .bind(tenant.as_str())
        .bind(ms(since_ms))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}
