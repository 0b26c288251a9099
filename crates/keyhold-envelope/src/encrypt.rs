//! Writing messages: encryption materials, the streaming [`Encryptor`] and one-shot
//! [`encrypt`]. keyhold writes format v2, framed, with a committing suite.

use std::borrow::Borrow;

use aws_lc_rs::aead::Aad;
use aws_lc_rs::digest;
use aws_lc_rs::rand::SecureRandom;
use keyhold_core::{DataKey, EncryptedDataKey, EncryptionContext};

use crate::config::EncryptConfig;
use crate::error::EncryptError;
use crate::header::{CONTENT_FRAMED, IV_LEN, PUBLIC_KEY_CONTEXT_KEY, TAG_LEN};
use crate::keys::{self, BodyKind};
use crate::sign::SigningKey;
use crate::suite::AlgorithmSuite;

/// Everything needed to write messages under one data key: the suite, the plaintext data
/// key, its encrypted copies, the encryption context (with the public key for signing
/// suites) and the signing key. Built once per data key and reused across messages; the
/// header bytes that do not change per message are serialized here, once.
pub struct EncryptionMaterials {
    suite: AlgorithmSuite,
    data_key: DataKey,
    context: EncryptionContext,
    edks: Vec<EncryptedDataKey>,
    signing_key: Option<SigningKey>,
    /// The header's AAD and encrypted-data-key sections.
    header_middle: Vec<u8>,
}

impl EncryptionMaterials {
    /// Checks and assembles materials. `context` must carry `aws-crypto-public-key` equal
    /// to the signing key's public key exactly when the suite signs.
    pub fn new(
        suite: AlgorithmSuite,
        data_key: DataKey,
        context: EncryptionContext,
        edks: Vec<EncryptedDataKey>,
        signing_key: Option<SigningKey>,
    ) -> Result<Self, EncryptError> {
        if !suite.is_committing() {
            return Err(EncryptError::SuiteNotForEncryption(suite.id()));
        }
        if data_key.len() != suite.data_key_len() {
            return Err(EncryptError::DataKeyLength { expected: suite.data_key_len(), found: data_key.len() });
        }
        let pk_in_context = context.get(PUBLIC_KEY_CONTEXT_KEY);
        match (&signing_key, pk_in_context) {
            (None, None) if !suite.is_signing() => {}
            (Some(k), Some(pk)) if suite.signing() == Some(k.signing()) && k.public_key() == pk => {}
            _ => return Err(EncryptError::SigningKeyMismatch),
        }
        if edks.is_empty() {
            return Err(EncryptError::NoEncryptedDataKeys);
        }
        let edk_count = u16::try_from(edks.len()).map_err(|_| EncryptError::TooManyEncryptedDataKeys(edks.len()))?;

        let aad = context.to_bytes().map_err(|_| EncryptError::ContextTooLarge(context_size(&context)))?;
        let mut header_middle = Vec::with_capacity(aad.len() + 64);
        push_u16_prefixed(&mut header_middle, &aad, "encryption context")?;
        header_middle.extend_from_slice(&edk_count.to_be_bytes());
        for edk in &edks {
            push_u16_prefixed(&mut header_middle, edk.provider_id.as_bytes(), "key provider id")?;
            push_u16_prefixed(&mut header_middle, &edk.provider_info, "key provider info")?;
            push_u16_prefixed(&mut header_middle, &edk.ciphertext, "encrypted data key")?;
        }
        Ok(Self { suite, data_key, context, edks, signing_key, header_middle })
    }

    /// The algorithm suite.
    pub fn suite(&self) -> AlgorithmSuite {
        self.suite
    }

    /// The encryption context written into every message.
    pub fn context(&self) -> &EncryptionContext {
        &self.context
    }

    /// The encrypted copies of the data key.
    pub fn encrypted_data_keys(&self) -> &[EncryptedDataKey] {
        &self.edks
    }
}

fn context_size(ctx: &EncryptionContext) -> usize {
    2 + ctx.iter().map(|(k, v)| 4 + k.len() + v.len()).sum::<usize>()
}

fn push_u16_prefixed(out: &mut Vec<u8>, bytes: &[u8], field: &'static str) -> Result<(), EncryptError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncryptError::FieldTooLong { field, len: bytes.len() })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// A message id: 32 bytes that must never repeat under one data key (they salt the
/// derivation of each message's content key). Draw them from a CSPRNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageId(pub [u8; 32]);

impl MessageId {
    /// A fresh random id.
    pub fn random(rng: &dyn SecureRandom) -> Result<Self, EncryptError> {
        let mut id = [0u8; 32];
        rng.fill(&mut id).map_err(|_| EncryptError::Crypto("random message id"))?;
        Ok(Self(id))
    }
}

/// The exact length of the message [`encrypt`] writes for `plaintext_len` bytes, not
/// counting the signature footer of signing suites (whose DER length varies by a byte or
/// two).
pub fn ciphertext_len(materials: &EncryptionMaterials, config: &EncryptConfig, plaintext_len: usize) -> usize {
    let frame = usize::try_from(config.frame_length).unwrap_or(usize::MAX).max(1);
    let regular = plaintext_len.saturating_sub(1) / frame;
    let header = 1 + 2 + 32 + materials.header_middle.len() + 1 + 4 + 32 + TAG_LEN;
    header + regular * (4 + IV_LEN + TAG_LEN) + (8 + IV_LEN + 4 + TAG_LEN) + plaintext_len
}

/// Encrypts `plaintext` into one message.
pub fn encrypt(
    materials: &EncryptionMaterials,
    config: &EncryptConfig,
    rng: &dyn SecureRandom,
    plaintext: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    let mut out = Vec::new();
    encrypt_into(materials, config, MessageId::random(rng)?, plaintext, &mut out)?;
    Ok(out)
}

/// Encrypts `plaintext` into one message appended to `out`, with a message id the caller
/// drew (so that ids can be fetched from the CSPRNG in bulk, and `out` reused).
pub fn encrypt_into(
    materials: &EncryptionMaterials,
    config: &EncryptConfig,
    message_id: MessageId,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncryptError> {
    let footer = if materials.suite.is_signing() { 2 + 104 } else { 0 };
    out.reserve(ciphertext_len(materials, config, plaintext.len()) + footer);
    let mut enc = Encryptor::with_message_id(materials, config, message_id, out)?;
    enc.seal_all(plaintext, out)
}

/// A message being written, frame by frame. Holds back at most one frame of plaintext,
/// so memory stays bounded however long the input is.
pub struct Encryptor<M: Borrow<EncryptionMaterials>> {
    materials: M,
    key: aws_lc_rs::aead::LessSafeKey,
    message_id: [u8; 32],
    frame_length: usize,
    next_seq: u32,
    pending: Vec<u8>,
    hasher: Option<digest::Context>,
    finished: bool,
}

impl<M: Borrow<EncryptionMaterials>> Encryptor<M> {
    /// Starts a message with a random message id and appends its header to `out`.
    pub fn new(
        materials: M,
        config: &EncryptConfig,
        rng: &dyn SecureRandom,
        out: &mut Vec<u8>,
    ) -> Result<Self, EncryptError> {
        Self::with_message_id(materials, config, MessageId::random(rng)?, out)
    }

    /// Starts a message with the given message id and appends its header to `out`.
    pub fn with_message_id(
        materials: M,
        config: &EncryptConfig,
        message_id: MessageId,
        out: &mut Vec<u8>,
    ) -> Result<Self, EncryptError> {
        if config.frame_length == 0 {
            return Err(EncryptError::InvalidFrameLength);
        }
        let m = materials.borrow();
        let MessageId(message_id) = message_id;
        let derived =
            keys::derive(m.suite, &m.data_key, &message_id).map_err(|_| EncryptError::Crypto("key derivation"))?;
        let commitment = derived.commitment.ok_or(EncryptError::SuiteNotForEncryption(m.suite.id()))?;

        let start = out.len();
        out.push(2);
        out.extend_from_slice(&m.suite.id().to_be_bytes());
        out.extend_from_slice(&message_id);
        out.extend_from_slice(&m.header_middle);
        out.push(CONTENT_FRAMED);
        out.extend_from_slice(&config.frame_length.to_be_bytes());
        out.extend_from_slice(&commitment);
        let tag = {
            let header_body = out.get(start..).ok_or(EncryptError::Crypto("header offset"))?;
            derived
                .key
                .seal_in_place_separate_tag(keys::nonce([0; IV_LEN]), Aad::from(header_body), &mut [])
                .map_err(|_| EncryptError::Crypto("header authentication"))?
        };
        out.extend_from_slice(tag.as_ref());

        let hasher = match m.suite.signing() {
            Some(s) => {
                let mut h = digest::Context::new(s.digest());
                h.update(out.get(start..).unwrap_or_default());
                Some(h)
            }
            None => None,
        };
        Ok(Self {
            key: derived.key,
            message_id,
            frame_length: usize::try_from(config.frame_length).unwrap_or(usize::MAX),
            next_seq: 1,
            pending: Vec::new(),
            hasher,
            finished: false,
            materials,
        })
    }

    /// Encrypts more plaintext, appending every completed frame to `out`.
    pub fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), EncryptError> {
        if self.finished {
            return Err(EncryptError::Finished);
        }
        if !self.pending.is_empty() {
            let take = (self.frame_length - self.pending.len()).min(input.len());
            let (head, rest) = input.split_at(take);
            self.pending.extend_from_slice(head);
            input = rest;
            if input.is_empty() {
                // A full pending frame is held back: it may turn out to be the final one.
                return Ok(());
            }
            let pending = std::mem::take(&mut self.pending);
            self.seal_frame(BodyKind::Regular, &pending, out)?;
            self.pending = pending;
            self.pending.clear();
        }
        while input.len() > self.frame_length {
            let (frame, rest) = input.split_at(self.frame_length);
            self.seal_frame(BodyKind::Regular, frame, out)?;
            input = rest;
        }
        if self.pending.capacity() < self.frame_length {
            self.pending.reserve_exact(self.frame_length.min(1 << 20));
        }
        self.pending.extend_from_slice(input);
        Ok(())
    }

    /// Writes the final frame and, for signing suites, the footer.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), EncryptError> {
        if self.finished {
            return Err(EncryptError::Finished);
        }
        let pending = std::mem::take(&mut self.pending);
        self.seal_frame(BodyKind::Final, &pending, out)?;
        self.finish_footer(out)
    }

    /// Encrypts the whole remaining plaintext and finishes, without buffering it.
    fn seal_all(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), EncryptError> {
        while input.len() > self.frame_length {
            let (frame, rest) = input.split_at(self.frame_length);
            self.seal_frame(BodyKind::Regular, frame, out)?;
            input = rest;
        }
        self.seal_frame(BodyKind::Final, input, out)?;
        self.finish_footer(out)
    }

    fn seal_frame(&mut self, kind: BodyKind, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), EncryptError> {
        let seq = self.next_seq;
        if seq == u32::MAX {
            return Err(EncryptError::TooManyFrames);
        }
        let start = out.len();
        if let BodyKind::Final = kind {
            out.extend_from_slice(&u32::MAX.to_be_bytes());
        }
        out.extend_from_slice(&seq.to_be_bytes());
        let iv = keys::frame_nonce(seq);
        out.extend_from_slice(&iv);
        if let BodyKind::Final = kind {
            // The final frame is at most one frame long, and frame lengths are u32.
            let len = u32::try_from(plaintext.len()).map_err(|_| EncryptError::InvalidFrameLength)?;
            out.extend_from_slice(&len.to_be_bytes());
        }
        // Encrypt straight from the caller's plaintext into the output: ciphertext and
        // tag are written side by side, as the frame lays them out, with no extra copy.
        let content_start = out.len();
        out.resize(content_start + plaintext.len() + TAG_LEN, 0);
        let aad = keys::BodyAad::new(&self.message_id, kind, seq, plaintext.len() as u64);
        let content = out.get_mut(content_start..).ok_or(EncryptError::Crypto("frame offset"))?;
        self.key
            .seal_in_place_scatter(keys::nonce(iv), keys::aad(aad.as_slice()), &mut [], plaintext, content)
            .map_err(|_| EncryptError::Crypto("frame encryption"))?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(out.get(start..).unwrap_or_default());
        }
        self.next_seq = seq + 1;
        Ok(())
    }

    fn finish_footer(&mut self, out: &mut Vec<u8>) -> Result<(), EncryptError> {
        self.finished = true;
        if let Some(h) = self.hasher.take() {
            let key = self.materials.borrow().signing_key.as_ref().ok_or(EncryptError::SigningKeyMismatch)?;
            let sig = key.sign(&h.finish())?;
            push_u16_prefixed(out, &sig, "signature")?;
        }
        Ok(())
    }
}
