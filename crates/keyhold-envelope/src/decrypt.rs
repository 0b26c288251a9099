//! Reading messages: [`read_header`] then [`BodyDecryptor`] (streaming) or [`decrypt`]
//! (one-shot). The caller finds the data key between the two steps, from the header's
//! encrypted data keys.
//!
//! Streaming and signatures: a framed body is released frame by frame, each frame
//! authenticated by AES-GCM under the committed data key. For signing suites the footer
//! signature can only be checked at the end, so a streaming caller that needs the signer's
//! assurance must hold the output until [`BodyDecryptor::finish`] succeeds. [`decrypt`]
//! returns nothing until the signature has been verified.

use aws_lc_rs::digest;
use aws_lc_rs::signature::ParsedPublicKey;
use keyhold_core::DataKey;
use subtle::ConstantTimeEq;

use crate::config::DecryptConfig;
use crate::error::DecryptError;
use crate::header::{Header, HeaderParse, IV_LEN, PUBLIC_KEY_CONTEXT_KEY, TAG_LEN};
use crate::keys::{self, BodyKind};
use crate::reader::{Reader, Stop};
use crate::sign;

/// The format's limit on non-framed content: 2^36 - 32 bytes.
const NON_FRAMED_FORMAT_MAX: u64 = (1 << 36) - 32;

/// Parses the header of a complete message held in memory.
pub fn read_header(message: &[u8], config: &DecryptConfig) -> Result<Header, DecryptError> {
    match Header::parse(message, config)? {
        HeaderParse::Complete(h) => Ok(*h),
        HeaderParse::Incomplete(field) => Err(DecryptError::Truncated(field)),
    }
}

/// A decrypted message.
pub struct Decrypted {
    /// The authenticated header.
    pub header: Header,
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

/// Decrypts a complete message whose header was read with [`read_header`], using the data
/// key the caller unwrapped from one of its encrypted data keys.
pub fn decrypt(
    header: Header,
    data_key: &DataKey,
    message: &[u8],
    config: &DecryptConfig,
) -> Result<Decrypted, DecryptError> {
    let mut plaintext = Vec::new();
    let header = decrypt_into(header, data_key, message, config, &mut plaintext)?;
    Ok(Decrypted { header, plaintext })
}

/// As [`decrypt`], appending the plaintext to `out` (which callers may reuse). On error
/// `out` is left as it was.
pub fn decrypt_into(
    header: Header,
    data_key: &DataKey,
    message: &[u8],
    config: &DecryptConfig,
    out: &mut Vec<u8>,
) -> Result<Header, DecryptError> {
    let start = out.len();
    let result = decrypt_body(header, data_key, message, config, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn decrypt_body(
    header: Header,
    data_key: &DataKey,
    message: &[u8],
    config: &DecryptConfig,
    out: &mut Vec<u8>,
) -> Result<Header, DecryptError> {
    let body = message.get(header.len..).ok_or(DecryptError::InvalidState)?;
    let mut dec = BodyDecryptor::new(header, data_key, config)?;
    out.reserve(body.len());
    let consumed = dec.process(body, out)?;
    dec.finish()?;
    if consumed != body.len() {
        return Err(DecryptError::TrailingBytes(body.len() - consumed));
    }
    Ok(dec.header)
}

impl std::fmt::Debug for Decrypted {
    /// Shows the header and the plaintext length, never the plaintext.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypted").field("header", &self.header).field("plaintext_len", &self.plaintext.len()).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Body,
    Footer,
    Done,
    Failed,
}

/// Decrypts a message body fed in pieces of any size.
pub struct BodyDecryptor {
    header: Header,
    key: aws_lc_rs::aead::LessSafeKey,
    state: State,
    expected_seq: u32,
    hasher: Option<digest::Context>,
    verifier: Option<ParsedPublicKey>,
    max_non_framed: u64,
    pending_field: &'static str,
}

impl BodyDecryptor {
    /// Checks the data key against the header (length, key commitment, header
    /// authentication tag) and prepares to decrypt the body.
    pub fn new(header: Header, data_key: &DataKey, config: &DecryptConfig) -> Result<Self, DecryptError> {
        let suite = header.suite;
        if data_key.len() != suite.data_key_len() {
            return Err(DecryptError::DataKeyLength { expected: suite.data_key_len(), found: data_key.len() });
        }
        let derived =
            keys::derive(suite, data_key, header.message_id()).map_err(|_| DecryptError::CommitmentMismatch)?;
        if let (Some(expected), Some(found)) = (header.commitment, derived.commitment)
            && !bool::from(expected.ct_eq(&found))
        {
            return Err(DecryptError::CommitmentMismatch);
        }
        derived
            .key
            .open_separate_gather(keys::nonce(header.auth_iv), keys::aad(&header.body), &[], &header.auth_tag, &mut [])
            .map_err(|_| DecryptError::HeaderAuthFailed)?;

        let (hasher, verifier) = match suite.signing() {
            Some(s) => {
                let pk = header.context_value(PUBLIC_KEY_CONTEXT_KEY).ok_or(DecryptError::MissingPublicKey)?;
                let verifier = sign::verifier(s, pk)?;
                let mut h = digest::Context::new(s.digest());
                h.update(&header.body);
                if header.version == 1 {
                    h.update(&header.auth_iv);
                }
                h.update(&header.auth_tag);
                (Some(h), Some(verifier))
            }
            None => (None, None),
        };
        Ok(Self {
            key: derived.key,
            state: State::Body,
            expected_seq: 1,
            hasher,
            verifier,
            max_non_framed: config.max_non_framed_length.min(NON_FRAMED_FORMAT_MAX),
            pending_field: if header.framed { "body frame" } else { "non-framed body" },
            header,
        })
    }

    /// The authenticated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Decrypts every complete unit (frame, non-framed body, footer) at the start of
    /// `input`, appends its plaintext to `out`, and returns how many input bytes it used.
    /// The caller passes the unused rest again, with more bytes after it. Bytes after the
    /// end of the message are an error.
    pub fn process(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecryptError> {
        let mut consumed = 0;
        loop {
            let rest = input.get(consumed..).unwrap_or_default();
            let step = match self.state {
                State::Failed => return Err(DecryptError::InvalidState),
                State::Done if rest.is_empty() => return Ok(consumed),
                State::Done => return Err(DecryptError::TrailingBytes(rest.len())),
                State::Body if self.header.framed => self.frame(rest, out),
                State::Body => self.single_block(rest, out),
                State::Footer => self.footer(rest),
            };
            match step {
                Ok(n) => consumed += n,
                Err(Stop::Incomplete(field)) => {
                    self.pending_field = field;
                    return Ok(consumed);
                }
                Err(Stop::Bad(e)) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            }
        }
    }

    /// Whether the whole message has been read and verified.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Confirms the message ended where it should: fails with
    /// [`DecryptError::Truncated`] if more bytes were expected.
    pub fn finish(&self) -> Result<(), DecryptError> {
        match self.state {
            State::Done => Ok(()),
            State::Failed => Err(DecryptError::InvalidState),
            State::Body | State::Footer => Err(DecryptError::Truncated(self.pending_field)),
        }
    }

    fn frame(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<usize, Stop> {
        let mut r = Reader::new(rest);
        let first = r.u32("body frame")?;
        let is_final = first == u32::MAX;
        let (kind, seq) = if is_final { (BodyKind::Final, r.u32("final frame")?) } else { (BodyKind::Regular, first) };
        if seq != self.expected_seq {
            return Err(DecryptError::BadSequenceNumber { expected: self.expected_seq, found: seq }.into());
        }
        let iv = r.array::<IV_LEN>(if is_final { "final frame" } else { "body frame" })?;
        let len = if is_final {
            let len = r.u32("final frame")?;
            if len > self.header.frame_length {
                return Err(
                    DecryptError::FinalFrameTooLong { found: len, frame_length: self.header.frame_length }.into()
                );
            }
            len
        } else {
            self.header.frame_length
        };
        let field = if is_final { "final frame" } else { "body frame" };
        let ciphertext = r.take(usize::try_from(len).map_err(|_| Stop::Incomplete(field))?, field)?;
        let tag = r.take(TAG_LEN, field)?;
        let aad = keys::BodyAad::new(self.header.message_id(), kind, seq, u64::from(len));
        self.open(iv, &aad, ciphertext, tag, out).map_err(|()| DecryptError::FrameAuthFailed(seq))?;
        let used = r.position();
        self.hash(rest.get(..used).unwrap_or_default());
        if is_final {
            self.end_body();
        } else {
            self.expected_seq = seq.checked_add(1).filter(|&s| s != u32::MAX).ok_or(DecryptError::TooManyFrames)?;
        }
        Ok(used)
    }

    fn single_block(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<usize, Stop> {
        let mut r = Reader::new(rest);
        let iv = r.array::<IV_LEN>("non-framed body")?;
        let len = r.u64("non-framed body")?;
        if len > self.max_non_framed {
            return Err(DecryptError::ContentTooLong { found: len, max: self.max_non_framed }.into());
        }
        let ciphertext =
            r.take(usize::try_from(len).map_err(|_| Stop::Incomplete("non-framed body"))?, "non-framed body")?;
        let tag = r.take(TAG_LEN, "non-framed body")?;
        let aad = keys::BodyAad::new(self.header.message_id(), BodyKind::SingleBlock, 1, len);
        self.open(iv, &aad, ciphertext, tag, out).map_err(|()| DecryptError::FrameAuthFailed(1))?;
        let used = r.position();
        self.hash(rest.get(..used).unwrap_or_default());
        self.end_body();
        Ok(used)
    }

    fn footer(&mut self, rest: &[u8]) -> Result<usize, Stop> {
        let mut r = Reader::new(rest);
        let sig = r.u16_prefixed("signature footer")?;
        let (Some(hasher), Some(verifier)) = (self.hasher.take(), self.verifier.as_ref()) else {
            return Err(DecryptError::InvalidState.into());
        };
        verifier.verify_digest_sig(&hasher.finish(), sig).map_err(|_| DecryptError::SignatureInvalid)?;
        self.state = State::Done;
        Ok(r.position())
    }

    fn open(
        &self,
        iv: [u8; IV_LEN],
        aad: &keys::BodyAad,
        ciphertext: &[u8],
        tag: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ()> {
        let start = out.len();
        out.resize(start + ciphertext.len(), 0);
        let dst = out.get_mut(start..).ok_or(())?;
        let ok =
            self.key.open_separate_gather(keys::nonce(iv), keys::aad(aad.as_slice()), ciphertext, tag, dst).is_ok();
        if !ok {
            // Never leave unauthenticated plaintext in the caller's buffer.
            out.truncate(start);
            return Err(());
        }
        Ok(())
    }

    fn hash(&mut self, bytes: &[u8]) {
        if let Some(h) = self.hasher.as_mut() {
            h.update(bytes);
        }
    }

    fn end_body(&mut self) {
        if self.hasher.is_some() {
            self.state = State::Footer;
            self.pending_field = "signature footer";
        } else {
            self.state = State::Done;
        }
    }
}
