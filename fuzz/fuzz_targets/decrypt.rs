//! Fuzzes the message decoder: arbitrary bytes through header parsing and, when a header
//! parses, through the body decryptor with a fixed data key, fed in chunks whose size the
//! input's first byte chooses. Any panic is a bug: every malformed input must be an error.

#![no_main]

use keyhold_core::DataKey;
use keyhold_envelope::{BodyDecryptor, DecryptConfig, Header, HeaderParse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let config = DecryptConfig::default();
    let header = match Header::parse(input, &config) {
        Ok(HeaderParse::Complete(h)) => *h,
        _ => return,
    };
    let body = &input[header.len()..];
    let key = DataKey::from_slice(&vec![0u8; header.suite().data_key_len()]);
    let Ok(mut dec) = BodyDecryptor::new(header, &key, &config) else { return };
    let mut pending = Vec::new();
    let mut out = Vec::new();
    for piece in body.chunks(chunk) {
        pending.extend_from_slice(piece);
        match dec.process(&pending, &mut out) {
            Ok(used) => {
                pending.drain(..used);
            }
            Err(_) => return,
        }
    }
    let _ = dec.finish();
});
