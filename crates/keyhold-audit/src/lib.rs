//! The audit trail: what happened to each tenant's keys and data, append-only,
//! hash-chained per tenant, and with each trail's head signed by an audit key that does
//! not live in the database.
//!
//! What is guaranteed: an edited, deleted, reordered or added event, deleted newest
//! events, and a trail rewritten (or deleted whole) by someone with write access to the
//! database but without the audit key are all detected, by [`Auditor::verify`] against
//! the database and by [`verify_export`] against an export, offline. The limit: someone
//! with database write access who kept an old copy of a trail's rows and signed head can
//! roll the trail back to it; a [`Checkpoint`] the tenant keeps detects that, since its
//! signed sequence number is later than the rolled-back head's.
//!
//! - [`Event`]: provider calls (operation, key, region, context, outcome, latency),
//!   tenant and key state changes, admin actions, per-minute usage counts. Events carry
//!   identifiers, encryption context and outcomes only; no plaintext, ciphertext or key
//!   material has a field to go in.
//! - [`chain_hash`]: SHA-256 over a domain tag, the previous hash, the sequence number,
//!   the time and the event's JSON, each length-delimited. The first event's previous
//!   hash is all zeros.
//! - [`AuditKey`]: the Ed25519 key that signs each new head ([`head_message`]: a domain
//!   tag, the tenant id, the sequence number and the hash), kept in a 0600 file.
//! - [`Auditor`]: appends to the registry's storage (never losing an append: see
//!   `keyhold-registry`), reads back, verifies through a streaming [`Verifier`] that names
//!   the first break ([`ChainBreak`]), hands out signed checkpoints, and exports JSON lines
//!   ending with the checkpoint. Verification and export hold one page of events at a
//!   time.
//! - [`verify_export`]: checks an export offline, line by line, against a trusted public
//!   key ([`parse_public_key`] reads one from the command line).
//! - [`UsageCounter`]: counts encrypt and decrypt operations per tenant, purpose and
//!   service in memory, and turns each finished minute into one [`Event::Usage`] per
//!   combination.

#![forbid(unsafe_code)]

mod auditor;
mod export;
mod key;
mod usage;
mod verify;

use std::collections::BTreeMap;

use keyhold_core::TenantId;
use keyhold_registry::RegistryError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use auditor::Auditor;
pub use export::{
    Checkpoint, ExportError, ExportVerification, MAX_LINE, PublicKeyError, parse_public_key, verify_export,
};
pub use key::{AuditKey, AuditKeyError, head_message, head_signature_valid};
pub use usage::UsageCounter;
pub use verify::{ChainBreak, Verifier};

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

impl Event {
    /// The event's type as it is stored (`provider_call`, `tenant_state`, ...): for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ProviderCall { .. } => "provider_call",
            Event::TenantState { .. } => "tenant_state",
            Event::KeyState { .. } => "key_state",
            Event::KeyStatus { .. } => "key_status",
            Event::KeyProbe { .. } => "key_probe",
            Event::ProbeSummary { .. } => "probe_summary",
            Event::AdminAction { .. } => "admin_action",
            Event::Usage { .. } => "usage",
        }
    }
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
    /// The event exactly as stored and hashed (its JSON): what makes the hash
    /// recomputable offline, whatever a reader's JSON serializer would produce.
    pub body: String,
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
    /// The tenant has no audit trail (no event was ever recorded for it).
    #[error("tenant {0} has no audit trail")]
    NoTrail(TenantId),
    /// The trail is broken, so keyhold does not vouch for its head.
    #[error("the audit trail is broken: {0}")]
    Broken(#[source] ChainBreak),
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

/// Lower-case hex, as hashes appear in records and checkpoints.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}
