//! Encrypted data keys: a data key wrapped by one root key, as the message header stores it.

/// One wrapped copy of a message's data key.
///
/// `provider_id` and `provider_info` say which key can unwrap it: for AWS KMS keys they
/// are `aws-kms` and the key ARN, for keyhold's local provider they are its namespace and
/// the raw-AES key-provider information (key name, tag length, IV length, IV).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncryptedDataKey {
    /// Key provider id (UTF-8).
    pub provider_id: String,
    /// Key provider information (opaque bytes).
    pub provider_info: Vec<u8>,
    /// The wrapped data key.
    pub ciphertext: Vec<u8>,
}
