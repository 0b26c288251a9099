//! Key change without downtime: re-encryption under the tenant's active keys, the
//! progress of a change from the data-key ledger, retiring a replaced key, a forced
//! data-key rotation, and a BYOK tenant's new role.
//!
//! **No header-only rewrap.** Re-encryption decrypts and encrypts again: a new message id
//! and a new data key (from the cache partition of the active keys), never the old
//! message with a rewritten header. In format v2 the header's tag is AES-GCM under the
//! message's derived key with a fixed all-zero IV; two headers of one message under that
//! key and IV would let anyone holding both recover the GHASH key and forge the message's
//! frames. The plaintext stays inside keyhold (zeroized after use).
//!
//! A message is "under the active keys" when the keys its encrypted data keys name are
//! exactly the tenant's active keys: then nothing is decrypted and the answer says
//! `changed: false`. Each re-encrypted message is recorded once (by message id) in the
//! ledger before the new message is answered, so a retried re-encryption is not counted
//! twice and progress never runs ahead of what the platform received.

use keyhold_audit::Event;
use keyhold_core::{KeyRef, Region, TenantId};
use keyhold_onboarding::Report;
use keyhold_registry::{KeyProtects, KeyStatus, Reencrypted, TenantKey, TenantMode};
use keyhold_service::DataKeyId;

use crate::crypto::{message_purpose, servable};
use crate::{Caller, Lifecycle, LifecycleError};

/// A key change's progress, from the ledger: what the tenant's `decrypt_only` keys still
/// protect.
#[derive(Debug, Clone)]
pub struct KeyChange {
    /// Each `decrypt_only` key with what it protects.
    pub keys: Vec<(TenantKey, KeyProtects)>,
    /// Data keys wrapped by any of them (each counted once).
    pub data_keys: u64,
    /// Messages written under those data keys (as flushed by the instances).
    pub messages: u64,
    /// Of those, messages re-encrypted (each counted once).
    pub reencrypted: u64,
    /// Messages not re-encrypted yet, counted per data key.
    pub remaining: u64,
    /// Data keys whose counts may be incomplete (still in use, or their instance stopped
    /// without writing its last counts): the change is not complete while there are any.
    pub unsettled: u64,
}

impl KeyChange {
    /// Whether every message under the replaced keys is known to be re-encrypted.
    pub fn complete(&self) -> bool {
        self.remaining == 0 && self.unsettled == 0
    }
}

/// How long after a key's status change its data keys' owners must have flushed for
/// their counts to be complete: the tenant-view bound (no instance encrypts under a
/// replaced key past it) and a request's own duration.
pub const SETTLE_MS: u64 = crate::TENANT_VIEW_TTL_MS + 5_000;

/// The outcome of a new role for a BYOK tenant.
#[derive(Debug)]
pub struct RoleOutcome {
    /// The validation report of the tenant's keys through the new role.
    pub report: Report,
    /// Whether the role was changed (only when every key works through it).
    pub changed: bool,
}

impl Lifecycle {
    /// Re-encrypts `message` of `tenant` under its active keys, appending the new message
    /// to `out`. Returns `false` (nothing appended, nothing decrypted) when the message is
    /// under the active keys already. The checks are decryption's (tenant, the message's
    /// purpose for the calling service, state, only the history's keys); the old message
    /// is recorded in the ledger before this returns.
    pub async fn reencrypt(
        &self,
        caller: &Caller<'_>,
        tenant: &TenantId,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, LifecycleError> {
        let start = out.len();
        match self.reencrypt_unrecorded(caller, tenant, message, out).await? {
            None => Ok(false),
            Some(old) => {
                if let Err(e) = self.record_reencrypted(tenant, &[old]).await {
                    out.truncate(start);
                    return Err(e);
                }
                Ok(true)
            }
        }
    }

    /// [`Lifecycle::reencrypt`] without recording: returns the old message's record (for
    /// a batch to record in one transaction with [`Lifecycle::record_reencrypted`] before
    /// answering), or `None` when nothing changed.
    pub async fn reencrypt_unrecorded(
        &self,
        caller: &Caller<'_>,
        tenant: &TenantId,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<Reencrypted>, LifecycleError> {
        let header = self.read_header(message)?;
        let purpose = message_purpose(caller, tenant, &header)?;
        self.journal.check(tenant)?;
        let view = self.tenant_view(tenant).await?;
        servable(&view)?;
        let keys = self.keyhold.message_keys(&header);
        if !view.active.is_empty() && same_keys(&keys, &view.active) {
            return Ok(None);
        }
        let old = reencryption_record(&header);
        let (context, suite) = keyhold_service::reencryption_params(&header)
            .map_err(|e| LifecycleError::MalformedCiphertext(format!("the ciphertext's context: {e}")))?;
        let mut plaintext = zeroize::Zeroizing::new(Vec::with_capacity(message.len()));
        self.decrypt_checked(caller, &view, header, purpose.clone(), message, &mut plaintext).await?;
        self.encrypt_as(caller, tenant.clone(), purpose, context, suite, &plaintext, out).await?;
        Ok(Some(old))
    }

    /// Records re-encrypted messages in the ledger (once each).
    pub async fn record_reencrypted(&self, tenant: &TenantId, old: &[Reencrypted]) -> Result<(), LifecycleError> {
        self.registry.record_reencrypted(tenant, old, self.now_ms()).await?;
        self.note_progress(tenant);
        Ok(())
    }

    /// Checks the tenant's key-change progress in the background and stores an event for
    /// each tenth passed (once across instances). Checks of one tenant never overlap and
    /// run at most once a second; one asked for during a check runs after it, so the last
    /// re-encryption is always followed by a check.
    pub(crate) fn note_progress(&self, tenant: &TenantId) {
        {
            let mut running = self.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(again) = running.get_mut(tenant) {
                *again = true;
                return;
            }
            running.insert(tenant.clone(), false);
        }
        let Some(me) = self.me.upgrade() else { return };
        let tenant = tenant.clone();
        tokio::spawn(async move {
            // Every message re-encrypted but counts not settled yet: look again once the
            // owners have flushed past the settle window (a few times; a crashed owner
            // never settles, and then no completion is reported).
            let mut settle_checks = 0;
            loop {
                let started = std::time::Instant::now();
                let waiting = match me.store_progress(&tenant).await {
                    Ok(t) => t.remaining == 0 && t.unsettled > 0 && t.messages > 0,
                    Err(e) => {
                        tracing::warn!(tenant = %tenant, error = %e, "key-change progress not checked");
                        false
                    }
                };
                let again = {
                    let mut running = me.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if running.get(&tenant) == Some(&true) {
                        running.insert(tenant.clone(), false);
                        true
                    } else if waiting && settle_checks < 6 {
                        false
                    } else {
                        running.remove(&tenant);
                        return;
                    }
                };
                if again {
                    // At most one check a second per tenant: re-encryption at full speed
                    // does not turn into a registry query per batch.
                    tokio::time::sleep(std::time::Duration::from_secs(1).saturating_sub(started.elapsed())).await;
                } else {
                    settle_checks += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(SETTLE_MS)).await;
                }
            }
        });
    }

    async fn store_progress(&self, tenant: &TenantId) -> Result<keyhold_registry::Totals, LifecycleError> {
        // This instance's counts of messages first, so the totals include them.
        self.flush_ledger().await;
        let keys: Vec<String> = self
            .registry
            .keys(tenant)
            .await?
            .into_iter()
            .filter(|k| k.status == KeyStatus::DecryptOnly)
            .map(|k| k.key)
            .collect();
        let totals = self.registry.decrypt_only_totals(tenant, SETTLE_MS).await?;
        if let Some(event) = crate::events::progress(tenant, &keys, &totals) {
            self.registry.add_event(&event, self.now_ms()).await?;
        }
        Ok(totals)
    }

    /// What each key of the tenant's history protects, from the ledger (keys that wrap no
    /// recorded data key are absent).
    pub async fn key_protects(&self, id: &TenantId) -> Result<Vec<KeyProtects>, LifecycleError> {
        self.live_tenant(id).await?;
        Ok(self.registry.key_protects(id, SETTLE_MS).await?)
    }

    /// The progress of the tenant's key change: what its `decrypt_only` keys still
    /// protect. This instance's counts are flushed first.
    pub async fn key_change(&self, id: &TenantId) -> Result<KeyChange, LifecycleError> {
        self.live_tenant(id).await?;
        self.flush_ledger().await;
        let history = self.registry.keys(id).await?;
        let protects = self.registry.key_protects(id, SETTLE_MS).await?;
        let keys = history
            .into_iter()
            .filter(|k| k.status == KeyStatus::DecryptOnly)
            .map(|k| {
                let p = protects.iter().find(|p| p.key == k.key).cloned().unwrap_or_else(|| KeyProtects {
                    key: k.key.clone(),
                    data_keys: 0,
                    messages: 0,
                    bytes: 0,
                    reencrypted: 0,
                    remaining: 0,
                    unsettled: 0,
                });
                (k, p)
            })
            .collect();
        let t = self.registry.decrypt_only_totals(id, SETTLE_MS).await?;
        // Whoever looks at the progress also has it reported.
        self.note_progress(id);
        Ok(KeyChange {
            keys,
            data_keys: t.data_keys,
            messages: t.messages,
            reencrypted: t.reencrypted,
            remaining: t.remaining,
            unsettled: t.unsettled,
        })
    }

    /// Retires `key` of `region` (a `decrypt_only` key): keyhold never uses it again,
    /// even if the key service would. Refused while the ledger shows messages under it that
    /// were not re-encrypted, unless `force`. Returns how many were left.
    pub async fn retire_key(
        &self,
        actor: &str,
        id: &TenantId,
        region: &Region,
        key: &str,
        force: bool,
    ) -> Result<u64, LifecycleError> {
        let (actor, id, region, key) = (actor.to_owned(), id.clone(), region.clone(), key.to_owned());
        self.detached(move |me| async move { me.retire_key_now(&actor, &id, &region, &key, force).await }).await
    }

    async fn retire_key_now(
        &self,
        actor: &str,
        id: &TenantId,
        region: &Region,
        key: &str,
        force: bool,
    ) -> Result<u64, LifecycleError> {
        let (_guard, _t) = self.lock_live(id).await?;
        let history = self.registry.keys(id).await?;
        match history.iter().find(|k| &k.region == region && k.key == key).map(|k| k.status) {
            None => return Err(LifecycleError::KeyNotFound(key.to_owned())),
            Some(KeyStatus::Active) => return Err(LifecycleError::KeyActive(key.to_owned())),
            Some(KeyStatus::Retired) => return Err(LifecycleError::KeyRetired(key.to_owned())),
            Some(KeyStatus::DecryptOnly) => {}
        }
        self.journal.check(id)?;
        self.flush_ledger().await;
        let p = self.registry.key_protects(id, SETTLE_MS).await?.into_iter().find(|p| p.key == key);
        let (messages, reencrypted, remaining, unsettled) =
            p.map_or((0, 0, 0, 0), |p| (p.messages, p.reencrypted, p.remaining, p.unsettled));
        if (remaining > 0 || unsettled > 0) && !force {
            return Err(LifecycleError::KeyProtectsData {
                key: key.to_owned(),
                remaining,
                messages,
                reencrypted,
                unsettled,
            });
        }
        let forced = if remaining > 0 {
            format!("; forced with {remaining} message(s) not re-encrypted")
        } else {
            String::new()
        };
        self.admin_event(actor, id, "retire_key", Some(format!("{region}: {key}{forced}"))).await;
        let event = crate::events::retired(id, region.as_str(), key, force, remaining);
        self.registry.retire_key(id, region, key, self.now_ms(), &[event]).await?;
        self.journal
            .record_or_queue(
                id,
                Event::KeyStatus {
                    region: region.to_string(),
                    key: key.to_owned(),
                    from: KeyStatus::DecryptOnly.to_string(),
                    to: KeyStatus::Retired.to_string(),
                },
            )
            .await;
        // Data keys it unwrapped must not be served from this instance's cache either;
        // other instances drop theirs when they read the history again (the view bound).
        self.forget_view(id);
        self.keyhold.flush_tenant(id);
        tracing::info!(tenant = %id, %region, key, remaining, force, "key retired");
        Ok(remaining)
    }

    /// Makes every instance stop using the tenant's current data keys (a suspected leak):
    /// its data-key generation is bumped, so data keys cached under the old one are not
    /// reused once an instance reads the tenant again (this one at once, the others
    /// within the tenant-view bound). Recorded in the audit trail. Returns the new
    /// generation.
    pub async fn rotate_data_keys(&self, actor: &str, id: &TenantId) -> Result<u64, LifecycleError> {
        let (actor, id) = (actor.to_owned(), id.clone());
        self.detached(move |me| async move {
            me.live_tenant(&id).await?;
            me.journal.check(&id)?;
            me.admin_event(&actor, &id, "rotate_data_keys", None).await;
            let generation =
                me.registry.bump_dek_generation(&id, me.now_ms(), |g| vec![crate::events::rotated(&id, g)]).await?;
            me.forget_view(&id);
            me.keyhold.flush_tenant(&id);
            tracing::info!(tenant = %id, generation, "data keys rotated");
            Ok(generation)
        })
        .await
    }

    /// Gives a BYOK tenant a new role: its active keys are validated through the new
    /// role first, and the role changes only if every one works through it (a tenant in
    /// service keeps its working role otherwise; a pending one needs its own keys to pass).
    pub async fn set_role(&self, actor: &str, id: &TenantId, role_arn: &str) -> Result<RoleOutcome, LifecycleError> {
        crate::check_role_arn(role_arn)?;
        let (actor, id, role) = (actor.to_owned(), id.clone(), role_arn.to_owned());
        self.detached(move |me| async move {
            let (_guard, t) = me.lock_live(&id).await?;
            if t.mode != TenantMode::Byok {
                return Err(LifecycleError::NotByok(id.clone(), t.mode.to_string()));
            }
            me.journal.check(&id)?;
            me.admin_event(&actor, &id, "set_role", Some(role.clone())).await;
            let mut proposed = t.clone();
            proposed.role_arn = Some(role.clone());
            let set = me.active_set(&id).await?;
            let report = me.run_validation_as(&proposed, &set, false).await;
            // A tenant without keys yet has nothing to validate the role against.
            let changed = set.is_empty() || report.usable;
            if changed {
                me.registry.set_role(&id, &role, me.now_ms(), &[crate::events::role_changed(&id, &role)]).await?;
                if let Some(aws) = &me.aws {
                    aws.assume_for(&id, &role, &keyhold_onboarding::external_id(&id)).await;
                }
                me.forget_view(&id);
                me.keyhold.flush_tenant(&id);
                tracing::info!(tenant = %id, role, "role changed");
            }
            Ok(RoleOutcome { report, changed })
        })
        .await
    }
}

/// The ledger's record of re-encrypting the message with `header`: its id and its data
/// key's ledger id.
pub fn reencryption_record(header: &keyhold_envelope::Header) -> Reencrypted {
    let edks: Vec<_> = header.edk_refs().collect();
    Reencrypted { message_id: hex(header.message_id()), data_key: DataKeyId::of_message(edks.into_iter()).hex() }
}

/// Whether `a` and `b` hold the same keys.
fn same_keys(a: &[KeyRef], b: &[KeyRef]) -> bool {
    a.iter().all(|k| b.contains(k)) && b.iter().all(|k| a.contains(k))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
