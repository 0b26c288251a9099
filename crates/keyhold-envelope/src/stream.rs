//! Streaming over `std::io::Read` and `std::io::Write`: the format itself performs no IO,
//! these adapters only move bytes between the caller's reader and writer and the
//! sans-IO [`Encryptor`] and [`BodyDecryptor`], with memory bounded by one frame plus a
//! fixed read buffer.

use std::borrow::Borrow;
use std::io::{Read, Write};

use aws_lc_rs::rand::SecureRandom;

use crate::config::{DecryptConfig, EncryptConfig};
use crate::decrypt::BodyDecryptor;
use crate::encrypt::{EncryptionMaterials, Encryptor};
use crate::error::{DecryptError, EncryptError};
use crate::header::{Header, HeaderParse};

const CHUNK: usize = 256 * 1024;

/// A streaming failure: the reader or writer, or the format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Reading input or writing output failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The message could not be written.
    #[error(transparent)]
    Encrypt(#[from] EncryptError),
    /// The message could not be read.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
}

/// Encrypts everything `reader` yields into one message written to `writer`. `progress`
/// is called with the number of plaintext bytes read so far. Returns that total.
pub fn encrypt_stream<M, R, W>(
    materials: M,
    config: &EncryptConfig,
    rng: &dyn SecureRandom,
    mut reader: R,
    mut writer: W,
    mut progress: impl FnMut(u64),
) -> Result<u64, StreamError>
where
    M: Borrow<EncryptionMaterials>,
    R: Read,
    W: Write,
{
    let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
    let mut enc = Encryptor::new(materials, config, rng, &mut out)?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = read_some(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        enc.update(buf.get(..n).unwrap_or_default(), &mut out)?;
        writer.write_all(&out)?;
        out.clear();
        progress(total);
    }
    enc.finish(&mut out)?;
    writer.write_all(&out)?;
    writer.flush()?;
    Ok(total)
}

/// Reads a message header from `reader`. Returns it with the bytes read past its end,
/// which belong to the body.
pub fn read_header_from<R: Read>(reader: R, config: &DecryptConfig) -> Result<(Header, Vec<u8>), StreamError> {
    let (header, mut read) = read_header_bytes_from(reader, config)?;
    let rest = read.split_off(header.len());
    Ok((header, rest))
}

/// As [`read_header_from`], returning every byte read: the header's own, then those past
/// its end (for a caller that passes the message on unchanged).
pub fn read_header_bytes_from<R: Read>(
    mut reader: R,
    config: &DecryptConfig,
) -> Result<(Header, Vec<u8>), StreamError> {
    let mut buf = Vec::new();
    loop {
        let field = match Header::parse(&buf, config)? {
            HeaderParse::Complete(h) => return Ok((*h, buf)),
            HeaderParse::Incomplete(field) => field,
        };
        let len = buf.len();
        buf.resize(len + CHUNK, 0);
        let n = read_some(&mut reader, buf.get_mut(len..).unwrap_or_default())?;
        buf.truncate(len + n);
        if n == 0 {
            return Err(DecryptError::Truncated(field).into());
        }
    }
}

/// Decrypts the rest of a message into `writer`: first `leftover` (from
/// [`read_header_from`]), then `reader` to its end. `progress` is called with the number of
/// ciphertext bytes read so far. Returns the number of plaintext bytes written.
pub fn decrypt_stream<R: Read, W: Write>(
    mut body: BodyDecryptor,
    leftover: Vec<u8>,
    mut reader: R,
    mut writer: W,
    mut progress: impl FnMut(u64),
) -> Result<u64, StreamError> {
    let mut buf = leftover;
    let mut start = 0usize;
    let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
    let mut written = 0u64;
    let mut read_total = 0u64;
    loop {
        let used = body.process(buf.get(start..).unwrap_or_default(), &mut out)?;
        start += used;
        if !out.is_empty() {
            writer.write_all(&out)?;
            written += out.len() as u64;
            out.clear();
        }
        // Keep the unread tail at the front, then read more after it.
        if start > 0 {
            buf.drain(..start);
            start = 0;
        }
        let len = buf.len();
        buf.resize(len + CHUNK, 0);
        let n = read_some(&mut reader, buf.get_mut(len..).unwrap_or_default())?;
        buf.truncate(len + n);
        read_total += n as u64;
        progress(read_total);
        if n == 0 {
            let used = body.process(&buf, &mut out)?;
            writer.write_all(&out)?;
            written += out.len() as u64;
            if used != buf.len() {
                body.finish()?;
                return Err(DecryptError::TrailingBytes(buf.len() - used).into());
            }
            body.finish()?;
            writer.flush()?;
            return Ok(written);
        }
    }
}

/// Re-encrypts the rest of a message (its header parsed into `body`, `leftover` and
/// `reader` as for [`decrypt_stream`]) into a new message under `materials` written to
/// `writer`. The plaintext passes through one chunk at a time and is never held whole
/// nor written anywhere. The new message's final frame is written only
/// after the old message authenticated to its end (signature included): if it does not,
/// `writer` holds an unfinished message that no decryptor accepts. Returns the number of
/// plaintext bytes re-encrypted.
#[allow(clippy::too_many_arguments, reason = "decrypt_stream's and encrypt_stream's arguments")]
pub fn reencrypt_stream<M, R, W>(
    body: BodyDecryptor,
    leftover: Vec<u8>,
    reader: R,
    materials: M,
    config: &EncryptConfig,
    rng: &dyn SecureRandom,
    writer: W,
    progress: impl FnMut(u64),
) -> Result<u64, StreamError>
where
    M: Borrow<EncryptionMaterials>,
    R: Read,
    W: Write,
{
    let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
    let enc = Encryptor::new(materials, config, rng, &mut out)?;
    let mut sink = EncryptingWriter { enc, out, writer };
    sink.writer.write_all(&sink.out)?;
    sink.out.clear();
    let n = decrypt_stream(body, leftover, reader, &mut sink, progress)?;
    sink.enc.finish(&mut sink.out)?;
    sink.writer.write_all(&sink.out)?;
    sink.writer.flush()?;
    Ok(n)
}

/// A writer that encrypts what it is given into a message written to `writer`.
struct EncryptingWriter<M: Borrow<EncryptionMaterials>, W> {
    enc: Encryptor<M>,
    out: Vec<u8>,
    writer: W,
}

impl<M: Borrow<EncryptionMaterials>, W: Write> Write for EncryptingWriter<M, W> {
    fn write(&mut self, plaintext: &[u8]) -> std::io::Result<usize> {
        self.enc.update(plaintext, &mut self.out).map_err(std::io::Error::other)?;
        self.writer.write_all(&self.out)?;
        self.out.clear();
        Ok(plaintext.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Finishing the message is `reencrypt_stream`'s, once the old one authenticated.
        Ok(())
    }
}

/// Reads until `buf` is full or the reader ends, retrying interrupted reads.
fn read_some<R: Read>(reader: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
