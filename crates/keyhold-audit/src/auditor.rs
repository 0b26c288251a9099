//! The [`Auditor`]: appends events to the registry's storage, hash-chained and with the
//! new head signed by the [`AuditKey`]; reads, verifies, checkpoints and exports trails.
//!
//! Verification and export walk a trail page by page (keyset pagination on the sequence
//! number), holding one page of [`PAGE`] events at a time whatever the trail's length.
//! Both first read the signed head and walk up to it, so events appended meanwhile neither
//! break a verification nor make an export disagree with its checkpoint.

use std::io::Write;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use keyhold_core::TenantId;
use keyhold_registry::{AuditHead, AuditRow, Registry};

use crate::export::{Checkpoint, CheckpointLine};
use crate::verify::{ChainBreak, Verifier};
use crate::{AuditError, AuditKey, Event, Record, chain_hash, head_signature_valid, hex};

/// How many events are read per page when walking a trail.
const PAGE: u32 = 1000;

/// Appends to and reads the audit trails in a registry.
#[derive(Debug, Clone)]
pub struct Auditor {
    registry: Registry,
    key: Arc<AuditKey>,
    genesis_rule: bool,
}

impl Auditor {
    /// An auditor over `registry`'s storage, signing heads with `key`.
    pub fn new(registry: Registry, key: Arc<AuditKey>) -> Self {
        Self { registry, key, genesis_rule: false }
    }

    /// Starts a trail only with a tenant's creation event (`tenant_state` from `none`):
    /// once a trail was wiped in the database, nothing keyhold appends can make it look
    /// like a fresh, intact trail. The server sets this; every tenant it creates has its
    /// creation as event 1.
    pub fn with_genesis_rule(mut self) -> Self {
        self.genesis_rule = true;
        self
    }

    /// The public half of the audit signing key: what a tenant verifies exports against.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.public_key()
    }

    /// Appends `event` to `tenant`'s trail and signs the new head; returns its sequence
    /// number. An error means the event was not stored (after retrying transient
    /// failures): the caller fails its request closed.
    pub async fn record(&self, tenant: &TenantId, at_ms: u64, event: &Event) -> Result<u64, AuditError> {
        let body = serde_json::to_string(event)?;
        let public = self.key.public_key();
        let genesis_ok = !self.genesis_rule || matches!(event, Event::TenantState { from, .. } if from == "none");
        let sign = |prev: Option<&AuditHead>, seq, hash: &[u8; 32]| {
            // Extend only a head this key signed: a trail rewritten in the database (its
            // head replaced, its signature removed) is never re-legitimised by a new
            // signature on top; appends to it fail, closed.
            let extends_signed = match prev {
                None => genesis_ok,
                Some(h) => {
                    h.sig.as_deref().is_some_and(|sig| head_signature_valid(&public, tenant, h.seq, &h.hash, sig))
                }
            };
            if !extends_signed {
                return None;
            }
            self.key.sign_head(tenant, seq, hash).map(|s| s.to_vec())
        };
        Ok(self.registry.append_audit(tenant, at_ms, &body, chain_hash, sign).await?.seq)
    }

    /// Creates a tenant in the registry with `event` (its creation) as the first event of
    /// its trail, and its lifecycle `events`, in one transaction.
    #[allow(clippy::too_many_arguments, reason = "the tenant's fields and its first event")]
    pub async fn create_tenant(
        &self,
        id: &TenantId,
        realm: &keyhold_core::RealmId,
        mode: keyhold_registry::TenantMode,
        role_arn: Option<&str>,
        at_ms: u64,
        event: &Event,
        events: &[keyhold_registry::NewEvent],
    ) -> Result<keyhold_registry::Tenant, AuditError> {
        let body = serde_json::to_string(event)?;
        let sign = |prev: Option<&AuditHead>, seq: u64, hash: &[u8; 32]| match prev {
            None => self.key.sign_head(id, seq, hash).map(|s| s.to_vec()),
            // A trail already there for a new tenant id: someone wrote it; never adopt it.
            Some(_) => None,
        };
        let genesis = keyhold_registry::Genesis { body: &body, chain: &chain_hash, sign: &sign };
        Ok(self.registry.create_tenant_recorded(id, realm, mode, role_arn, at_ms, Some(genesis), events).await?)
    }

    /// Signs every head that has no signature (trails written before heads were signed).
    /// Run once, when the audit key is created: trust on first use. Returns how many.
    pub async fn adopt_unsigned_heads(&self) -> Result<u64, AuditError> {
        let mut n = 0;
        for (tenant, head) in self.registry.unsigned_heads().await? {
            if let Some(sig) = self.key.sign_head(&tenant, head.seq, &head.hash)
                && self.registry.sign_unsigned_head(&tenant, &head, &sig).await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Up to `limit` records after `after_seq`.
    pub async fn read(&self, tenant: &TenantId, after_seq: u64, limit: u32) -> Result<Vec<Record>, AuditError> {
        self.registry.audit(tenant, after_seq, limit).await?.iter().map(record).collect()
    }

    /// Verifies `tenant`'s whole trail against its signed head; returns how many events it
    /// holds, or the first break. Pass `expect_events` for any tenant that exists (its
    /// creation is an event), so that a trail deleted whole is reported.
    pub async fn verify(&self, tenant: &TenantId, expect_events: bool) -> Result<Result<u64, ChainBreak>, AuditError> {
        Ok(self.walk(tenant, expect_events).await?.map(|(n, _)| n))
    }

    /// The signed head of `tenant`'s trail, after verifying the whole trail up to it: a
    /// tenant that keeps it can later prove that its trail was not rolled back to an
    /// earlier head.
    pub async fn checkpoint(&self, tenant: &TenantId) -> Result<Checkpoint, AuditError> {
        match self.walk(tenant, false).await? {
            Err(b) => Err(AuditError::Broken(b)),
            Ok((_, None)) => Err(AuditError::NoTrail(tenant.clone())),
            Ok((_, Some((head, at_ms)))) => Ok(self.checkpoint_of(tenant, &head, at_ms)),
        }
    }

    /// Writes `tenant`'s trail as JSON lines: one [`Record`] per event up to the signed
    /// head, then one line `{"checkpoint": {...}}` holding the head ([`Checkpoint`]), so
    /// that [`crate::verify_export`] can check the file offline. Returns how many events
    /// were written. The stored trail is copied as it is, without verifying it first: a
    /// tampered trail gives an export that fails verification, which is the evidence.
    pub async fn export(&self, tenant: &TenantId, out: &mut impl Write) -> Result<u64, AuditError> {
        let Some(head) = self.registry.audit_head(tenant).await? else {
            return Err(AuditError::NoTrail(tenant.clone()));
        };
        let mut after = 0;
        let mut n = 0;
        let mut head_at_ms = 0;
        'pages: loop {
            let page = self.registry.audit(tenant, after, PAGE).await?;
            for row in &page {
                if row.seq > head.seq {
                    break 'pages;
                }
                serde_json::to_writer(&mut *out, &record(row)?)?;
                out.write_all(b"\n")?;
                if row.seq == head.seq {
                    head_at_ms = row.at_ms;
                }
                after = row.seq;
                n += 1;
            }
            if page.len() < PAGE as usize {
                break;
            }
        }
        let line = CheckpointLine { checkpoint: self.checkpoint_of(tenant, &head, head_at_ms) };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        out.flush()?;
        Ok(n)
    }

    /// Walks `tenant`'s trail through a [`Verifier`] up to its signed head; returns how
    /// many events it holds and the head with its event's time.
    async fn walk(
        &self,
        tenant: &TenantId,
        expect_events: bool,
    ) -> Result<Result<(u64, Option<(AuditHead, u64)>), ChainBreak>, AuditError> {
        let mut head = self.registry.audit_head(tenant).await?;
        if head.is_none() && !self.registry.audit(tenant, 0, 1).await?.is_empty() {
            // An append may have stored the first event since the head was read.
            head = self.registry.audit_head(tenant).await?;
        }
        let mut verifier = Verifier::new();
        loop {
            let until = head.as_ref().map_or(u64::MAX, |h| h.seq);
            // Walk to the head read; events beyond it are either appended since (then the
            // head has moved past them when read again) or were added without the key.
            while verifier.last_seq() < until {
                let page = self.registry.audit(tenant, verifier.last_seq(), PAGE).await?;
                for row in page.iter().take_while(|r| r.seq <= until) {
                    if let Err(b) = verifier.feed(row) {
                        return Ok(Err(b));
                    }
                }
                if page.len() < PAGE as usize || page.last().is_some_and(|r| r.seq > until) {
                    break;
                }
            }
            let Some(h) = &head else { break };
            let Some(beyond) = self.registry.audit(tenant, h.seq, 1).await?.into_iter().next() else { break };
            let newer = self.registry.audit_head(tenant).await?;
            if newer.as_ref().is_none_or(|n| n.seq <= h.seq) {
                return Ok(Err(ChainBreak::BeyondHead { seq: beyond.seq, head: h.seq }));
            }
            head = newer;
        }
        let at_ms = verifier.last_at_ms();
        Ok(verifier
            .finish(tenant, head.as_ref(), &self.key.public_key(), expect_events)
            .map(|n| (n, head.map(|h| (h, at_ms)))))
    }

    fn checkpoint_of(&self, tenant: &TenantId, head: &AuditHead, at_ms: u64) -> Checkpoint {
        Checkpoint {
            tenant: tenant.to_string(),
            seq: head.seq,
            hash: hex(&head.hash),
            at_ms,
            signature: head.sig.as_deref().map(|s| BASE64.encode(s)).unwrap_or_default(),
            public_key: BASE64.encode(self.key.public_key()),
        }
    }
}

fn record(row: &AuditRow) -> Result<Record, AuditError> {
    Ok(Record {
        tenant: row.tenant.to_string(),
        seq: row.seq,
        at_ms: row.at_ms,
        event: serde_json::from_str(&row.body)?,
        body: row.body.clone(),
        prev_hash: hex(&row.prev_hash),
        hash: hex(&row.hash),
    })
}
