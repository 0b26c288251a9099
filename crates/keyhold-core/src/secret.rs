//! Plaintext key material: zeroized on drop, never printed, never cloned by accident.

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A plaintext data key (16, 24 or 32 bytes, as the algorithm suite requires).
///
/// It deliberately implements neither `Debug`, `Clone`, `PartialEq` nor `Serialize`: a
/// copy must be asked for with [`DataKey::duplicate`], comparison is [`DataKey::ct_eq`],
/// and the bytes are wiped when the value is dropped.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DataKey {
    bytes: Vec<u8>,
}

impl DataKey {
    /// Takes ownership of key bytes.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }

    /// Copies key bytes from a slice.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self { bytes: bytes.to_vec() }
    }

    /// The key bytes. Callers must not copy them into storage that outlives this value.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// The key length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the key is empty (never true for a key a provider returned).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// An explicit copy; the copy is zeroized on its own drop.
    pub fn duplicate(&self) -> Self {
        Self::from_slice(&self.bytes)
    }

    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &DataKey) -> bool {
        self.bytes.ct_eq(&other.bytes).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_duplicate() {
        let a = DataKey::from_slice(&[7; 32]);
        let b = a.duplicate();
        assert!(a.ct_eq(&b));
        assert!(!a.ct_eq(&DataKey::from_slice(&[8; 32])));
        assert!(!a.ct_eq(&DataKey::from_slice(&[7; 16])));
        assert_eq!(a.len(), 32);
    }
}
