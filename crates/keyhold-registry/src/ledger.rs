//! The data-key ledger's storage: data keys with the root keys that wrap them, their use
//! counts, re-encrypted messages (once each), what each key of a tenant's history still
//! protects, retirement of a key, and the tenant's data-key generation.

use keyhold_core::{Region, TenantId};
use sqlx::Row;

use crate::{KeyStatus, NewEvent, Registry, RegistryError, Result, TenantState, ms, unms};

/// Uses of one data key to add to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyUses {
    /// The tenant.
    pub tenant: TenantId,
    /// The data key's ledger id.
    pub data_key: String,
    /// Messages encrypted under it.
    pub messages: u64,
    /// Plaintext bytes encrypted under it.
    pub bytes: u64,
}

/// What one root key of a tenant's history protects, from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProtects {
    /// The key.
    pub key: String,
    /// Data keys it wraps.
    pub data_keys: u64,
    /// Messages encrypted under those data keys (as flushed by the instances).
    pub messages: u64,
    /// Plaintext bytes encrypted under them.
    pub bytes: u64,
    /// Of those messages, how many were re-encrypted (each counted once).
    pub reencrypted: u64,
    /// Messages not re-encrypted yet, counted per data key (a data key whose recorded
    /// count fell short of its re-encrypted messages never offsets another's).
    pub remaining: u64,
    /// Data keys whose counts may be incomplete: still in use, or their instance stopped
    /// without writing its last counts (see [`Registry::key_protects`]).
    pub unsettled: u64,
}

/// What a tenant's `decrypt_only` keys protect together, each data key counted once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Data keys wrapped by any of them.
    pub data_keys: u64,
    /// Messages under those data keys.
    pub messages: u64,
    /// Of those, re-encrypted (each once).
    pub reencrypted: u64,
    /// Not re-encrypted yet, counted per data key.
    pub remaining: u64,
    /// Data keys whose counts may be incomplete.
    pub unsettled: u64,
}

/// The SQL of one data key's messages not re-encrypted yet (`d`, with `r.n` its
/// re-encrypted count).
const REMAINING: &str = "CASE WHEN d.messages > COALESCE(r.n, 0) THEN d.messages - COALESCE(r.n, 0) ELSE 0 END";

/// The SQL condition: data key `d`, under key-history row `k`, may have uncounted
/// messages. It is settled when closed (its last counts written), or when its owner's
/// last flush took its counts more than `$2` ms after `k` last changed status (for a
/// replaced key: nothing is encrypted under it past the tenant-view bound).
const UNSETTLED: &str = "d.closed_ms IS NULL AND NOT EXISTS (SELECT 1 FROM ledger_instances i      WHERE i.id = d.owner AND i.flushed_ms > k.status_ms + $2)";

/// A re-encrypted message: its id and the data key it was under (both hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reencrypted {
    /// The old message's id.
    pub message_id: String,
    /// The data key it was under.
    pub data_key: String,
}

impl Registry {
    /// Records a data key generated for `tenant`, wrapped by `keys`, before its first use
    /// (recording it again changes nothing).
    #[allow(clippy::too_many_arguments, reason = "the data key, what wraps it, and the instance using it")]
    pub async fn record_data_key(
        &self,
        tenant: &TenantId,
        data_key: &str,
        purpose: &str,
        keys: &[&str],
        owner: &str,
        now_ms: u64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO data_keys (tenant_id, id, purpose, created_ms, messages, bytes, owner) \
             VALUES ($1, $2, $3, $4, 0, 0, $5) ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(data_key)
        .bind(purpose)
        .bind(ms(now_ms))
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO data_key_wraps (tenant_id, data_key, key_arn) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id, data_key, key_arn) DO NOTHING",
            )
            .bind(tenant.as_str())
            .bind(data_key)
            .bind(*key)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds messages and bytes to data keys, sets their last use to `now_ms`, and records
    /// that instance `owner` took its counts at `taken_ms`, in one transaction (all or
    /// nothing: the caller restores its counts on an error).
    pub async fn add_data_key_uses(&self, uses: &[DataKeyUses], owner: &str, taken_ms: u64, now_ms: u64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO ledger_instances (id, started_ms, flushed_ms) VALUES ($1, $2, $2) \
             ON CONFLICT (id) DO UPDATE SET flushed_ms = excluded.flushed_ms",
        )
        .bind(owner)
        .bind(ms(taken_ms))
        .execute(&mut *tx)
        .await?;
        for u in uses {
            sqlx::query(
                "UPDATE data_keys SET messages = messages + $1, bytes = bytes + $2, last_used_ms = $3 \
                 WHERE tenant_id = $4 AND id = $5",
            )
            .bind(ms(u.messages))
            .bind(ms(u.bytes))
            .bind(ms(now_ms))
            .bind(u.tenant.as_str())
            .bind(u.data_key.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records re-encrypted messages of `tenant` in one transaction; a message recorded
    /// before is not counted again. Returns how many were new.
    pub async fn record_reencrypted(&self, tenant: &TenantId, messages: &[Reencrypted], now_ms: u64) -> Result<u64> {
        if messages.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin_write().await?;
        let mut new = 0;
        // One statement per 250 messages (1,000 parameters, within every backend's
        // limit): a batch costs a statement or a few, not one per message.
        for chunk in messages.chunks(250) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${}, ${})", 4 * i + 1, 4 * i + 2, 4 * i + 3, 4 * i + 4))
                .collect();
            let sql = format!(
                "INSERT INTO reencrypted_messages (tenant_id, message_id, data_key, at_ms) VALUES {} \
                 ON CONFLICT (tenant_id, message_id) DO NOTHING",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for m in chunk {
                q = q.bind(tenant.as_str()).bind(m.message_id.as_str()).bind(m.data_key.as_str()).bind(ms(now_ms));
            }
            new += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(new)
    }

    /// Closes data keys whose last counts were written (they left every cache of their
    /// instance): their counts are complete.
    pub async fn close_data_keys(&self, keys: &[(TenantId, String)], now_ms: u64) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (tenant, id) in keys {
            sqlx::query("UPDATE data_keys SET closed_ms = $1 WHERE tenant_id = $2 AND id = $3 AND closed_ms IS NULL")
                .bind(ms(now_ms))
                .bind(tenant.as_str())
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Closes every data key of instance `owner` (at a clean shutdown, after its last
    /// counts were written).
    pub async fn close_owned_data_keys(&self, owner: &str, now_ms: u64) -> Result<()> {
        sqlx::query("UPDATE data_keys SET closed_ms = $1 WHERE owner = $2 AND closed_ms IS NULL")
            .bind(ms(now_ms))
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Per root key of `tenant` that wraps some data key: what it protects. A data key is
    /// unsettled (its counts may be incomplete) unless closed, or its owner's last flush
    /// took its counts more than `settle_ms` after the key last changed status.
    pub async fn key_protects(&self, tenant: &TenantId, settle_ms: u64) -> Result<Vec<KeyProtects>> {
        let rows = sqlx::query(&format!(
            "SELECT w.key_arn, COUNT(*), CAST(COALESCE(SUM(d.messages), 0) AS BIGINT), \
             CAST(COALESCE(SUM(d.bytes), 0) AS BIGINT), CAST(COALESCE(SUM(r.n), 0) AS BIGINT), \
             CAST(COALESCE(SUM({REMAINING}), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN {UNSETTLED} THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM data_key_wraps w JOIN data_keys d ON d.tenant_id = w.tenant_id AND d.id = w.data_key \
             JOIN key_history k ON k.tenant_id = w.tenant_id AND k.key_arn = w.key_arn \
             LEFT JOIN (SELECT data_key, COUNT(*) AS n FROM reencrypted_messages WHERE tenant_id = $1 \
             GROUP BY data_key) r ON r.data_key = d.id \
             WHERE w.tenant_id = $1 GROUP BY w.key_arn ORDER BY w.key_arn"
        ))
        .bind(tenant.as_str())
        .bind(ms(settle_ms))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyProtects {
                    key: r.try_get(0)?,
                    data_keys: unms(r.try_get(1)?),
                    messages: unms(r.try_get(2)?),
                    bytes: unms(r.try_get(3)?),
                    reencrypted: unms(r.try_get(4)?),
                    remaining: unms(r.try_get(5)?),
                    unsettled: unms(r.try_get(6)?),
                })
            })
            .collect()
    }

    /// What the tenant's `decrypt_only` keys protect together, each data key counted once
    /// however many of them wrap it (unsettled as for [`Registry::key_protects`], against
    /// the latest status change of the `decrypt_only` keys wrapping it).
    pub async fn decrypt_only_totals(&self, tenant: &TenantId, settle_ms: u64) -> Result<Totals> {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(d.messages), 0) AS BIGINT), CAST(COALESCE(SUM(r.n), 0) AS BIGINT), \
             CAST(COALESCE(SUM({REMAINING}), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN {UNSETTLED} THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM data_keys d \
             JOIN (SELECT w.data_key, MAX(k.status_ms) AS status_ms FROM data_key_wraps w JOIN key_history k \
             ON k.tenant_id = w.tenant_id AND k.key_arn = w.key_arn \
             WHERE w.tenant_id = $1 AND k.status = $3 GROUP BY w.data_key) k ON k.data_key = d.id \
             LEFT JOIN (SELECT data_key, COUNT(*) AS n FROM reencrypted_messages WHERE tenant_id = $1 \
             GROUP BY data_key) r ON r.data_key = d.id \
             WHERE d.tenant_id = $1"
        ))
        .bind(tenant.as_str())
        .bind(ms(settle_ms))
        .bind(KeyStatus::DecryptOnly.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(Totals {
            data_keys: unms(row.try_get(0)?),
            messages: unms(row.try_get(1)?),
            reencrypted: unms(row.try_get(2)?),
            remaining: unms(row.try_get(3)?),
            unsettled: unms(row.try_get(4)?),
        })
    }

    /// Retires `key` of `region` (a `decrypt_only` key: an active key is replaced first,
    /// by attaching another) and bumps the tenant's version, with `events`, in one
    /// transaction. A
    /// retired key is never used again.
    pub async fn retire_key(
        &self,
        tenant: &TenantId,
        region: &Region,
        key: &str,
        now_ms: u64,
        events: &[NewEvent],
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let bumped =
            sqlx::query("UPDATE tenants SET version = version + 1, updated_ms = $1 WHERE id = $2 AND state <> $3")
                .bind(ms(now_ms))
                .bind(tenant.as_str())
                .bind(TenantState::Deleted.as_str())
                .execute(&mut *tx)
                .await?;
        if bumped.rows_affected() == 0 {
            drop(tx);
            return Err(self.not_live(tenant).await);
        }
        let status: Option<String> =
            sqlx::query("SELECT status FROM key_history WHERE tenant_id = $1 AND region = $2 AND key_arn = $3")
                .bind(tenant.as_str())
                .bind(region.as_str())
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get(0))
                .transpose()?;
        match status.as_deref() {
            None => return Err(RegistryError::KeyNotFound { key: key.to_owned() }),
            Some(s) if s == KeyStatus::Active.as_str() => return Err(RegistryError::KeyActive { key: key.to_owned() }),
            Some(s) if s == KeyStatus::Retired.as_str() => {
                return Err(RegistryError::KeyRetired { key: key.to_owned() });
            }
            Some(_) => {}
        }
        sqlx::query(
            "UPDATE key_history SET status = $1, status_ms = $2 WHERE tenant_id = $3 AND region = $4 AND key_arn = $5",
        )
        .bind(KeyStatus::Retired.as_str())
        .bind(ms(now_ms))
        .bind(tenant.as_str())
        .bind(region.as_str())
        .bind(key)
        .execute(&mut *tx)
        .await?;
        self.insert_events(&mut tx, events, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Bumps the tenant's data-key generation (and version): every instance stops using
    /// the data keys it cached for the tenant once it reads the tenant again. Returns the
    /// new generation; `events` (given it) are stored in the same transaction.
    pub async fn bump_dek_generation(
        &self,
        tenant: &TenantId,
        now_ms: u64,
        events: impl FnOnce(u64) -> Vec<NewEvent> + Send,
    ) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query(
            "UPDATE tenants SET dek_generation = dek_generation + 1, version = version + 1, updated_ms = $1 \
             WHERE id = $2 AND state <> $3",
        )
        .bind(ms(now_ms))
        .bind(tenant.as_str())
        .bind(TenantState::Deleted.as_str())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            drop(tx);
            return Err(self.not_live(tenant).await);
        }
        let generation: i64 = sqlx::query("SELECT dek_generation FROM tenants WHERE id = $1")
            .bind(tenant.as_str())
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        self.insert_events(&mut tx, &events(unms(generation)), now_ms).await?;
        tx.commit().await?;
        Ok(unms(generation))
    }
}
