//! The message header: parsing (v1 and v2) with every structural check the format
//! prescribes, and serialization of the v2 header keyhold writes.

use std::sync::OnceLock;

use keyhold_core::{EncryptedDataKey, EncryptionContext};

use crate::config::DecryptConfig;
use crate::error::DecryptError;
use crate::reader::{Reader, Stop};
use crate::suite::AlgorithmSuite;

/// The context key under which signing suites store the verification key.
pub const PUBLIC_KEY_CONTEXT_KEY: &str = "aws-crypto-public-key";

pub(crate) const IV_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const CONTENT_NON_FRAMED: u8 = 0x01;
pub(crate) const CONTENT_FRAMED: u8 = 0x02;

/// A parsed, not yet authenticated, message header.
///
/// Everything in it is attacker-controlled until
/// [`BodyDecryptor::new`](crate::BodyDecryptor::new) has checked the commitment and the
/// header authentication tag with the data key. Callers may read the encryption context
/// and the encrypted data keys to find that data key, and may refuse the message early
/// (for example when the context names another tenant), but must not act on it otherwise.
pub struct Header {
    pub(crate) version: u8,
    pub(crate) suite: AlgorithmSuite,
    pub(crate) message_id: [u8; 32],
    pub(crate) message_id_len: usize,
    /// Where the encrypted-data-key entries lie within `body`, and how many there are.
    edk_range: std::ops::Range<usize>,
    edk_count: u16,
    /// The owned forms of the context and the encrypted data keys, built on first use:
    /// the hot path (a cache hit) reads the validated bytes in place and never needs them.
    context: OnceLock<EncryptionContext>,
    edks: OnceLock<Vec<EncryptedDataKey>>,
    pub(crate) framed: bool,
    pub(crate) frame_length: u32,
    pub(crate) commitment: Option<[u8; 32]>,
    pub(crate) auth_iv: [u8; IV_LEN],
    pub(crate) auth_tag: [u8; TAG_LEN],
    /// The serialized header body: the AAD of the header authentication tag.
    pub(crate) body: Vec<u8>,
    /// Where the serialized encryption context lies within `body`.
    pub(crate) context_range: std::ops::Range<usize>,
    /// Length of the whole header, body and authentication.
    pub(crate) len: usize,
}

/// An encrypted data key as it lies in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdkRef<'a> {
    /// Key provider id.
    pub provider_id: &'a str,
    /// Key provider information.
    pub provider_info: &'a [u8],
    /// The wrapped data key.
    pub ciphertext: &'a [u8],
}

impl EdkRef<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> EncryptedDataKey {
        EncryptedDataKey {
            provider_id: self.provider_id.to_owned(),
            provider_info: self.provider_info.to_vec(),
            ciphertext: self.ciphertext.to_vec(),
        }
    }
}

/// The outcome of offering bytes to the header parser.
pub enum HeaderParse {
    /// The header is complete; it occupies the first [`Header::len`] bytes of the input.
    Complete(Box<Header>),
    /// More bytes are needed; the input ends inside the named field.
    Incomplete(&'static str),
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Header")
            .field("version", &self.version)
            .field("suite", &self.suite)
            .field("context", self.context())
            .field("encrypted_data_keys", &self.edk_count)
            .field("frame_length", &self.frame_length)
            .finish_non_exhaustive()
    }
}

impl Header {
    /// Parses a header from the start of `input`.
    pub fn parse(input: &[u8], config: &DecryptConfig) -> Result<HeaderParse, DecryptError> {
        match parse(input, config) {
            Ok(h) => Ok(HeaderParse::Complete(Box::new(h))),
            Err(Stop::Incomplete(field)) => Ok(HeaderParse::Incomplete(field)),
            Err(Stop::Bad(e)) => Err(e),
        }
    }

    /// Message format version (1 or 2).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The algorithm suite.
    pub fn suite(&self) -> AlgorithmSuite {
        self.suite
    }

    /// The message id (16 bytes in v1, 32 in v2).
    pub fn message_id(&self) -> &[u8] {
        self.message_id.get(..self.message_id_len).unwrap_or_default()
    }

    /// The encryption context as stored, including `aws-crypto-public-key` for signing
    /// suites.
    pub fn context(&self) -> &EncryptionContext {
        self.context.get_or_init(|| {
            let mut ctx = EncryptionContext::new();
            for (k, v) in context_pairs(self.context_bytes()) {
                ctx.insert(k, v);
            }
            ctx
        })
    }

    /// One value of the encryption context, read in place without building the map.
    pub fn context_value(&self, key: &str) -> Option<&str> {
        context_pairs(self.context_bytes()).find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The encryption context as serialized in the header (the bytes a raw AES wrapping
    /// key authenticates, and what a cache may key on without re-serializing).
    pub fn context_bytes(&self) -> &[u8] {
        self.body.get(self.context_range.clone()).unwrap_or_default()
    }

    /// The encrypted data keys, in header order.
    pub fn encrypted_data_keys(&self) -> &[EncryptedDataKey] {
        self.edks.get_or_init(|| {
            self.edk_refs()
                .map(|e| EncryptedDataKey {
                    provider_id: e.provider_id.to_owned(),
                    provider_info: e.provider_info.to_vec(),
                    ciphertext: e.ciphertext.to_vec(),
                })
                .collect()
        })
    }

    /// The encrypted data keys, in header order, read in place.
    pub fn edk_refs(&self) -> impl Iterator<Item = EdkRef<'_>> {
        let mut r = Reader::new(self.body.get(self.edk_range.clone()).unwrap_or_default());
        (0..self.edk_count).map_while(move |_| {
            // Validated when the header was parsed, so these reads cannot fail.
            let provider_id = std::str::from_utf8(r.u16_prefixed("").ok()?).ok()?;
            let provider_info = r.u16_prefixed("").ok()?;
            let ciphertext = r.u16_prefixed("").ok()?;
            Some(EdkRef { provider_id, provider_info, ciphertext })
        })
    }

    /// Whether the body is framed.
    pub fn is_framed(&self) -> bool {
        self.framed
    }

    /// The frame length (0 for non-framed bodies).
    pub fn frame_length(&self) -> u32 {
        self.frame_length
    }

    /// Length of the header in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a parsed header has at least its fixed fields.
    pub fn is_empty(&self) -> bool {
        false
    }
}

fn parse(input: &[u8], config: &DecryptConfig) -> Result<Header, Stop> {
    let mut r = Reader::new(input);
    let version = r.u8("version field")?;
    if version != 1 && version != 2 {
        return Err(DecryptError::UnsupportedVersion(version).into());
    }
    if version == 1 {
        let ty = r.u8("type field")?;
        if ty != 0x80 {
            return Err(DecryptError::UnsupportedType(ty).into());
        }
    }
    let suite_id = r.u16("algorithm suite id")?;
    let suite = AlgorithmSuite::from_id(suite_id).ok_or(DecryptError::UnknownSuite(suite_id))?;
    if suite.message_version() != version {
        return Err(DecryptError::SuiteVersionMismatch { version, suite: suite_id }.into());
    }
    if config.require_commitment && !suite.is_committing() {
        return Err(DecryptError::CommitmentRequired(suite_id).into());
    }
    let id = r.take(if version == 1 { 16 } else { 32 }, "message id")?;
    let mut message_id = [0u8; 32];
    message_id.get_mut(..id.len()).ok_or(Stop::Incomplete("message id"))?.copy_from_slice(id);
    let aad = r.u16_prefixed("encryption context")?;
    let context_range = r.position() - aad.len()..r.position();
    validate_context(aad)?;
    let has_public_key = context_pairs(aad).any(|(k, _)| k == PUBLIC_KEY_CONTEXT_KEY);
    match (suite.is_signing(), has_public_key) {
        (true, false) => return Err(DecryptError::MissingPublicKey.into()),
        (false, true) => return Err(DecryptError::UnexpectedPublicKey.into()),
        _ => {}
    }

    let count = r.u16("encrypted data key count")?;
    if count == 0 {
        return Err(DecryptError::NoEncryptedDataKeys.into());
    }
    if count > config.max_encrypted_data_keys {
        return Err(DecryptError::TooManyEncryptedDataKeys { count, max: config.max_encrypted_data_keys }.into());
    }
    let edk_start = r.position();
    for _ in 0..count {
        let provider_id = r.u16_prefixed("encrypted data key")?;
        std::str::from_utf8(provider_id).map_err(|_| DecryptError::MalformedProviderId)?;
        r.u16_prefixed("encrypted data key")?;
        r.u16_prefixed("encrypted data key")?;
    }
    let edk_range = edk_start..r.position();

    let content_type = r.u8("content type")?;
    let framed = match content_type {
        CONTENT_NON_FRAMED => false,
        CONTENT_FRAMED => true,
        other => return Err(DecryptError::UnsupportedContentType(other).into()),
    };
    if version == 1 {
        if r.take(4, "reserved field")? != [0, 0, 0, 0] {
            return Err(DecryptError::NonZeroReserved.into());
        }
        let iv_len = r.u8("IV length")?;
        if usize::from(iv_len) != IV_LEN {
            return Err(DecryptError::BadIvLength(iv_len).into());
        }
    }
    let frame_length = r.u32("frame length")?;
    if framed == (frame_length == 0) {
        return Err(DecryptError::BadFrameLength(frame_length).into());
    }
    if frame_length > config.max_frame_length {
        return Err(DecryptError::FrameTooLarge { found: frame_length, max: config.max_frame_length }.into());
    }
    let commitment = if suite.is_committing() { Some(r.array::<32>("commitment key")?) } else { None };
    let body_len = r.position();
    let auth_iv = if version == 1 { r.array::<IV_LEN>("header authentication")? } else { [0; IV_LEN] };
    let auth_tag = r.array::<TAG_LEN>("header authentication")?;
    let len = r.position();
    let body = input.get(..body_len).map(<[u8]>::to_vec).ok_or(Stop::Incomplete("header"))?;
    Ok(Header {
        version,
        suite,
        message_id,
        message_id_len: id.len(),
        edk_range,
        edk_count: count,
        context: OnceLock::new(),
        edks: OnceLock::new(),
        framed,
        frame_length,
        commitment,
        auth_iv,
        auth_tag,
        body,
        context_range,
        len,
    })
}

/// Checks the key-value pairs of the header's AAD section. The section's length was
/// declared by the header, so running out of bytes here is malformation, not truncation.
fn validate_context(aad: &[u8]) -> Result<(), DecryptError> {
    if aad.is_empty() {
        return Ok(());
    }
    let overrun = |_| DecryptError::MalformedContext("pairs overrun the declared length");
    let mut r = Reader::new(aad);
    let count = r.u16("pair count").map_err(overrun)?;
    if count == 0 {
        return Err(DecryptError::MalformedContext("non-empty section declares zero pairs"));
    }
    // Duplicate keys: a linear scan for the usual handful of pairs (no allocation), a set
    // beyond, so that a hostile header with thousands of pairs stays linear.
    let mut few: [&[u8]; 16] = [&[]; 16];
    let mut many = std::collections::HashSet::new();
    for i in 0..usize::from(count) {
        let key = r.u16_prefixed("key").map_err(overrun)?;
        let value = r.u16_prefixed("value").map_err(overrun)?;
        std::str::from_utf8(key).map_err(|_| DecryptError::MalformedContext("a key is not UTF-8"))?;
        std::str::from_utf8(value).map_err(|_| DecryptError::MalformedContext("a value is not UTF-8"))?;
        let duplicate = if i < few.len() {
            let seen = few.get(..i).unwrap_or_default().contains(&key);
            if let Some(slot) = few.get_mut(i) {
                *slot = key;
            }
            seen
        } else {
            if many.is_empty() {
                many.extend(few.iter().copied());
            }
            !many.insert(key)
        };
        if duplicate {
            return Err(DecryptError::MalformedContext("a key appears twice"));
        }
    }
    if r.position() != aad.len() {
        return Err(DecryptError::MalformedContext("bytes left over after the declared pairs"));
    }
    Ok(())
}

/// The pairs of an AAD section that [`validate_context`] accepted.
fn context_pairs(aad: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    let mut r = Reader::new(aad);
    let count = if aad.is_empty() { 0 } else { r.u16("").unwrap_or(0) };
    (0..count).map_while(move |_| {
        let key = std::str::from_utf8(r.u16_prefixed("").ok()?).ok()?;
        let value = std::str::from_utf8(r.u16_prefixed("").ok()?).ok()?;
        Some((key, value))
    })
}
