//! Instant propagation of tenant changes, and revocation receipts.
//!
//! On PostgreSQL every instance listens for the registry's tenant notifications
//! ([`spawn_listener`]): a changed tenant's view is dropped at once, so the next request
//! reads it again (a suspension made through one instance is enforced by the others as
//! soon as the notification arrives, not when their view expires). A lost notification
//! (the listening connection dropped) costs at most the tenant-view bound: the listener
//! drops every view when it reconnects, and views expire anyway.
//!
//! **Receipts.** When an instance learns that a tenant is suspended or deleted (it made
//! the change, was notified, or found it in its periodic sweep), it drops the tenant's
//! cached data keys and records a receipt: when it did, for that version of the tenant.
//! Once every running instance (one whose ledger flushed within [`ALIVE_MS`]) has a
//! receipt, one `tenant.revocation_confirmed` event says since when no instance can use
//! the tenant's keys. The sweep runs with every flush, so an instance that missed the
//! notification confirms within a flush interval, and a confirmation held back by an
//! instance that died is given once that instance no longer counts as running.

use std::sync::Arc;
use std::time::Duration;

use keyhold_core::TenantId;
use keyhold_registry::TenantState;

use crate::Lifecycle;

/// An instance whose ledger flushed within this long counts as running.
pub const ALIVE_MS: u64 = 30_000;

/// Revocations looked for by the sweep: changed within this long.
const SWEEP_WINDOW_MS: u64 = 24 * 3600 * 1000;

impl Lifecycle {
    /// A tenant changed (a notification): its view is dropped, and if it is suspended or
    /// deleted its cached keys too, with a receipt.
    pub async fn tenant_changed(&self, id: &TenantId) {
        self.forget_view(id);
        match self.registry.tenant(id).await {
            Ok(Some(t)) if matches!(t.state, TenantState::Suspended | TenantState::Deleted) => {
                self.revoked(id, t.version).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(tenant = %id, error = %e, "a changed tenant could not be read; its view expires"),
        }
    }

    /// `id` is suspended or deleted at `version`: its cached data keys are dropped here,
    /// the receipt recorded, and the confirmation stored once every running instance has
    /// one. Idempotent.
    pub(crate) async fn revoked(&self, id: &TenantId, version: u64) {
        self.keyhold.flush_tenant(id);
        self.forget_view(id);
        {
            let mut done = self.receipted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if done.len() > 10_000 {
                done.clear();
            }
            if !done.insert((id.clone(), version)) {
                return;
            }
        }
        let dropped = self.now_ms();
        let instance = self.ledger.instance().to_owned();
        // The receipt claims this instance is running: its heartbeat is written first.
        let recorded = async {
            self.ledger.flush().await?;
            self.registry.record_receipt(id, version, &instance, dropped).await
        }
        .await;
        if let Err(e) = recorded {
            tracing::warn!(tenant = %id, error = %e, "revocation receipt not recorded; the sweep retries");
            self.receipted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&(id.clone(), version));
            return;
        }
        self.confirm(id, version).await;
    }

    /// Stores `tenant.revocation_confirmed` if every running instance has a receipt.
    async fn confirm(&self, id: &TenantId, version: u64) {
        let now = self.now_ms();
        match self.registry.receipts(id, version, now.saturating_sub(ALIVE_MS)).await {
            Ok((0, Some(last))) => {
                let event = crate::events::revocation_confirmed(id, version, last);
                if let Err(e) = self.registry.add_event(&event, now).await {
                    tracing::warn!(tenant = %id, error = %e, "revocation confirmation not stored");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(tenant = %id, error = %e, "revocation receipts not read"),
        }
    }

    /// Finds suspensions and deletions this instance has not confirmed (a missed
    /// notification) and confirms them; run with every flush.
    pub async fn sweep_revocations(&self) {
        let since = self.now_ms().saturating_sub(SWEEP_WINDOW_MS);
        match self.registry.unconfirmed_revocations(self.ledger.instance(), since).await {
            Ok(list) => {
                for (id, version) in list {
                    self.revoked(&id, version).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "the revocation sweep could not read the registry"),
        }
        // Confirmations still missing (an instance that died unconfirmed has aged out of
        // the running set since): looked at again until given.
        match self.registry.unconfirmed_confirmations(since).await {
            Ok(list) => {
                for (id, version) in list {
                    self.confirm(&id, version).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "the revocation sweep could not read the registry"),
        }
    }

    /// Drops every tenant view (after notifications may have been missed).
    pub fn forget_all_views(&self) {
        self.views.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

/// Listens for tenant changes (PostgreSQL) until dropped; `None` on SQLite. The listener
/// reconnects after a second when its connection fails, dropping every view.
pub fn spawn_listener(lifecycle: Arc<Lifecycle>) -> Option<tokio::task::JoinHandle<()>> {
    if lifecycle.registry.backend() != keyhold_registry::Backend::Postgres {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            match lifecycle.registry.tenant_changes().await {
                Ok(Some(mut changes)) => {
                    // Subscribed: anything before it may have been missed.
                    lifecycle.forget_all_views();
                    loop {
                        match changes.next().await {
                            Ok(Some(t)) => lifecycle.tenant_changed(&t).await,
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "tenant notifications lost; listening again");
                                break;
                            }
                        }
                    }
                }
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "tenant notifications unavailable; views expire meanwhile"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }))
}
