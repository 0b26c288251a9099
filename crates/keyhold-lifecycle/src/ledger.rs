//! The data-key ledger over the registry: a data key is recorded (with the root keys
//! that wrap it) before the service core uses it; the messages and bytes encrypted under
//! it are counted in memory and added to the registry by [`RegistryLedger::flush`], which
//! the server runs with the journal's flush (every `usage_flush_interval`, and at
//! shutdown).
//!
//! **Loss bound.** A `kill -9` loses the counts since the last flush: at most one flush
//! interval of messages per instance is missing from `messages` and `bytes`. Data keys
//! themselves are never missing (recorded before first use), and re-encrypted messages
//! are recorded before the re-encryption is answered.
//!
//! **Settlement.** Each data key is used by the instance that generated it, recorded as
//! its owner (a random id per process). Every flush records when it took the counts;
//! a data key is closed once its last counts are written (it left every cache, or the
//! instance stopped cleanly). The registry treats a data key under a replaced key as
//! settled only when closed or flushed after the replacement, so counts lost to a crash
//! are never mistaken for messages re-encrypted: retirement then needs force.

use std::sync::{Arc, Mutex};

use keyhold_core::{Clock, TenantId};
use keyhold_registry::{DataKeyUses, Registry, RegistryError};
use keyhold_service::{DataKeyId, DataKeyUse, Ledger, NewDataKey};

/// The ledger over the registry.
pub struct RegistryLedger {
    registry: Registry,
    clock: Arc<dyn Clock>,
    /// Every data key this instance generated whose uses may still be counted.
    live: Mutex<Vec<(TenantId, DataKeyId, Arc<DataKeyUse>)>>,
    /// Held through a flush: one that starts while another writes waits for it, so a
    /// flush that returns has written every count taken before it began (a reader that
    /// flushes first sees them).
    flushing: tokio::sync::Mutex<()>,
    /// This process's id as the owner of the data keys it generates.
    instance: String,
}

impl RegistryLedger {
    /// A ledger writing to `registry`.
    pub fn new(registry: Registry, clock: Arc<dyn Clock>) -> Self {
        let mut b = [0u8; 16];
        // Without randomness the id is the start time and the process id: still unique.
        let instance = if aws_lc_rs::rand::fill(&mut b).is_ok() {
            crate::keychange::hex(&b)
        } else {
            format!("{}-{}", clock.now_millis(), std::process::id())
        };
        Self { registry, clock, live: Mutex::new(Vec::new()), flushing: tokio::sync::Mutex::new(()), instance }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Vec<(TenantId, DataKeyId, Arc<DataKeyUse>)>> {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds the counted uses to the registry in one transaction (restoring them if it
    /// fails), and forgets data keys no cache holds any more once their last uses are
    /// written.
    pub async fn flush(&self) -> Result<(), RegistryError> {
        let _one_at_a_time = self.flushing.lock().await;
        let taken_ms = self.clock.now_millis();
        let entries: Vec<_> = self.live().clone();
        let mut taken = Vec::new();
        for (tenant, id, uses) in &entries {
            let (messages, bytes) = uses.take();
            if messages > 0 {
                taken.push((uses.clone(), DataKeyUses { tenant: tenant.clone(), data_key: id.hex(), messages, bytes }));
            }
        }
        let rows: Vec<DataKeyUses> = taken.iter().map(|(_, u)| u.clone()).collect();
        if let Err(e) = self.registry.add_data_key_uses(&rows, &self.instance, taken_ms, self.clock.now_millis()).await
        {
            for (uses, u) in &taken {
                uses.restore(u.messages, u.bytes);
            }
            return Err(e);
        }
        drop(taken);
        drop(entries);
        // Held by the list alone, a data key left every cache: nothing can count another
        // use of it, so once its counts are written it is forgotten, and closed.
        let mut closed = Vec::new();
        self.live().retain(|(tenant, id, uses)| {
            let keep = Arc::strong_count(uses) > 1 || !uses.is_idle();
            if !keep {
                closed.push((tenant.clone(), id.hex()));
            }
            keep
        });
        // Not closed (the registry failed): it stays unsettled, the safe side.
        if let Err(e) = self.registry.close_data_keys(&closed, self.clock.now_millis()).await {
            tracing::warn!(error = %e, "data keys could not be closed in the ledger; they stay unsettled");
        }
        Ok(())
    }

    /// This process's id in the ledger.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// At a clean shutdown, after the last flush: every data key of this instance is
    /// closed (nothing will count another use of it).
    pub async fn close_all(&self) -> Result<(), RegistryError> {
        let _one_at_a_time = self.flushing.lock().await;
        self.registry.close_owned_data_keys(&self.instance, self.clock.now_millis()).await
    }
}

#[async_trait::async_trait]
impl Ledger for RegistryLedger {
    async fn generated(&self, key: NewDataKey<'_>) -> Result<Arc<DataKeyUse>, String> {
        let keys: Vec<&str> = key.keys.iter().map(|k| k.as_str()).collect();
        self.registry
            .record_data_key(
                key.tenant,
                &key.id.hex(),
                key.purpose.as_str(),
                &keys,
                &self.instance,
                self.clock.now_millis(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let uses = Arc::new(DataKeyUse::default());
        self.live().push((key.tenant.clone(), key.id, uses.clone()));
        Ok(uses)
    }
}
