//! Builders shared by the envelope tests.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use keyhold_envelope::{
    AlgorithmSuite, DataKey, DecryptConfig, EncryptConfig, EncryptedDataKey, EncryptionContext, EncryptionMaterials,
    PUBLIC_KEY_CONTEXT_KEY, SigningKey, decrypt, encrypt, read_header,
};

pub fn random_key(len: usize) -> DataKey {
    let mut k = vec![0u8; len];
    SystemRandom::new().fill(&mut k).unwrap();
    DataKey::from_vec(k)
}

pub fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

pub fn edk(tag: &str) -> EncryptedDataKey {
    EncryptedDataKey { provider_id: "test".into(), provider_info: tag.as_bytes().to_vec(), ciphertext: vec![1, 2, 3] }
}

/// Materials for `suite` with a fresh data key and the given EDKs; returns the key too.
pub fn materials_with(
    suite: AlgorithmSuite,
    ctx: EncryptionContext,
    edks: Vec<EncryptedDataKey>,
) -> (EncryptionMaterials, DataKey) {
    let key = random_key(32);
    let mut ctx = ctx;
    let signing = if suite.is_signing() {
        let k = SigningKey::generate(suite).unwrap();
        ctx.insert(PUBLIC_KEY_CONTEXT_KEY, k.public_key());
        Some(k)
    } else {
        None
    };
    let m = EncryptionMaterials::new(suite, key.duplicate(), ctx, edks, signing).unwrap();
    (m, key)
}

/// Materials with two EDKs.
pub fn materials(suite: AlgorithmSuite, ctx: EncryptionContext) -> (EncryptionMaterials, DataKey) {
    materials_with(suite, ctx, vec![edk("a"), edk("b")])
}

pub fn seal(m: &EncryptionMaterials, frame: u32, plaintext: &[u8]) -> Vec<u8> {
    encrypt(m, &EncryptConfig { frame_length: frame }, &SystemRandom::new(), plaintext).unwrap()
}

pub fn open_with(key: &DataKey, msg: &[u8], cfg: &DecryptConfig) -> Result<Vec<u8>, keyhold_envelope::DecryptError> {
    let header = read_header(msg, cfg)?;
    Ok(decrypt(header, key, msg, cfg)?.plaintext)
}

pub fn open(key: &DataKey, msg: &[u8]) -> Result<Vec<u8>, keyhold_envelope::DecryptError> {
    open_with(key, msg, &DecryptConfig::default())
}

pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}
