//! The data-key ledger's side of the service: an id for every data key, read from its
//! encrypted form, a hook called when a data key is generated (before its first use), and
//! lock-free use counts the ledger collects.
//!
//! The id is the first 16 bytes of SHA-256 over the message's encrypted data keys as
//! written (their count, then each one's provider id, provider info and wrapped key,
//! length-prefixed). Every message under one data key carries the same encrypted data
//! keys, so any message names its data key's ledger entry without a key being used; the
//! id says nothing about the key itself (it hashes wrapped keys only).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest;
use keyhold_core::{EncryptedDataKey, KeyRef, Purpose, TenantId};
use keyhold_envelope::EdkRef;

/// A data key's ledger id (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DataKeyId(pub [u8; 16]);

impl DataKeyId {
    /// The id of the data key a message's encrypted data keys wrap.
    pub fn of_message<'a>(edks: impl ExactSizeIterator<Item = EdkRef<'a>>) -> Self {
        let mut d = digest::Context::new(&digest::SHA256);
        d.update(&(edks.len() as u64).to_be_bytes());
        for e in edks {
            for field in [e.provider_id.as_bytes(), e.provider_info, e.ciphertext] {
                d.update(&(field.len() as u64).to_be_bytes());
                d.update(field);
            }
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(d.finish().as_ref().get(..16).unwrap_or(&[0; 16]));
        Self(id)
    }

    /// The id of a data key generated with these encrypted data keys.
    pub fn of_generated(edks: &[EncryptedDataKey]) -> Self {
        Self::of_message(edks.iter().map(|e| EdkRef {
            provider_id: &e.provider_id,
            provider_info: &e.provider_info,
            ciphertext: &e.ciphertext,
        }))
    }

    /// Lowercase hex, 32 characters.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for DataKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for DataKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKeyId({})", self.hex())
    }
}

/// What the ledger is told of a data key when it is generated.
#[derive(Debug)]
pub struct NewDataKey<'a> {
    /// Its tenant.
    pub tenant: &'a TenantId,
    /// Its purpose.
    pub purpose: &'a Purpose,
    /// Its id.
    pub id: DataKeyId,
    /// The root keys that wrap it (home region first).
    pub keys: &'a [KeyRef],
}

/// One data key's uses since the ledger last took them: two atomic additions per
/// message, no lock, no allocation.
#[derive(Debug, Default)]
pub struct DataKeyUse {
    messages: AtomicU64,
    bytes: AtomicU64,
}

impl DataKeyUse {
    /// Counts one message of `bytes` plaintext bytes.
    pub fn record(&self, bytes: u64) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Takes the counts (messages, bytes), leaving zero.
    pub fn take(&self) -> (u64, u64) {
        (self.messages.swap(0, Ordering::Relaxed), self.bytes.swap(0, Ordering::Relaxed))
    }

    /// Whether no use is counted.
    pub fn is_idle(&self) -> bool {
        self.messages.load(Ordering::Relaxed) == 0
    }

    /// Puts back counts whose write failed.
    pub fn restore(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Where generated data keys are recorded.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync {
    /// Records a new data key before its first use (an error refuses the encryption that
    /// needed it: a data key the ledger does not know is never used) and returns where
    /// its uses are counted.
    async fn generated(&self, key: NewDataKey<'_>) -> Result<Arc<DataKeyUse>, String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edk(p: &str, info: &[u8], ct: &[u8]) -> EncryptedDataKey {
        EncryptedDataKey { provider_id: p.into(), provider_info: info.to_vec(), ciphertext: ct.to_vec() }
    }

    #[test]
    fn ids_depend_on_every_encrypted_data_key_and_their_boundaries() {
        let a = [edk("aws-kms", b"arn:1", b"ct1"), edk("aws-kms", b"arn:2", b"ct2")];
        let id = DataKeyId::of_generated(&a);
        assert_eq!(id, DataKeyId::of_generated(&a.clone()));
        assert_eq!(id.hex().len(), 32);
        assert_ne!(id, DataKeyId::of_generated(&a[..1]));
        assert_ne!(id, DataKeyId::of_generated(&[edk("aws-kms", b"arn:1", b"ct1"), edk("aws-kms", b"arn:2", b"ct3")]));
        // Moving a byte from one field to the next changes the id.
        assert_ne!(
            DataKeyId::of_generated(&[edk("aws-kms", b"arn:1c", b"t1")]),
            DataKeyId::of_generated(&[edk("aws-kms", b"arn:1", b"ct1")])
        );
    }

    #[test]
    fn uses_are_taken_once_and_restored() {
        let u = DataKeyUse::default();
        u.record(10);
        u.record(5);
        assert_eq!(u.take(), (2, 15));
        assert_eq!(u.take(), (0, 0));
        u.restore(2, 15);
        u.record(1);
        assert_eq!(u.take(), (3, 16));
    }
}
