//! AWS KMS key ARNs, parsed with an error that names the exact fault: tenants paste ARNs
//! into a form, and "invalid ARN" is not an answer they can act on.

use std::fmt;

use crate::ids::Region;

/// What a key ARN names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyResource {
    /// A key by id: a UUID, or `mrk-` and 32 hex digits for a multi-Region key.
    Key(String),
    /// An alias (without the `alias/` prefix).
    Alias(String),
}

/// A parsed AWS KMS key or alias ARN: `arn:<partition>:kms:<region>:<account>:key/<id>`
/// or `...:alias/<name>`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyArn {
    text: String,
    partition: String,
    region: Region,
    account: String,
    resource: KeyResource,
}

/// Why a string is not a usable KMS key ARN. Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArnError {
    /// Empty input.
    #[error("the key ARN is empty; paste the ARN shown on the key's page in the AWS KMS console")]
    Empty,
    /// Whitespace anywhere (usually a stray space or newline from copying).
    #[error("the key ARN contains whitespace at character {at}; remove spaces and line breaks")]
    Whitespace {
        /// Character offset of the first whitespace.
        at: usize,
    },
    /// Not an ARN at all.
    #[error("{found:?} is not an ARN; a key ARN looks like arn:aws:kms:eu-west-1:111122223333:key/<key id>")]
    NotAnArn {
        /// The first characters of the input.
        found: String,
    },
    /// The partition is not the platform's.
    #[error("the ARN is in partition {found:?}; keys must be in partition {expected:?}")]
    WrongPartition {
        /// Found.
        found: String,
        /// Expected.
        expected: String,
    },
    /// Not a KMS ARN.
    #[error("the ARN is for service {found:?}, not kms; use the ARN of a KMS key, not of a role or other resource")]
    WrongService {
        /// Found.
        found: String,
    },
    /// Malformed region.
    #[error("the ARN's region {found:?} is not a region name such as eu-west-1")]
    BadRegion {
        /// Found.
        found: String,
    },
    /// Account id not 12 digits.
    #[error("the ARN's account {found:?} is not a 12-digit AWS account id")]
    BadAccount {
        /// Found.
        found: String,
    },
    /// Resource is neither `key/` nor `alias/`.
    #[error("the ARN names {found:?}; it must name key/<key id> or alias/<alias name>")]
    WrongResourceType {
        /// Found resource.
        found: String,
    },
    /// Malformed key id.
    #[error("{found:?} is not a KMS key id (a UUID, or mrk- followed by 32 hex digits for a multi-Region key)")]
    BadKeyId {
        /// Found.
        found: String,
    },
    /// Malformed or AWS-reserved alias.
    #[error("alias {found:?} is not usable: {reason}")]
    BadAlias {
        /// Found.
        found: String,
        /// Why.
        reason: &'static str,
    },
}

impl KeyArn {
    /// Parses an ARN in the `aws` partition.
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        Self::parse_in(s, "aws")
    }

    /// Parses an ARN that must be in `partition` (`aws`, `aws-cn`, `aws-us-gov`).
    pub fn parse_in(s: &str, partition: &str) -> Result<Self, ArnError> {
        if s.is_empty() {
            return Err(ArnError::Empty);
        }
        if let Some(at) = s.chars().position(char::is_whitespace) {
            return Err(ArnError::Whitespace { at });
        }
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        let [arn, part, service, region, account, resource] = parts[..] else {
            return Err(ArnError::NotAnArn { found: s.chars().take(40).collect() });
        };
        if arn != "arn" {
            return Err(ArnError::NotAnArn { found: s.chars().take(40).collect() });
        }
        if part != partition {
            return Err(ArnError::WrongPartition { found: part.to_owned(), expected: partition.to_owned() });
        }
        if service != "kms" {
            return Err(ArnError::WrongService { found: service.to_owned() });
        }
        let region = Region::parse(region)
            .ok()
            .filter(|_| region.contains('-'))
            .ok_or_else(|| ArnError::BadRegion { found: region.to_owned() })?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ArnError::BadAccount { found: account.to_owned() });
        }
        let resource = if let Some(id) = resource.strip_prefix("key/") {
            if !is_key_id(id) {
                return Err(ArnError::BadKeyId { found: id.to_owned() });
            }
            KeyResource::Key(id.to_owned())
        } else if let Some(name) = resource.strip_prefix("alias/") {
            check_alias(name)?;
            KeyResource::Alias(name.to_owned())
        } else {
            return Err(ArnError::WrongResourceType { found: resource.to_owned() });
        };
        Ok(Self { text: s.to_owned(), partition: part.to_owned(), region, account: account.to_owned(), resource })
    }

    /// The ARN as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The partition.
    pub fn partition(&self) -> &str {
        &self.partition
    }

    /// The region the key lives in.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The account that owns the key.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The key or alias named.
    pub fn resource(&self) -> &KeyResource {
        &self.resource
    }

    /// Whether this is a multi-Region key (`mrk-` id).
    pub fn is_multi_region(&self) -> bool {
        matches!(&self.resource, KeyResource::Key(id) if id.starts_with("mrk-"))
    }
}

impl fmt::Display for KeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.text)
    }
}

impl fmt::Debug for KeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyArn({:?})", self.text)
    }
}

fn is_key_id(id: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(rest) = id.strip_prefix("mrk-") {
        return hex(rest, 32);
    }
    let groups: Vec<&str> = id.split('-').collect();
    matches!(groups[..], [a, b, c, d, e] if hex(a, 8) && hex(b, 4) && hex(c, 4) && hex(d, 4) && hex(e, 12))
}

fn check_alias(name: &str) -> Result<(), ArnError> {
    let bad = |reason| Err(ArnError::BadAlias { found: name.to_owned(), reason });
    if name.is_empty() || name.len() > 250 {
        return bad("alias names are 1 to 250 characters");
    }
    if name.starts_with("aws/") {
        return bad(
            "aliases beginning with aws/ name AWS managed keys, which cannot be shared; create a customer managed key",
        );
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-')) {
        return bad("alias names use letters, digits and / _ - only");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn valid_forms() {
        let k = KeyArn::parse(KEY).unwrap();
        assert_eq!(k.region().as_str(), "eu-west-1");
        assert_eq!(k.account(), "111122223333");
        assert!(!k.is_multi_region());
        let m = KeyArn::parse("arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab").unwrap();
        assert!(m.is_multi_region());
        let a = KeyArn::parse("arn:aws:kms:us-east-1:111122223333:alias/acme/billing-key").unwrap();
        assert_eq!(a.resource(), &KeyResource::Alias("acme/billing-key".into()));
        assert!(KeyArn::parse_in("arn:aws-cn:kms:cn-north-1:111122223333:alias/x", "aws-cn").is_ok());
    }

    type Check = fn(&ArnError) -> bool;

    #[test]
    fn every_fault_is_named() {
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, ArnError::Empty)),
            (" arn:aws:kms:eu-west-1:111122223333:alias/x", |e| matches!(e, ArnError::Whitespace { at: 0 })),
            ("arn:aws:kms:eu-west-1:111122223333:alias/x\n", |e| matches!(e, ArnError::Whitespace { at: 42 })),
            ("1234abcd-12ab-34cd-56ef-1234567890ab", |e| matches!(e, ArnError::NotAnArn { .. })),
            ("urn:aws:kms:eu-west-1:111122223333:alias/x", |e| matches!(e, ArnError::NotAnArn { .. })),
            ("arn:aws-cn:kms:cn-north-1:111122223333:alias/x", |e| matches!(e, ArnError::WrongPartition { .. })),
            ("arn:aws:iam::111122223333:role/x", |e| matches!(e, ArnError::WrongService { .. })),
            ("arn:aws:kms:EU-WEST-1:111122223333:alias/x", |e| matches!(e, ArnError::BadRegion { .. })),
            ("arn:aws:kms::111122223333:alias/x", |e| matches!(e, ArnError::BadRegion { .. })),
            ("arn:aws:kms:eu-west-1:1111:alias/x", |e| matches!(e, ArnError::BadAccount { .. })),
            ("arn:aws:kms:eu-west-1:111122223333:secret/x", |e| matches!(e, ArnError::WrongResourceType { .. })),
            ("arn:aws:kms:eu-west-1:111122223333:key/not-a-uuid", |e| matches!(e, ArnError::BadKeyId { .. })),
            ("arn:aws:kms:eu-west-1:111122223333:key/mrk-123", |e| matches!(e, ArnError::BadKeyId { .. })),
            ("arn:aws:kms:eu-west-1:111122223333:alias/aws/s3", |e| matches!(e, ArnError::BadAlias { .. })),
            ("arn:aws:kms:eu-west-1:111122223333:alias/bad!name", |e| matches!(e, ArnError::BadAlias { .. })),
        ];
        for (input, ok) in cases {
            let err = KeyArn::parse(input).unwrap_err();
            assert!(ok(&err), "{input:?} gave {err:?}");
            assert!(!err.to_string().is_empty());
        }
    }
}
