//! Orchestration without HTTP: the path from a tenant's request to a message and back.
//!
//! Encryption: the caller's context gets the reserved `tenant` and `purpose` keys; the
//! materials cache is asked for a data key usable for this (tenant, purpose, key set,
//! suite, context); on a miss the first key of the set (the home region) generates a data
//! key, every other key wraps it, and the materials are cached. The message is then
//! written by `keyhold-envelope` without any further provider call.
//!
//! Decryption: the header is parsed, its `tenant` must equal the caller's tenant (checked
//! before any key is touched), and the first encrypted data key a configured provider can
//! unwrap yields the data key, through the decryption cache.
//!
//! **Caller context and the cache.** The caller's context is part of every message's
//! encryption context, so it is what the tenant's KMS sees and logs, and what a stock SDK
//! needs to decrypt; an encrypted data key is bound to it. Data keys can therefore only be
//! reused between messages with the same context, and the cache partition includes it.
//! Context is for low-cardinality classification (table, data class, region): a value
//! that differs per record (a row id) makes every record a provider call. Bind per-record
//! identifiers inside the plaintext instead. [`Keyhold::encrypt`] documents the bound.

#![forbid(unsafe_code)]

mod error;
mod flight;
mod ledger;

use std::cell::RefCell;
use std::sync::Arc;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use keyhold_cache::MaterialsCache;
use keyhold_core::{
    Clock, DataKey, EncryptionContext, KeyRef, MAX_CONTEXT_BYTES, Purpose, RESERVED_PURPOSE_KEY, RESERVED_TENANT_KEY,
    Region, TenantId,
};
use keyhold_envelope::{
    AlgorithmSuite, BodyDecryptor, DecryptConfig, Decrypted, EdkRef, EncryptConfig, EncryptionMaterials, Header,
    MessageId, PUBLIC_KEY_CONTEXT_KEY, SigningKey,
};
use keyhold_provider::{ErrorClass, KeyProvider, ProviderError};

pub use error::ServiceError;
pub use keyhold_cache::{CacheConfig, CacheStats};
pub use ledger::{DataKeyId, DataKeyUse, Ledger, NewDataKey};

/// What to encrypt under.
#[derive(Debug, Clone)]
pub struct EncryptParams {
    /// The tenant whose keys protect the data.
    pub tenant: TenantId,
    /// The data's purpose.
    pub purpose: Purpose,
    /// The tenant's root keys, home region first: the first generates the data key, the
    /// others wrap it, so the message decrypts with any one of them. Shared, so a caller
    /// holding a tenant's key set passes it per message without copying it.
    pub keys: Arc<[KeyRef]>,
    /// Caller context (must not use the reserved keys).
    pub context: EncryptionContext,
    /// Algorithm suite (default `0x0478`).
    pub suite: AlgorithmSuite,
    /// The tenant's data-key generation: data keys cached under another generation are
    /// not reused (a forced rotation bumps it). 0 where no rotation was forced.
    pub generation: u64,
}

/// Encryption materials as cached: what the message is written with, its data key's
/// ledger id, and where the ledger counts its uses.
pub struct Materials {
    /// The message materials.
    pub message: EncryptionMaterials,
    /// The data key's ledger id.
    pub id: DataKeyId,
    uses: Option<Arc<DataKeyUse>>,
}

impl Materials {
    /// Counts a message of `plaintext_len` bytes written with these materials (the
    /// one-shot paths count themselves; streaming callers call this once per message).
    pub fn record_use(&self, plaintext_len: u64) {
        if let Some(u) = &self.uses {
            u.record(plaintext_len);
        }
    }
}

/// Which root keys decryption may ask: the tenant's key history, for a server.
pub trait AllowedKeys: Send + Sync {
    /// Whether `key` may be asked to unwrap a data key of this message.
    fn allows(&self, key: &KeyRef) -> bool;
}

/// Every key a provider serves (offline use, where the operator holds the keys).
pub struct AnyKey;

impl AllowedKeys for AnyKey {
    fn allows(&self, _key: &KeyRef) -> bool {
        true
    }
}

/// Exactly these keys (a tenant's key history).
pub struct KeySet<'a>(pub &'a [KeyRef]);

impl AllowedKeys for KeySet<'_> {
    fn allows(&self, key: &KeyRef) -> bool {
        self.0.contains(key)
    }
}

/// A key that refused or failed while decrypting a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFailure {
    /// The key.
    pub key: KeyRef,
    /// What kind of failure.
    pub class: ErrorClass,
}

/// Settings of a [`Keyhold`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// Cache limits.
    pub cache: CacheConfig,
    /// Message writing.
    pub encrypt: EncryptConfig,
    /// Message reading.
    pub decrypt: DecryptConfig,
}

/// The keyhold service core.
pub struct Keyhold {
    providers: Vec<Arc<dyn KeyProvider>>,
    cache: MaterialsCache<Materials, DataKey>,
    settings: Settings,
    local_region: Option<Region>,
    flights: flight::Flights,
    ledger: Option<Arc<dyn Ledger>>,
}

impl Keyhold {
    /// A service over `providers` (each key reference is served by the first provider that
    /// accepts it).
    pub fn new(providers: Vec<Arc<dyn KeyProvider>>, settings: Settings, clock: Arc<dyn Clock>) -> Self {
        Self {
            providers,
            cache: MaterialsCache::new(settings.cache, clock),
            settings,
            local_region: None,
            flights: Default::default(),
            ledger: None,
        }
    }

    /// Every generated data key is recorded in `ledger` before its first use, and its
    /// messages counted there.
    pub fn with_ledger(mut self, ledger: Arc<dyn Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// The root keys a message's encrypted data keys name, as the providers read them, in
    /// message order, without duplicates (no key is used).
    pub fn message_keys(&self, header: &Header) -> Vec<KeyRef> {
        let mut keys: Vec<KeyRef> = Vec::new();
        for edk in header.edk_refs() {
            let edk = edk.to_owned();
            if let Some(k) = self.providers.iter().find_map(|p| p.key_for(&edk))
                && !keys.contains(&k)
            {
                keys.push(k);
            }
        }
        keys
    }

    /// Decryption tries the keys of `region` (where this instance runs) before the other
    /// regions' keys of a message, and fails over to those.
    pub fn with_local_region(mut self, region: Region) -> Self {
        self.local_region = Some(region);
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Drops every cached data key of `tenant` (on revocation or deletion).
    pub fn flush_tenant(&self, tenant: &TenantId) -> usize {
        self.cache.flush_tenant(tenant)
    }

    /// Encrypts one message held in memory. At most one provider call per key of the set
    /// is made per data-key lifetime (see the crate docs on context and the cache).
    pub async fn encrypt(&self, params: &EncryptParams, plaintext: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let mut out = Vec::new();
        self.encrypt_into(params, plaintext, &mut out).await?;
        Ok(out)
    }

    /// As [`Keyhold::encrypt`], appending the message to `out` (which callers may reuse).
    pub async fn encrypt_into(
        &self,
        params: &EncryptParams,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ServiceError> {
        let materials = self.encryption_materials(params, plaintext.len() as u64).await?;
        let id = message_id()?;
        keyhold_envelope::encrypt_into(&materials.message, &self.settings.encrypt, id, plaintext, out)?;
        materials.record_use(plaintext.len() as u64);
        Ok(())
    }

    /// Encryption materials for a message of `plaintext_len` bytes (for streaming callers,
    /// which then drive [`keyhold_envelope::Encryptor`] themselves).
    pub async fn encryption_materials(
        &self,
        params: &EncryptParams,
        plaintext_len: u64,
    ) -> Result<Arc<Materials>, ServiceError> {
        let (first, rest) = params.keys.split_first().ok_or(ServiceError::NoKeys)?;
        if !params.suite.is_committing() {
            return Err(ServiceError::UnsupportedSuite(params.suite));
        }
        for (k, _) in params.context.iter() {
            if k == RESERVED_TENANT_KEY || k == RESERVED_PURPOSE_KEY || k.starts_with("aws-crypto-") {
                return Err(ServiceError::ReservedContextKey(k.to_owned()));
            }
        }
        let entry_id = partition_digest(params);
        if let Some(m) = self.cache.get_encrypt(&params.tenant, &entry_id, plaintext_len) {
            return Ok(m);
        }
        // One generate per partition at a time; whoever waited finds it cached.
        let _flight = self.flights.enter(&entry_id).await;
        if let Some(m) = self.cache.recheck_encrypt(&params.tenant, &entry_id, plaintext_len) {
            return Ok(m);
        }

        let mut context = params.context.clone();
        context.insert(RESERVED_TENANT_KEY, params.tenant.as_str());
        context.insert(RESERVED_PURPOSE_KEY, params.purpose.as_str());
        let signing = if params.suite.is_signing() {
            let key = SigningKey::generate(params.suite)?;
            context.insert(PUBLIC_KEY_CONTEXT_KEY, key.public_key());
            Some(key)
        } else {
            None
        };
        // What the provider is sent, complete: refused before any call when larger than a
        // key service accepts (and than the audit trail should hold).
        if context.serialized_len() > MAX_CONTEXT_BYTES {
            return Err(ServiceError::ContextTooLarge { size: context.serialized_len() });
        }
        let (data_key, edk) = self
            .provider_for(first)?
            .generate_data_key(first, params.suite.data_key_len(), &context)
            .await
            .map_err(|e| ServiceError::Provider { key: first.clone(), source: e })?;
        let mut edks = Vec::with_capacity(params.keys.len());
        edks.push(edk);
        for key in rest {
            let edk = self
                .provider_for(key)?
                .wrap(key, &data_key, &context)
                .await
                .map_err(|e| ServiceError::Provider { key: key.clone(), source: e })?;
            edks.push(edk);
        }
        let id = DataKeyId::of_generated(&edks);
        let uses = match &self.ledger {
            Some(l) => Some(
                l.generated(NewDataKey { tenant: &params.tenant, purpose: &params.purpose, id, keys: &params.keys })
                    .await
                    .map_err(ServiceError::Ledger)?,
            ),
            None => None,
        };
        let message = EncryptionMaterials::new(params.suite, data_key, context, edks, signing)?;
        let materials = Arc::new(Materials { message, id, uses });
        self.cache.put_encrypt(params.tenant.clone(), entry_id, materials.clone(), plaintext_len);
        Ok(materials)
    }

    /// Decrypts one message held in memory, refusing it unless it belongs to `tenant`.
    /// Any key a provider serves may be asked: callers serving tenants use
    /// [`Keyhold::decrypt_among`] to ask only the tenant's own keys.
    pub async fn decrypt(&self, tenant: &TenantId, message: &[u8]) -> Result<Decrypted, ServiceError> {
        let mut plaintext = Vec::new();
        let header = self.decrypt_into(tenant, message, &mut plaintext).await?;
        Ok(Decrypted { header, plaintext })
    }

    /// As [`Keyhold::decrypt`], appending the plaintext to `out` (which callers may reuse)
    /// and returning the authenticated header.
    pub async fn decrypt_into(
        &self,
        tenant: &TenantId,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Header, ServiceError> {
        let header = keyhold_envelope::read_header(message, &self.settings.decrypt)?;
        self.decrypt_among(tenant, header, message, &AnyKey, &mut Vec::new(), out).await
    }

    /// Decrypts a message whose header the caller has parsed (to check its context before
    /// any key is used), appending the plaintext to `out`; only keys `allowed` accepts are
    /// asked, and every key that refused or failed is pushed to `failures` (whether or not
    /// another key then succeeded), so the caller can act on a refusal.
    pub async fn decrypt_among(
        &self,
        tenant: &TenantId,
        header: Header,
        message: &[u8],
        allowed: &dyn AllowedKeys,
        failures: &mut Vec<KeyFailure>,
        out: &mut Vec<u8>,
    ) -> Result<Header, ServiceError> {
        let key = self.data_key(tenant, &header, allowed, failures).await?;
        Ok(keyhold_envelope::decrypt_into(header, &key, message, &self.settings.decrypt, out)?)
    }

    /// Checks a parsed header's tenant and returns a body decryptor (for streaming
    /// callers), asking only keys `allowed` accepts.
    pub async fn body_decryptor(
        &self,
        tenant: &TenantId,
        header: Header,
        allowed: &dyn AllowedKeys,
        failures: &mut Vec<KeyFailure>,
    ) -> Result<BodyDecryptor, ServiceError> {
        let key = self.data_key(tenant, &header, allowed, failures).await?;
        Ok(BodyDecryptor::new(header, &key, &self.settings.decrypt)?)
    }

    /// Refuses a header that does not carry `tenant`, then unwraps its data key, asking
    /// only keys `allowed` accepts, each at most once per message (a message naming one
    /// key many times costs one call). A message none of whose keys is allowed is
    /// [`ServiceError::KeyNotInTenant`], and no provider is called.
    pub async fn data_key(
        &self,
        tenant: &TenantId,
        header: &Header,
        allowed: &dyn AllowedKeys,
        failures: &mut Vec<KeyFailure>,
    ) -> Result<Arc<DataKey>, ServiceError> {
        check_tenant(tenant, header)?;
        let context_bytes = header.context_bytes();
        // The local region's keys first (when this instance knows its region), then the
        // others in message order; two passes over the parsed header, no allocation.
        let local = |e: &EdkRef<'_>| match &self.local_region {
            Some(r) => self.providers.iter().any(|p| p.wraps_in_region(e.provider_id, e.provider_info, r)),
            None => true,
        };
        let remote = |e: &EdkRef<'_>| self.local_region.is_some() && !local(e);
        let ordered = header.edk_refs().filter(local).chain(header.edk_refs().filter(remote));
        let mut last_error = None;
        let mut foreign = false;
        for edk in ordered {
            // The cache first: a hit needs no provider lookup and no allocation but the key.
            // An entry exists only if an allowed key unwrapped it (callers flush a tenant's
            // entries when its key history changes).
            let entry_id = edk_digest(tenant, &edk, context_bytes);
            if let Some(k) = self.cache.get_decrypt(tenant, &entry_id) {
                return Ok(k);
            }
            let edk = edk.to_owned();
            let Some((provider, key)) = self.providers.iter().find_map(|p| p.key_for(&edk).map(|k| (p, k))) else {
                continue;
            };
            if !allowed.allows(&key) {
                foreign = true;
                continue;
            }
            // keyhold never writes a larger context; no key service is asked to bind one.
            if context_bytes.len() > MAX_CONTEXT_BYTES {
                return Err(ServiceError::ContextTooLarge { size: context_bytes.len() });
            }
            if failures.iter().any(|f| f.key == key) {
                continue;
            }
            // One unwrap per encrypted data key at a time; whoever waited finds it cached.
            let _flight = self.flights.enter(&entry_id).await;
            if let Some(k) = self.cache.recheck_decrypt(tenant, &entry_id) {
                return Ok(k);
            }
            match provider.unwrap(&edk, header.context()).await {
                Ok(dk) => {
                    let dk = Arc::new(dk);
                    self.cache.put_decrypt(tenant.clone(), entry_id, dk.clone());
                    return Ok(dk);
                }
                // Try the next region's key; remember the most telling failure.
                Err(e) => {
                    failures.push(KeyFailure { key: key.clone(), class: e.class() });
                    let better = match &last_error {
                        None => true,
                        Some(ServiceError::Provider { source, .. }) => rank(&e) > rank(source),
                        Some(_) => true,
                    };
                    if better {
                        last_error = Some(ServiceError::Provider { key, source: e });
                    }
                }
            }
        }
        Err(last_error.unwrap_or(if foreign {
            ServiceError::KeyNotInTenant
        } else {
            ServiceError::NoUsableEncryptedDataKey
        }))
    }

    fn provider_for(&self, key: &KeyRef) -> Result<&Arc<dyn KeyProvider>, ServiceError> {
        self.providers.iter().find(|p| p.accepts(key)).ok_or_else(|| ServiceError::NoProviderFor(key.clone()))
    }
}

/// Which failure to report when every region's key failed: a revocation is what the
/// caller must hear about, then a misconfiguration, then anything else.
fn rank(e: &ProviderError) -> u8 {
    match e.class() {
        ErrorClass::Revoked => 3,
        ErrorClass::Misconfigured => 2,
        ErrorClass::Retryable => 1,
        ErrorClass::Invalid => 0,
    }
}

/// What a re-encryption of a message keeps: its caller context (without the reserved
/// `tenant`, `purpose` and signing-key entries) and its suite when keyhold may write it
/// (a committing one; otherwise the default).
pub fn reencryption_params(header: &Header) -> Result<(EncryptionContext, AlgorithmSuite), ServiceError> {
    let context = EncryptionContext::from_caller_pairs(
        header
            .context()
            .iter()
            .filter(|(k, _)| ![RESERVED_TENANT_KEY, RESERVED_PURPOSE_KEY, PUBLIC_KEY_CONTEXT_KEY].contains(k))
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .map_err(|e| ServiceError::ReservedContextKey(e.to_string()))?;
    let suite = if header.suite().is_committing() { header.suite() } else { AlgorithmSuite::default() };
    Ok((context, suite))
}

/// Refuses a message whose context names another tenant, or none.
pub fn check_tenant(tenant: &TenantId, header: &Header) -> Result<(), ServiceError> {
    match header.context_value(RESERVED_TENANT_KEY) {
        Some(t) if t == tenant.as_str() => Ok(()),
        found => Err(ServiceError::TenantMismatch { expected: tenant.clone(), found: found.map(str::to_owned) }),
    }
}

/// Everything that must match for a data key to be reused, hashed without allocating:
/// tenant, purpose, suite, key set and caller context, each length-prefixed.
fn partition_digest(params: &EncryptParams) -> [u8; 32] {
    let mut d = digest::Context::new(&digest::SHA256);
    let mut field = |bytes: &[u8]| {
        // Every field is far shorter than 4 GiB (ids, key references, a 64 KiB context).
        d.update(&(bytes.len() as u32).to_be_bytes());
        d.update(bytes);
    };
    field(params.tenant.as_str().as_bytes());
    field(params.purpose.as_str().as_bytes());
    field(&params.suite.id().to_be_bytes());
    field(&params.generation.to_be_bytes());
    field(&(params.keys.len() as u32).to_be_bytes());
    for k in params.keys.iter() {
        field(k.as_str().as_bytes());
    }
    for (k, v) in params.context.iter() {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(d.finish().as_ref());
    out
}

/// A fresh message id. Ids come from the system CSPRNG in batches of 128, kept per
/// thread: one CSPRNG call costs as much as a third of a small message's encryption.
fn message_id() -> Result<MessageId, ServiceError> {
    const BATCH: usize = 128 * 32;
    thread_local! {
        static POOL: RefCell<(Box<[u8; BATCH]>, usize)> = RefCell::new((Box::new([0; BATCH]), BATCH));
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (buf, used) = &mut *pool;
        if *used == BATCH {
            SystemRandom::new().fill(buf.as_mut_slice()).map_err(|_| ServiceError::Randomness)?;
            *used = 0;
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(buf.get(*used..*used + 32).ok_or(ServiceError::Randomness)?);
        *used += 32;
        Ok(MessageId(id))
    })
}

/// The decryption cache entry of an encrypted data key: tenant, the key, and the context it
/// was bound to, each length-prefixed.
fn edk_digest(tenant: &TenantId, edk: &EdkRef<'_>, context_bytes: &[u8]) -> [u8; 32] {
    let mut d = digest::Context::new(&digest::SHA256);
    for field in
        [tenant.as_str().as_bytes(), edk.provider_id.as_bytes(), edk.provider_info, edk.ciphertext, context_bytes]
    {
        d.update(&(field.len() as u32).to_be_bytes());
        d.update(field);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(d.finish().as_ref());
    out
}
