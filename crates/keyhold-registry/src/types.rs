//! The registry's records and the text forms their enums are stored as.

use std::fmt;
use std::str::FromStr;

use keyhold_core::{Purpose, RealmId, Region, TenantId};

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            /// The stored (and API) form.
            pub fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "{s:?} is not one of {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

text_enum!(
    /// How keyhold reaches a tenant's keys.
    TenantMode {
        /// The tenant's key policies grant the platform principal directly.
        Cmk => "cmk",
        /// keyhold assumes a role in the tenant's account (ExternalId `keyhold-<tenant>`).
        Byok => "byok",
        /// Keys of the embedded local provider (development, tests, air-gapped use).
        Local => "local",
    }
);

text_enum!(
    /// A tenant's lifecycle state.
    TenantState {
        /// Created; keys not attached or not yet valid in every region.
        Pending => "pending",
        /// Every region's key validated; encrypt and decrypt are served.
        Active => "active",
        /// A probe failed transiently or in part; still served.
        Degraded => "degraded",
        /// The tenant revoked access (or an operator suspended it): requests are refused.
        Suspended => "suspended",
        /// Crypto-shredded: key references destroyed; final.
        Deleted => "deleted",
    }
);

text_enum!(
    /// Why a tenant last changed state: stored as such, so decisions (may a probe resume
    /// this tenant?) are made on the cause, never on the reason's text.
    Cause {
        /// The tenant was created (`pending`).
        Created => "created",
        /// Validation found every region's key usable.
        KeysValidated => "keys_validated",
        /// Validation found an error in a key that was in use.
        ValidationFailed => "validation_failed",
        /// A probe of an active key met a definitive refusal (disabled, pending deletion,
        /// not found, access denied).
        KeyRefused => "key_refused",
        /// A probe of an active key failed transiently (throttling, outage).
        KeyUnavailable => "key_unavailable",
        /// A probe found every active key answering again.
        KeysHealthy => "keys_healthy",
        /// An admin deleted the tenant.
        Deleted => "deleted",
    }
);

text_enum!(
    /// A key's place in its tenant's key history.
    KeyStatus {
        /// The region's current key: encrypts new data and decrypts.
        Active => "active",
        /// Replaced by a newer key: still decrypts the messages it protects.
        DecryptOnly => "decrypt_only",
        /// Never used again, even if the key service would still answer.
        Retired => "retired",
    }
);

text_enum!(
    /// What keyhold last learned of a tenant's key.
    KeyCheck {
        /// Attached, validation found no error.
        Valid => "valid",
        /// Attached, validation found an error.
        Invalid => "invalid",
        /// Access was revoked (disabled, deleted, denied).
        Revoked => "revoked",
    }
);

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Its data-residency realm.
    pub realm: RealmId,
    /// How its keys are reached.
    pub mode: TenantMode,
    /// Its state.
    pub state: TenantState,
    /// Why it is in that state, as a typed cause (`None` for tenants from before causes
    /// were recorded).
    pub cause: Option<Cause>,
    /// Why it is in that state, in words (suspension cause, deletion request), if said.
    pub reason: Option<String>,
    /// Bumped by every change: transitions are compare-and-set on it.
    pub version: u64,
    /// For a BYOK tenant: the role in its account keyhold assumes.
    pub role_arn: Option<String>,
    /// Creation time (ms since the Unix epoch).
    pub created_ms: u64,
    /// Last change (ms since the Unix epoch).
    pub updated_ms: u64,
    /// Its data-key generation, bumped by a forced data-key rotation.
    pub dek_generation: u64,
}

/// A key in a tenant's key history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The region.
    pub region: Region,
    /// The key reference (AWS KMS key ARN, or local key id).
    pub key: String,
    /// Its place in the history.
    pub status: KeyStatus,
    /// What keyhold last learned of it.
    pub state: KeyCheck,
    /// When it was last checked (ms since the Unix epoch).
    pub last_check_ms: Option<u64>,
    /// The last validation's findings, as JSON.
    pub findings: String,
    /// When it was first attached (ms since the Unix epoch).
    pub attached_ms: u64,
    /// When its status last changed (ms since the Unix epoch).
    pub status_ms: u64,
}

/// The purposes a service may encrypt and decrypt for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purposes {
    /// Every purpose.
    All,
    /// Only these.
    Only(Vec<Purpose>),
}

impl Purposes {
    /// Whether `purpose` is allowed.
    pub fn allows(&self, purpose: &Purpose) -> bool {
        match self {
            Purposes::All => true,
            Purposes::Only(list) => list.contains(purpose),
        }
    }
}

impl fmt::Display for Purposes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Purposes::All => f.write_str("*"),
            Purposes::Only(list) => f.write_str(&list.iter().map(Purpose::as_str).collect::<Vec<_>>().join(",")),
        }
    }
}

/// A platform service allowed to call keyhold, authenticated by its Ed25519 keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceIdentity {
    /// Its name (the `iss` of its tokens).
    pub name: String,
    /// What it may use.
    pub purposes: Purposes,
    /// Registration time (ms since the Unix epoch).
    pub created_ms: u64,
    /// Its keys, oldest first: the newest has no expiry; older ones are accepted until
    /// theirs (the overlap of a rotation).
    pub keys: Vec<ServiceKey>,
}

impl ServiceIdentity {
    /// The keys a token may verify against at `now_ms`.
    pub fn accepted_keys(&self, now_ms: u64) -> impl Iterator<Item = &ServiceKey> {
        self.keys.iter().filter(move |k| k.expires_ms.is_none_or(|e| e > now_ms))
    }
}

/// One of a service's Ed25519 public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceKey {
    /// Its id: the public key, hex.
    pub id: String,
    /// The public key (32 bytes).
    pub public_key: Vec<u8>,
    /// When it was added (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it stops being accepted (after a rotation); `None` for the current key.
    pub expires_ms: Option<u64>,
}

/// One stored audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// The tenant whose trail it belongs to.
    pub tenant: TenantId,
    /// Its position in the trail, from 1.
    pub seq: u64,
    /// When it happened (ms since the Unix epoch).
    pub at_ms: u64,
    /// The event, as JSON.
    pub body: String,
    /// The previous event's hash (zeros for the first).
    pub prev_hash: [u8; 32],
    /// This event's chain hash.
    pub hash: [u8; 32],
}

/// The recorded head of a tenant's audit trail: its newest event, and the audit key's
/// signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    /// The newest event's sequence number.
    pub seq: u64,
    /// The newest event's chain hash.
    pub hash: [u8; 32],
    /// The audit key's signature over the head (`None` for a head written before heads
    /// were signed, or one whose signature was removed).
    pub sig: Option<Vec<u8>>,
}
