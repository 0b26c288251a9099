//! Streaming: any chunking of input produces the same result as one-shot processing.

use aws_lc_rs::rand::SystemRandom;
use keyhold_envelope::stream::{StreamError, decrypt_stream, encrypt_stream, read_header_from};
use keyhold_envelope::{
    AlgorithmSuite, BodyDecryptor, DecryptConfig, DecryptError, EncryptConfig, Encryptor, Header, HeaderParse,
};

use crate::common::*;

#[test]
fn encryptor_output_is_independent_of_chunking() {
    for suite in [AlgorithmSuite::default(), AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384] {
        let (m, key) = materials(suite, context(&[("x", "y")]));
        let pt = pattern(10_000);
        for chunk in [1usize, 3, 64, 999, 4096, 10_000] {
            let mut out = Vec::new();
            let mut enc =
                Encryptor::new(&m, &EncryptConfig { frame_length: 128 }, &SystemRandom::new(), &mut out).unwrap();
            for c in pt.chunks(chunk) {
                enc.update(c, &mut out).unwrap();
            }
            enc.finish(&mut out).unwrap();
            assert!(enc.finish(&mut out).is_err(), "finish twice must fail");
            assert_eq!(open(&key, &out).unwrap(), pt, "chunk {chunk}");
            // Same layout as one-shot encryption: the same length, up to the one or two
            // bytes by which DER-encoded signatures vary.
            let one_shot = seal(&m, 128, &pt).len();
            let slack = if suite.is_signing() { 2 } else { 0 };
            assert!(out.len().abs_diff(one_shot) <= slack, "{} vs {one_shot}", out.len());
        }
    }
}

#[test]
fn body_decryptor_accepts_any_chunking() {
    let (m, key) = materials(AlgorithmSuite::AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384, context(&[]));
    let pt = pattern(5000);
    let msg = seal(&m, 256, &pt);
    for chunk in [1usize, 2, 17, 300, 5000] {
        let cfg = DecryptConfig::default();
        // Header, fed piece by piece.
        let mut buf = Vec::new();
        let mut pieces = msg.chunks(chunk);
        let header: Header = loop {
            match Header::parse(&buf, &cfg).unwrap() {
                HeaderParse::Complete(h) => break *h,
                HeaderParse::Incomplete(_) => buf.extend_from_slice(pieces.next().unwrap()),
            }
        };
        let mut pending = buf.split_off(header.len());
        let mut body = BodyDecryptor::new(header, &key, &cfg).unwrap();
        let mut out = Vec::new();
        loop {
            let used = body.process(&pending, &mut out).unwrap();
            pending.drain(..used);
            match pieces.next() {
                Some(p) => pending.extend_from_slice(p),
                None => break,
            }
        }
        body.finish().unwrap();
        assert!(pending.is_empty());
        assert_eq!(out, pt, "chunk {chunk}");
    }
}

#[test]
fn stream_adapters_round_trip_and_report_progress() {
    let (m, key) = materials(AlgorithmSuite::default(), context(&[]));
    let pt = pattern(3 * 256 * 1024 + 5);
    let mut ct = Vec::new();
    let mut seen = 0;
    let n =
        encrypt_stream(&m, &EncryptConfig::default(), &SystemRandom::new(), &pt[..], &mut ct, |p| seen = p).unwrap();
    assert_eq!(n, pt.len() as u64);
    assert_eq!(seen, pt.len() as u64);

    let cfg = DecryptConfig::default();
    let mut reader = &ct[..];
    let (header, leftover) = read_header_from(&mut reader, &cfg).unwrap();
    let body = BodyDecryptor::new(header, &key, &cfg).unwrap();
    let mut out = Vec::new();
    let written = decrypt_stream(body, leftover, reader, &mut out, |_| {}).unwrap();
    assert_eq!(written, pt.len() as u64);
    assert_eq!(out, pt);
}

#[test]
fn stream_decrypt_reports_truncation_and_trailing_bytes() {
    let (m, key) = materials(AlgorithmSuite::default(), context(&[]));
    let ct = seal(&m, 4096, &pattern(10_000));
    let cfg = DecryptConfig::default();
    let run = |bytes: &[u8]| -> Result<Vec<u8>, StreamError> {
        let mut r = bytes;
        let (h, left) = read_header_from(&mut r, &cfg)?;
        let body = BodyDecryptor::new(h, &key, &cfg)?;
        let mut out = Vec::new();
        decrypt_stream(body, left, r, &mut out, |_| {})?;
        Ok(out)
    };
    assert!(matches!(run(&ct[..ct.len() - 1]), Err(StreamError::Decrypt(DecryptError::Truncated("final frame")))));
    assert!(matches!(run(&ct[..10]), Err(StreamError::Decrypt(DecryptError::Truncated("message id")))));
    let mut extra = ct.clone();
    extra.extend_from_slice(b"junk");
    assert!(matches!(run(&extra), Err(StreamError::Decrypt(DecryptError::TrailingBytes(4)))));
    assert_eq!(run(&ct).unwrap(), pattern(10_000));
}
