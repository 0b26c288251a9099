//! Validated identifier newtypes: tenants, purposes, regions and key references.

use std::fmt;

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The string was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which identifier was being parsed.
        kind: &'static str,
    },
    /// The string was longer than the identifier allows.
    #[error("{kind} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Which identifier was being parsed.
        kind: &'static str,
        /// The length that was given.
        len: usize,
        /// The maximum length.
        max: usize,
    },
    /// The string held a character the identifier does not allow.
    #[error("{kind} contains {found:?} at byte {at}; allowed are {allowed}")]
    BadChar {
        /// Which identifier was being parsed.
        kind: &'static str,
        /// The offending character.
        found: char,
        /// Its byte offset.
        at: usize,
        /// A description of the allowed characters.
        allowed: &'static str,
    },
}

fn check(
    kind: &'static str,
    s: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(usize, char) -> bool,
) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong { kind, len: s.len(), max });
    }
    match s.char_indices().find(|&(i, c)| !ok(i, c)) {
        Some((at, found)) => Err(IdError::BadChar { kind, found, at, allowed }),
        None => Ok(()),
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A tenant of the platform: 1 to 128 characters of ASCII letters, digits and `-_.:`,
    /// starting with a letter or digit. It is written into every message's encryption
    /// context under the reserved key `tenant`.
    TenantId
);
string_id!(
    /// A scope of data within a tenant (one per platform service or data class), so that a
    /// compromise of one scope does not expose the others: 1 to 64 characters of lowercase
    /// ASCII letters, digits and `-_.`, starting with a letter or digit.
    Purpose
);
string_id!(
    /// A region name such as `eu-central-1`: 1 to 32 characters of lowercase ASCII letters,
    /// digits and `-`, starting with a letter.
    Region
);
string_id!(
    /// A data-residency realm (`eu`, `us`, `de`, ...): 1 to 32 characters of lowercase
    /// ASCII letters, digits and `-`, starting with a letter.
    RealmId
);
string_id!(
    /// A reference to a root key at a provider: a local key id (`lk-...`) or an AWS KMS key
    /// ARN. 1 to 2048 printable ASCII characters without whitespace.
    KeyRef
);

impl TenantId {
    /// Parses a tenant id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check("tenant id", s, 128, "ASCII letters, digits and -_.: (starting with a letter or digit)", |i, c| {
            c.is_ascii_alphanumeric() || (i > 0 && matches!(c, '-' | '_' | '.' | ':'))
        })?;
        Ok(Self(s.to_owned()))
    }
}

impl Purpose {
    /// Parses a purpose.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::check(s)?;
        Ok(Self(s.to_owned()))
    }

    /// Checks that `s` is a valid purpose, without allocating one (the request path
    /// checks a message's purpose this way).
    pub fn check(s: &str) -> Result<(), IdError> {
        check("purpose", s, 64, "lowercase ASCII letters, digits and -_. (starting with a letter or digit)", |i, c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || (i > 0 && matches!(c, '-' | '_' | '.'))
        })
    }
}

impl Region {
    /// Parses a region name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check("region", s, 32, "lowercase ASCII letters, digits and - (starting with a letter)", |i, c| {
            c.is_ascii_lowercase() || (i > 0 && (c.is_ascii_digit() || c == '-'))
        })?;
        Ok(Self(s.to_owned()))
    }
}

impl RealmId {
    /// Parses a realm id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check("realm", s, 32, "lowercase ASCII letters, digits and - (starting with a letter)", |i, c| {
            c.is_ascii_lowercase() || (i > 0 && (c.is_ascii_digit() || c == '-'))
        })?;
        Ok(Self(s.to_owned()))
    }
}

impl KeyRef {
    /// Parses a key reference. Leading or trailing whitespace is an error, not trimmed:
    /// a pasted ARN with a stray space is a common onboarding mistake and should be named.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        check("key reference", s, 2048, "printable ASCII without whitespace", |_, c| c.is_ascii_graphic())?;
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        assert!(TenantId::parse("acme-corp").is_ok());
        assert!(TenantId::parse("Org:42").is_ok());
        assert!(matches!(TenantId::parse(""), Err(IdError::Empty { .. })));
        assert!(matches!(TenantId::parse("-x"), Err(IdError::BadChar { at: 0, .. })));
        assert!(matches!(TenantId::parse("a b"), Err(IdError::BadChar { at: 1, found: ' ', .. })));
        assert!(matches!(TenantId::parse(&"a".repeat(129)), Err(IdError::TooLong { .. })));
    }

    #[test]
    fn purposes_regions_keys() {
        assert!(Purpose::parse("billing.v2").is_ok());
        assert!(Purpose::parse("Billing").is_err());
        assert!(Region::parse("eu-central-1").is_ok());
        assert!(Region::parse("1eu").is_err());
        assert!(KeyRef::parse("arn:aws:kms:eu-west-1:111122223333:key/abc").is_ok());
        let err = KeyRef::parse("lk-1 ").unwrap_err();
        assert!(err.to_string().contains("' '"), "{err}");
    }
}
