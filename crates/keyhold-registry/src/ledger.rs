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
}

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
    pub async fn record_data_key(
        &self,
        tenant: &TenantId,
        data_key: &str,
        purpose: &str,
        keys: &[&str],
        now_ms: u64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO data_keys (tenant_id, id, purpose, created_ms, messages, bytes) VALUES ($1, $2, $3, $4, 0, 0) \
             ON CONFLICT (tenant_id, id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(data_key)
        .bind(purpose)
        .bind(ms(now_ms))
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

    /// Adds messages and bytes to data keys, and sets their last use to `now_ms`, in one
    /// transaction (all or nothing: the caller restores its counts on an error).
    pub async fn add_data_key_uses(&self, uses: &[DataKeyUses], now_ms: u64) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
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

    /// Per root key of `tenant` that wraps some data key: what it protects.
    pub async fn key_protects(&self, tenant: &TenantId) -> Result<Vec<KeyProtects>> {
        let rows = sqlx::query(
            "SELECT w.key_arn, COUNT(*), CAST(COALESCE(SUM(d.messages), 0) AS BIGINT), \
             CAST(COALESCE(SUM(d.bytes), 0) AS BIGINT), CAST(COALESCE(SUM(r.n), 0) AS BIGINT) \
             FROM data_key_wraps w JOIN data_keys d ON d.tenant_id = w.tenant_id AND d.id = w.data_key \
             LEFT JOIN (SELECT data_key, COUNT(*) AS n FROM reencrypted_messages WHERE tenant_id = $1 \
             GROUP BY data_key) r ON r.data_key = d.id \
             WHERE w.tenant_id = $1 GROUP BY w.key_arn ORDER BY w.key_arn",
        )
        .bind(tenant.as_str())
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
                })
            })
            .collect()
    }

    /// What the tenant's `decrypt_only` keys protect together, each data key counted once
    /// however many of them wrap it: (data keys, messages, re-encrypted messages).
    pub async fn decrypt_only_totals(&self, tenant: &TenantId) -> Result<(u64, u64, u64)> {
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(d.messages), 0) AS BIGINT), CAST(COALESCE(SUM(r.n), 0) AS BIGINT) \
             FROM data_keys d \
             LEFT JOIN (SELECT data_key, COUNT(*) AS n FROM reencrypted_messages WHERE tenant_id = $1 \
             GROUP BY data_key) r ON r.data_key = d.id \
             WHERE d.tenant_id = $1 AND EXISTS (SELECT 1 FROM data_key_wraps w JOIN key_history k \
             ON k.tenant_id = w.tenant_id AND k.key_arn = w.key_arn \
             WHERE w.tenant_id = d.tenant_id AND w.data_key = d.id AND k.status = $2)",
        )
        .bind(tenant.as_str())
        .bind(KeyStatus::DecryptOnly.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok((unms(row.try_get(0)?), unms(row.try_get(1)?), unms(row.try_get(2)?)))
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
