//! Incremental verification of one tenant's trail: a [`Verifier`] is fed the events in
//! order, one at a time, and finished against the signed head, so a trail of any length is
//! checked holding one event (the database walk holds one page; an export file one line).
//!
//! Detected: an edited event (its hash no longer matches), a deleted or reordered event
//! (sequence numbers skip, or an event does not link to its predecessor), deleted newest
//! events (the trail ends before the head), events added beyond the head, and a trail
//! rewritten and re-chained by someone without the audit key (the head's signature is
//! missing or does not verify), including a trail deleted whole.

use keyhold_core::TenantId;
use keyhold_registry::{AuditHead, AuditRow};
use serde::Serialize;

use crate::key::head_signature_valid;
use crate::{Event, chain_hash};

/// Where a trail is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
#[non_exhaustive]
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
    /// The head carries no signature.
    #[error(
        "the trail's head (event {seq}) is not signed: the trail was rewritten by someone without keyhold's audit key"
    )]
    Unsigned {
        /// The head's sequence number.
        seq: u64,
    },
    /// The head's signature does not verify with the audit key's public key.
    #[error(
        "the signature of the trail's head (event {seq}) does not verify: the trail was rewritten by someone \
         without keyhold's audit key"
    )]
    BadSignature {
        /// The head's sequence number.
        seq: u64,
    },
    /// Events are stored but the signed head is gone.
    #[error(
        "the trail holds {last} events but its signed head is missing: it was deleted by someone without \
         keyhold's audit key"
    )]
    HeadMissing {
        /// The last event present.
        last: u64,
    },
    /// The tenant is known to have had events, but its trail and head are gone.
    #[error("the trail is empty although the tenant has had events: the whole trail was deleted")]
    Erased,
    /// An event is stored beyond the signed head.
    #[error(
        "event {seq} lies beyond the signed head (event {head}): it was added by someone without keyhold's \
         audit key"
    )]
    BeyondHead {
        /// The event.
        seq: u64,
        /// The signed head.
        head: u64,
    },
}

/// Checks one tenant's trail fed oldest first, one event at a time.
#[derive(Debug, Clone)]
pub struct Verifier {
    expected: u64,
    prev_hash: [u8; 32],
    last_at_ms: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier {
    /// A verifier at the start of a trail.
    pub fn new() -> Self {
        Self { expected: 1, prev_hash: [0; 32], last_at_ms: 0 }
    }

    /// Checks the next event: that it is the next in sequence, links to its predecessor,
    /// matches its hash, and parses as an [`Event`]; returns the event.
    pub fn feed(&mut self, row: &AuditRow) -> Result<Event, ChainBreak> {
        if row.seq > self.expected {
            return Err(ChainBreak::Missing { expected: self.expected, found: row.seq });
        }
        if row.seq < self.expected || row.prev_hash != self.prev_hash {
            return Err(ChainBreak::Unlinked { seq: row.seq, prev: self.last_seq() });
        }
        if chain_hash(&row.prev_hash, row.seq, row.at_ms, &row.body) != row.hash {
            return Err(ChainBreak::Edited { seq: row.seq });
        }
        let event = serde_json::from_str::<Event>(&row.body).map_err(|_| ChainBreak::Unreadable { seq: row.seq })?;
        self.prev_hash = row.hash;
        self.last_at_ms = row.at_ms;
        self.expected += 1;
        Ok(event)
    }

    /// The sequence number of the last event fed (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.expected - 1
    }

    /// The chain hash of the last event fed (zeros before the first).
    pub fn last_hash(&self) -> [u8; 32] {
        self.prev_hash
    }

    /// The time of the last event fed (0 before the first).
    pub fn last_at_ms(&self) -> u64 {
        self.last_at_ms
    }

    /// Checks the events fed against `tenant`'s recorded head and its signature by
    /// `public_key`; returns how many events the trail holds. `expect_events` says the
    /// tenant is known to have had events (every existing tenant has: its creation is
    /// one), so an empty trail without a head is a deleted trail.
    pub fn finish(
        &self,
        tenant: &TenantId,
        head: Option<&AuditHead>,
        public_key: &[u8; 32],
        expect_events: bool,
    ) -> Result<u64, ChainBreak> {
        let last = self.last_seq();
        let Some(head) = head else {
            return match (last, expect_events) {
                (0, false) => Ok(0),
                (0, true) => Err(ChainBreak::Erased),
                (last, _) => Err(ChainBreak::HeadMissing { last }),
            };
        };
        if head.seq != last || head.hash != self.prev_hash {
            return Err(ChainBreak::Truncated { last, head: head.seq });
        }
        match &head.sig {
            None => Err(ChainBreak::Unsigned { seq: head.seq }),
            Some(sig) if !head_signature_valid(public_key, tenant, head.seq, &head.hash, sig) => {
                Err(ChainBreak::BadSignature { seq: head.seq })
            }
            Some(_) => Ok(last),
        }
    }
}
