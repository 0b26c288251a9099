//! Offline verification of an audit export, without the database: [`verify_export`]
//! streams the JSON lines written by [`crate::Auditor::export`], recomputes every chain
//! hash from the stored `body`, and checks the final checkpoint's signature with a public
//! key the verifier trusts (passed in, never the one the file names).
//!
//! The file is read one line at a time (each at most [`MAX_LINE`] bytes), so an export of
//! any length verifies in constant memory. The first problem found is reported with the
//! line it is on: a line that does not parse, a chain break, a missing checkpoint or a line
//! after it, a checkpoint signed by another key or not signed by the trusted one, and a
//! checkpoint that does not match the last event (the newest events were cut off).

use std::io::{BufRead, Read};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use keyhold_core::TenantId;
use keyhold_registry::AuditRow;
use serde::{Deserialize, Serialize};

use crate::Record;
use crate::key::head_signature_valid;
use crate::verify::{ChainBreak, Verifier};

/// The longest line accepted in an export (events are a few KiB at most: encryption
/// contexts are capped at 8 KiB), so a hostile file cannot make the verifier buffer
/// without bound.
pub const MAX_LINE: usize = 1 << 20;

/// A signed head of a tenant's trail: keyhold's statement that the trail held `seq`
/// events, the last with chain hash `hash`. The signature covers the tenant, `seq` and
/// `hash` ([`crate::head_message`]); `at_ms` is covered through the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The tenant.
    pub tenant: String,
    /// The head's sequence number.
    pub seq: u64,
    /// The head event's chain hash, hex.
    pub hash: String,
    /// When the head event happened (ms since the Unix epoch).
    pub at_ms: u64,
    /// The audit key's Ed25519 signature over the head, base64.
    pub signature: String,
    /// The audit key's public key, base64: informative only, since a verifier must
    /// check against a key it trusts.
    pub public_key: String,
}

/// The last line of an export.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CheckpointLine {
    /// The trail's signed head.
    pub(crate) checkpoint: Checkpoint,
}

/// What an export that verified holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportVerification {
    /// The tenant whose trail it is.
    pub tenant: TenantId,
    /// How many events it holds.
    pub events: u64,
    /// The signed head's sequence number.
    pub head_seq: u64,
}

/// Why an export does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading the file failed.
    #[error("reading the audit export: {0}")]
    Io(#[from] std::io::Error),
    /// A line is longer than any event can be.
    #[error("line {line} is longer than {MAX_LINE} bytes")]
    LineTooLong {
        /// The line (from 1).
        line: u64,
    },
    /// A line is neither an event record nor the checkpoint.
    #[error("line {line} is not an audit record or checkpoint")]
    BadLine {
        /// The line (from 1).
        line: u64,
        /// Why it does not parse as a record.
        #[source]
        source: serde_json::Error,
    },
    /// A field of a line does not hold a valid value (a hash that is not 64 hex digits, a
    /// tenant id that does not parse, ...).
    #[error("line {line}: the {field} field is not valid")]
    BadField {
        /// The line (from 1).
        line: u64,
        /// The field.
        field: &'static str,
    },
    /// An event belongs to another tenant than the first one.
    #[error("line {line} is an event of tenant {found}, in an export of tenant {expected}")]
    OtherTenant {
        /// The line (from 1).
        line: u64,
        /// The export's tenant (that of the first line).
        expected: String,
        /// The line's.
        found: String,
    },
    /// The trail is broken.
    #[error("line {line}: {source}")]
    Chain {
        /// The line (from 1).
        line: u64,
        /// The break.
        #[source]
        source: ChainBreak,
    },
    /// The file ends without a checkpoint: it was cut short.
    #[error("the export ends without a checkpoint: it was cut short or its last line removed")]
    MissingCheckpoint,
    /// A line follows the checkpoint.
    #[error("line {line} follows the checkpoint, which must be the last line")]
    AfterCheckpoint {
        /// The line (from 1).
        line: u64,
    },
    /// The checkpoint names a public key other than the trusted one.
    #[error("the export was signed by another audit key (public key {found}), not the trusted one")]
    UntrustedKey {
        /// The public key the file names, base64.
        found: String,
    },
    /// The checkpoint's signature does not verify with the trusted public key.
    #[error("the checkpoint's signature does not verify with the trusted public key: the export was forged")]
    CheckpointSignature,
    /// The checkpoint is not the head of the events in the file.
    #[error("the checkpoint is event {checkpoint} but the export's last event is {last} (or differs from it)")]
    CheckpointMismatch {
        /// The checkpoint's sequence number.
        checkpoint: u64,
        /// The last event's in the file.
        last: u64,
    },
}

/// Verifies an export read from `reader` against the trusted audit `public_key`, streaming
/// it line by line.
pub fn verify_export(mut reader: impl BufRead, public_key: &[u8; 32]) -> Result<ExportVerification, ExportError> {
    let mut verifier = Verifier::new();
    let mut tenant: Option<TenantId> = None;
    let mut checkpoint: Option<(u64, Checkpoint)> = None;
    let mut buf = String::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = (&mut reader).take(MAX_LINE as u64 + 1).read_line(&mut buf)?;
        if n == 0 {
            break;
        }
        line += 1;
        if n > MAX_LINE {
            return Err(ExportError::LineTooLong { line });
        }
        if checkpoint.is_some() {
            return Err(ExportError::AfterCheckpoint { line });
        }
        let text = buf.trim_end_matches(['\n', '\r']);
        let rec = match serde_json::from_str::<Record>(text) {
            Ok(rec) => rec,
            Err(source) => match serde_json::from_str::<CheckpointLine>(text) {
                Ok(c) => {
                    checkpoint = Some((line, c.checkpoint));
                    continue;
                }
                Err(_) => return Err(ExportError::BadLine { line, source }),
            },
        };
        let row_tenant = TenantId::parse(&rec.tenant).map_err(|_| ExportError::BadField { line, field: "tenant" })?;
        match &tenant {
            None => tenant = Some(row_tenant.clone()),
            Some(t) if *t != row_tenant => {
                return Err(ExportError::OtherTenant { line, expected: t.to_string(), found: rec.tenant });
            }
            Some(_) => {}
        }
        let seq = rec.seq;
        let row = AuditRow {
            tenant: row_tenant,
            seq,
            at_ms: rec.at_ms,
            prev_hash: unhex(&rec.prev_hash).ok_or(ExportError::BadField { line, field: "prev_hash" })?,
            hash: unhex(&rec.hash).ok_or(ExportError::BadField { line, field: "hash" })?,
            body: rec.body,
        };
        let event = verifier.feed(&row).map_err(|source| ExportError::Chain { line, source })?;
        // The hash covers `body`; `event` is its readable copy and must say the same.
        if event != rec.event {
            return Err(ExportError::Chain { line, source: ChainBreak::Edited { seq } });
        }
    }
    let Some((cline, cp)) = checkpoint else { return Err(ExportError::MissingCheckpoint) };
    let bad = |field| ExportError::BadField { line: cline, field };
    let named = BASE64.decode(&cp.public_key).map_err(|_| bad("public_key"))?;
    if named.as_slice() != public_key.as_slice() {
        return Err(ExportError::UntrustedKey { found: cp.public_key });
    }
    let cp_tenant = TenantId::parse(&cp.tenant).map_err(|_| bad("tenant"))?;
    let hash = unhex(&cp.hash).ok_or_else(|| bad("hash"))?;
    let sig = BASE64.decode(&cp.signature).map_err(|_| bad("signature"))?;
    if !head_signature_valid(public_key, &cp_tenant, cp.seq, &hash, &sig) {
        return Err(ExportError::CheckpointSignature);
    }
    let last = verifier.last_seq();
    let same_tenant = tenant.as_ref().is_none_or(|t| *t == cp_tenant);
    if !same_tenant || cp.seq != last || hash != verifier.last_hash() || cp.at_ms != verifier.last_at_ms() {
        return Err(ExportError::CheckpointMismatch { checkpoint: cp.seq, last });
    }
    Ok(ExportVerification { tenant: cp_tenant, events: last, head_seq: cp.seq })
}

/// Why a public key given on the command line does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublicKeyError {
    /// Neither hex nor base64.
    #[error("the public key is neither hex nor base64")]
    Encoding,
    /// It decodes, but not to the 32 bytes of an Ed25519 public key.
    #[error("the public key decodes to {0} bytes; an Ed25519 public key is 32")]
    Length(usize),
}

/// Parses an Ed25519 public key given as hex (64 digits) or base64 (standard or URL-safe
/// alphabet, padded or not) of its 32 raw bytes.
pub fn parse_public_key(s: &str) -> Result<[u8; 32], PublicKeyError> {
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    let s = s.trim();
    if let Some(key) = unhex(s) {
        return Ok(key);
    }
    let bytes = STANDARD.decode(s).or_else(|_| URL_SAFE.decode(s)).map_err(|_| PublicKeyError::Encoding)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| PublicKeyError::Length(bytes.len()))
}

/// Decodes 64 hex digits (either case) into 32 bytes.
fn unhex(s: &str) -> Option<[u8; 32]> {
    let digits = s.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *byte = (nibble(*hi)? << 4) | nibble(*lo)?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    #[test]
    fn public_keys_parse_from_hex_and_every_base64_form() {
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(251));
        let std_padded = BASE64.encode(key);
        assert!(std_padded.contains('+') || std_padded.contains('/'), "{std_padded}: pick bytes that need them");
        let url = std_padded.replace('+', "-").replace('/', "_");
        let cases: &[(String, Result<[u8; 32], PublicKeyError>)] = &[
            (hex(&key), Ok(key)),
            (hex(&key).to_uppercase(), Ok(key)),
            (std_padded.clone(), Ok(key)),
            (std_padded.trim_end_matches('=').to_owned(), Ok(key)),
            (url.clone(), Ok(key)),
            (url.trim_end_matches('=').to_owned(), Ok(key)),
            (format!("  {std_padded}\n"), Ok(key)),
            (BASE64.encode([1u8; 31]), Err(PublicKeyError::Length(31))),
            (hex(&[1u8; 16]), Err(PublicKeyError::Length(24))),
            ("not a key!".to_owned(), Err(PublicKeyError::Encoding)),
            (String::new(), Err(PublicKeyError::Length(0))),
        ];
        for (input, expected) in cases {
            assert_eq!(&parse_public_key(input), expected, "{input:?}");
        }
    }

    #[test]
    fn unhex_takes_exactly_64_hex_digits() {
        assert_eq!(unhex(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(unhex(&"ab".repeat(31)), None);
        assert_eq!(unhex(&format!("{}zz", "ab".repeat(31))), None);
    }
}
