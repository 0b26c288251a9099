//! The AWS Encryption SDK message format, keyhold's own implementation on `aws-lc-rs`.
//!
//! keyhold's ciphertexts are AWS Encryption SDK messages so that a tenant can always
//! decrypt its own data with the stock SDKs or CLI and its own KMS key: no lock-in, and
//! nothing the registry loses can make data undecryptable, because a message carries its
//! encrypted data keys and encryption context with it.
//!
//! # What is written
//!
//! Format version 2, framed (frame length from [`EncryptConfig`], default 4096), with
//! suite `0x0478` (AES-256-GCM, HKDF-SHA512, key commitment) or `0x0578` (the same plus an
//! ECDSA P-384 signature). Layout, all integers big-endian:
//!
//! ```text
//! header   02 | suite u16 | message id [32] | u16 len, encryption context
//!          | u16 count, { u16 len, provider id | u16 len, provider info | u16 len, edk }*
//!          | 02 (framed) | frame length u32 | commitment key [32] | header tag [16]
//! frames   seq u32 | iv [12] | ciphertext [frame length] | tag [16]           (regular)
//!          ffffffff | seq u32 | iv [12] | len u32 | ciphertext [len] | tag [16]  (final)
//! footer   u16 len, DER ECDSA signature over header and body  (signing suites only)
//! ```
//!
//! The content key is HKDF-SHA512(salt = message id, ikm = data key) expanded with
//! `suite id || "DERIVEKEY"`; the commitment key is the same extract expanded with
//! `"COMMITKEY"`. The header tag is AES-GCM under the content key with a zero IV over the
//! header body; each frame's IV is its sequence number and its AAD is message id, a
//! content string, sequence number and content length.
//!
//! # What is read
//!
//! Versions 1 and 2, framed and non-framed, every AES-GCM suite (see
//! [`AlgorithmSuite::ALL`]). [`DecryptConfig`] bounds what a hostile message can cost:
//! encrypted data keys per message, frame length, non-framed length, and optionally refuses
//! non-committing suites. Every malformed input is a typed [`DecryptError`]; nothing here
//! panics on input.
//!
//! # Boundaries
//!
//! **No IO.** The crate reads no files, sockets, clock or environment. Randomness comes in
//! as `&dyn SecureRandom`. The [`stream`] adapters only move bytes between a caller's
//! `Read`/`Write` and the sans-IO [`Encryptor`] and [`BodyDecryptor`].

#![forbid(unsafe_code)]

mod config;
mod decrypt;
mod encrypt;
mod error;
mod header;
mod keys;
mod reader;
mod sign;
pub mod stream;
mod suite;

pub use config::{DecryptConfig, EncryptConfig};
pub use decrypt::{BodyDecryptor, Decrypted, decrypt, decrypt_into, read_header};
pub use encrypt::{EncryptionMaterials, Encryptor, MessageId, ciphertext_len, encrypt, encrypt_into};
pub use error::{DecryptError, EncryptError};
pub use header::{EdkRef, Header, HeaderParse, PUBLIC_KEY_CONTEXT_KEY};
pub use keyhold_core::{DataKey, EncryptedDataKey, EncryptionContext};
pub use sign::SigningKey;
pub use suite::AlgorithmSuite;
