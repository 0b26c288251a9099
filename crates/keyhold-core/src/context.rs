//! The encryption context: authenticated, non-secret key-value pairs bound to a message.
//!
//! keyhold reserves two keys: [`RESERVED_TENANT_KEY`] and [`RESERVED_PURPOSE_KEY`]. The
//! message format reserves the prefix `aws-crypto-` for itself.

use std::collections::BTreeMap;

/// The context key that carries the tenant id in every keyhold message.
pub const RESERVED_TENANT_KEY: &str = "tenant";
/// The context key that carries the purpose in every keyhold message.
pub const RESERVED_PURPOSE_KEY: &str = "purpose";

/// The largest encryption context keyhold sends to a key provider, serialized (AWS KMS's
/// own limit on EncryptionContext is 8,192 characters); larger ones are refused before any
/// provider call.
pub const MAX_CONTEXT_BYTES: usize = 8192;

/// Why a context was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// A caller tried to set a key that keyhold or the message format reserves.
    #[error("encryption context key {0:?} is reserved")]
    Reserved(String),
    /// An empty key.
    #[error("encryption context keys must not be empty")]
    EmptyKey,
    /// A key was given twice.
    #[error("encryption context key {0:?} is given more than once")]
    Duplicate(String),
    /// The context does not fit the message format's two-byte length fields.
    #[error("the encryption context serializes to {0} bytes; at most 65535 are allowed")]
    TooLarge(usize),
}

/// An encryption context, kept sorted by key bytes (the order the message format
/// serializes it in).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EncryptionContext {
    pairs: BTreeMap<String, String>,
}

impl EncryptionContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a context from caller-supplied pairs, refusing reserved and duplicate keys.
    pub fn from_caller_pairs<I>(pairs: I) -> Result<Self, ContextError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut ctx = Self::new();
        for (k, v) in pairs {
            if k.is_empty() {
                return Err(ContextError::EmptyKey);
            }
            if k == RESERVED_TENANT_KEY || k == RESERVED_PURPOSE_KEY || k.starts_with("aws-crypto-") {
                return Err(ContextError::Reserved(k));
            }
            if ctx.pairs.contains_key(&k) {
                return Err(ContextError::Duplicate(k));
            }
            ctx.pairs.insert(k, v);
        }
        Ok(ctx)
    }

    /// Sets a pair, replacing any earlier value. No reservation check: this is for code
    /// that owns the reserved keys.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.pairs.insert(key.into(), value.into());
    }

    /// The value for a key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key).map(String::as_str)
    }

    /// Removes a key, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.pairs.remove(key)
    }

    /// Pairs in serialization order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The length of [`EncryptionContext::to_bytes`], computed without serializing.
    pub fn serialized_len(&self) -> usize {
        if self.pairs.is_empty() { 0 } else { 2 + self.pairs.iter().map(|(k, v)| 4 + k.len() + v.len()).sum::<usize>() }
    }

    /// The serialization the message format prescribes: empty for an empty context,
    /// otherwise a two-byte pair count followed by each key and value with two-byte length
    /// prefixes, in ascending key-byte order. It is both the header's AAD section and the
    /// AAD a raw AES wrapping key authenticates.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ContextError> {
        if self.pairs.is_empty() {
            return Ok(Vec::new());
        }
        let size = 2 + self.pairs.iter().map(|(k, v)| 4 + k.len() + v.len()).sum::<usize>();
        let count = u16::try_from(self.pairs.len()).map_err(|_| ContextError::TooLarge(size))?;
        if size > usize::from(u16::MAX) {
            return Err(ContextError::TooLarge(size));
        }
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&count.to_be_bytes());
        for (k, v) in &self.pairs {
            for field in [k, v] {
                // Each field is shorter than `size`, which fits in a u16.
                let len = u16::try_from(field.len()).map_err(|_| ContextError::TooLarge(size))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(field.as_bytes());
            }
        }
        Ok(out)
    }

    /// The pairs as a map.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.pairs
    }
}

impl FromIterator<(String, String)> for EncryptionContext {
    fn from_iter<T: IntoIterator<Item = (String, String)>>(iter: T) -> Self {
        Self { pairs: iter.into_iter().collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_pairs_refuse_reserved_and_duplicates() {
        let ok = EncryptionContext::from_caller_pairs([("b".into(), "2".into()), ("a".into(), "1".into())]).unwrap();
        assert_eq!(ok.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "b"]);
        for bad in ["tenant", "purpose", "aws-crypto-public-key"] {
            assert_eq!(
                EncryptionContext::from_caller_pairs([(bad.to_owned(), "x".into())]),
                Err(ContextError::Reserved(bad.into()))
            );
        }
        assert_eq!(
            EncryptionContext::from_caller_pairs([("a".into(), "1".into()), ("a".into(), "2".into())]),
            Err(ContextError::Duplicate("a".into()))
        );
    }

    #[test]
    fn serialization_is_sorted_and_length_prefixed() {
        assert_eq!(EncryptionContext::new().to_bytes().unwrap(), Vec::<u8>::new());
        let mut ctx = EncryptionContext::new();
        ctx.insert("b", "xy");
        ctx.insert("a", "");
        assert_eq!(ctx.to_bytes().unwrap(), [0, 2, 0, 1, b'a', 0, 0, 0, 1, b'b', 0, 2, b'x', b'y']);
        let mut big = EncryptionContext::new();
        big.insert("k", "v".repeat(70_000));
        assert!(matches!(big.to_bytes(), Err(ContextError::TooLarge(_))));
    }
}
