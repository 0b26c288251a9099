//! Identifiers, secret types and the encryption context shared by every keyhold crate.
//!
//! Everything here is plain data: no IO, no async, no clock reads except through the
//! [`Clock`] trait that callers inject. Identifiers are parsed once at the edge
//! ([`TenantId::parse`], [`Purpose::parse`], ...) so that the rest of the code can rely on
//! their invariants instead of re-checking strings.

#![forbid(unsafe_code)]

mod arn;
mod clock;
mod context;
mod edk;
mod ids;
mod secret;

pub use arn::{ArnError, KeyArn, KeyResource};
pub use clock::{Clock, ManualClock, SystemClock};
pub use context::{ContextError, EncryptionContext, MAX_CONTEXT_BYTES, RESERVED_PURPOSE_KEY, RESERVED_TENANT_KEY};
pub use edk::EncryptedDataKey;
pub use ids::{IdError, KeyRef, Purpose, RealmId, Region, TenantId};
pub use secret::DataKey;
