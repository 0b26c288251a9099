//! The audit trail: what happened to each tenant's keys and data, append-only and
//! hash-chained per tenant, so that an edited, deleted or reordered event is detected.
//!
//! - [`Event`]: provider calls (operation, key, region, context, outcome, latency),
//!   tenant and key state changes, admin actions, per-minute usage counts. Events carry
//!   identifiers, encryption context and outcomes only; no plaintext, ciphertext or key
//!   material has a field to go in.
//! - [`chain_hash`]: SHA-256 over a domain tag, the previous hash, the sequence number,
//!   the time and the event's JSON, each length-delimited. The first event's previous
//!   hash is all zeros.
//! - [`Auditor`]: appends to the registry's storage and reads back; [`verify`] walks a
//!   trail and names the first broken event; [`Auditor::export`] writes JSON lines.
//! - [`UsageCounter`]: counts encrypt and decrypt operations per tenant, purpose and
//!   service in memory, and turns each finished minute into one [`Event::Usage`] per
//!   combination.

#![forbid(unsafe_code)]

mod usage;

use std::collections::BTreeMap;
use std::io::Write;

use keyhold_core::TenantId;
use keyhold_registry::{AuditRow, Registry, RegistryError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use usage::UsageCounter;

/// Domain separation for the chain hash; bump on any change to its input layout.
const DOMAIN: &[u8] = b"keyhold-audit-v1";

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A call to a key provider (or, with `count` above 1, that many identical failed
    /// calls within a short window, aggregated into one event).
    ProviderCall {
        /// `GenerateDataKey`, `Encrypt`, `Decrypt`, `DescribeKey`, ...
        operation: String,
        /// The key used.
        key: String,
        /// Its region, when known.
        region: Option<String>,
        /// The encryption context sent, for a successful call (at most 8,192 bytes
        /// serialized: keyhold refuses larger contexts before any call).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context: Option<BTreeMap<String, String>>,
        /// For a failed call, the SHA-256 (hex) of the serialized context instead of the
        /// context itself, so a caller cannot make the trail store what it likes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context_digest: Option<String>,
        /// `ok`, or the error code.
        outcome: String,
        /// How long it took, in microseconds (the first call's, when aggregated).
        latency_us: u64,
        /// How many identical calls this event stands for (1 unless aggregated).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        count: u64,
        /// When aggregated: the last of the calls (ms since the Unix epoch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_ms: Option<u64>,
    },
    /// A tenant changed state.
    TenantState {
        /// Before (`none` on creation).
        from: String,
        /// After.
        to: String,
        /// The stable code of the cause (`created`, `validated`, `probe_refused`, ...).
        #[serde(default)]
        cause: String,
        /// Why, in words.
        reason: Option<String>,
    },
    /// A tenant's key was attached, validated, or changed state.
    KeyState {
        /// The region.
        region: String,
        /// The key.
        key: String,
        /// Its new state.
        state: String,
        /// The validation findings' codes, if any.
        findings: Vec<String>,
    },
    /// A key's place in the tenant's key history changed (`active`, `decrypt_only`,
    /// `retired`).
    KeyStatus {
        /// The region.
        region: String,
        /// The key.
        key: String,
        /// Its status before (`none` when first attached).
        from: String,
        /// Its status now.
        to: String,
    },
    /// A health probe of a key gave a different outcome than the previous probe.
    KeyProbe {
        /// The region.
        region: Option<String>,
        /// The key.
        key: String,
        /// `ok`, or the error code.
        outcome: String,
    },
    /// The health probes of a tenant's keys since the previous summary.
    ProbeSummary {
        /// The period's start (ms since the Unix epoch).
        since_ms: u64,
        /// Probe round trips made (GenerateDataKey and Decrypt each).
        probes: u64,
        /// Of which failed.
        failures: u64,
    },
    /// An administrative action.
    AdminAction {
        /// Who (`admin`, `tenant-admin:<tenant>`).
        actor: String,
        /// What (`create_tenant`, `delete_tenant`, `attach_key`, ...).
        action: String,
        /// Details worth keeping, without secrets.
        detail: Option<String>,
    },
    /// Encrypt and decrypt operations for one purpose and service within one minute,
    /// counted since the previous flush (a minute may have several such events: add them).
    Usage {
        /// The minute's start (ms since the Unix epoch).
        minute_ms: u64,
        /// The purpose.
        purpose: String,
        /// The calling service.
        service: String,
        /// Messages encrypted.
        encrypts: u64,
        /// Messages decrypted.
        decrypts: u64,
    },
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// A stored event, as read back and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The tenant.
    pub tenant: String,
    /// Position in the tenant's trail, from 1.
    pub seq: u64,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The event.
    pub event: Event,
    /// The previous event's hash, hex.
    pub prev_hash: String,
    /// This event's chain hash, hex.
    pub hash: String,
}

/// Why an audit call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Storage failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// An event could not be encoded or decoded.
    #[error("audit event JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing an export failed.
    #[error("writing the audit export: {0}")]
    Io(#[from] std::io::Error),
}

/// Where a trail is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum ChainBreak {
    /// An event's content no longer matches its hash.
    #[error("event {seq} was edited: its content does not match its hash")]
    Edited {
        /// The event.
        seq: u64,
    },
    /// Sequence numbers skip: events were deleted.
    #[error("event {expected} is missing (the next stored event is {found}): events were deleted")]
    Missing {
        /// The sequence number that should come next.
        expected: u64,
        /// The one found instead.
        found: u64,
    },
    /// An event does not link to its predecessor: moved or replaced.
    #[error("event {seq} does not follow event {prev}: events were reordered or replaced")]
    Unlinked {
        /// The event.
        seq: u64,
        /// Its predecessor in the trail.
        prev: u64,
    },
    /// The trail ends before (or differs from) the recorded head: its newest events were
    /// deleted or replaced.
    #[error("the trail ends at event {last} but the recorded head is event {head}: newest events were deleted")]
    Truncated {
        /// The last event present.
        last: u64,
        /// The recorded head.
        head: u64,
    },
    /// A stored event is not valid JSON for an event.
    #[error("event {seq} does not parse as an audit event")]
    Unreadable {
        /// The event.
        seq: u64,
    },
}

/// The chain hash of an event.
pub fn chain_hash(prev: &[u8; 32], seq: u64, at_ms: u64, body: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    h.update((body.len() as u64).to_be_bytes());
    h.update(body.as_bytes());
    h.finalize().into()
}

/// Checks a whole trail, oldest first, against the recorded head: returns how many events
/// it holds, or the first break.
pub fn verify(rows: &[AuditRow], head: Option<(u64, [u8; 32])>) -> Result<u64, ChainBreak> {
    let mut prev_hash = [0u8; 32];
    let mut expected = 1u64;
    for row in rows {
        if row.seq > expected {
            return Err(ChainBreak::Missing { expected, found: row.seq });
        }
        if row.seq < expected || row.prev_hash != prev_hash {
            return Err(ChainBreak::Unlinked { seq: row.seq, prev: expected.saturating_sub(1) });
        }
        if chain_hash(&row.prev_hash, row.seq, row.at_ms, &row.body) != row.hash {
            return Err(ChainBreak::Edited { seq: row.seq });
        }
        if serde_json::from_str::<Event>(&row.body).is_err() {
            return Err(ChainBreak::Unreadable { seq: row.seq });
        }
        prev_hash = row.hash;
        expected += 1;
    }
    let last = expected - 1;
    match head {
        None if last == 0 => Ok(0),
        Some((seq, hash)) if seq == last && hash == prev_hash => Ok(last),
        Some((seq, _)) => Err(ChainBreak::Truncated { last, head: seq }),
        None => Err(ChainBreak::Truncated { last, head: 0 }),
    }
}

/// Appends to and reads the audit trails in a registry.
#[derive(Debug, Clone)]
pub struct Auditor {
    registry: Registry,
}

/// How many events are read per page when walking a trail.
const PAGE: u32 = 1000;

impl Auditor {
    /// An auditor over `registry`'s storage.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    /// Appends `event` to `tenant`'s trail.
    pub async fn record(&self, tenant: &TenantId, at_ms: u64, event: &Event) -> Result<u64, AuditError> {
        let body = serde_json::to_string(event)?;
        Ok(self.registry.append_audit(tenant, at_ms, &body, chain_hash).await?.seq)
    }

    /// Up to `limit` records after `after_seq`.
    pub async fn read(&self, tenant: &TenantId, after_seq: u64, limit: u32) -> Result<Vec<Record>, AuditError> {
        self.registry.audit(tenant, after_seq, limit).await?.iter().map(record).collect()
    }

    /// Verifies `tenant`'s whole trail.
    pub async fn verify(&self, tenant: &TenantId) -> Result<Result<u64, ChainBreak>, AuditError> {
        let mut rows = Vec::new();
        loop {
            let after = rows.last().map_or(0, |r: &AuditRow| r.seq);
            let page = self.registry.audit(tenant, after, PAGE).await?;
            let done = page.len() < PAGE as usize;
            rows.extend(page);
            if done {
                break;
            }
        }
        Ok(verify(&rows, self.registry.audit_head(tenant).await?))
    }

    /// Writes `tenant`'s whole trail as JSON lines (one [`Record`] per line); returns how
    /// many.
    pub async fn export(&self, tenant: &TenantId, out: &mut impl Write) -> Result<u64, AuditError> {
        let mut after = 0;
        let mut n = 0;
        loop {
            let page = self.registry.audit(tenant, after, PAGE).await?;
            for row in &page {
                serde_json::to_writer(&mut *out, &record(row)?)?;
                out.write_all(b"\n")?;
                after = row.seq;
                n += 1;
            }
            if page.len() < PAGE as usize {
                return Ok(n);
            }
        }
    }
}

fn record(row: &AuditRow) -> Result<Record, AuditError> {
    Ok(Record {
        tenant: row.tenant.to_string(),
        seq: row.seq,
        at_ms: row.at_ms,
        event: serde_json::from_str(&row.body)?,
        prev_hash: hex(&row.prev_hash),
        hash: hex(&row.hash),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
