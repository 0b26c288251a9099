//! Tenant root keys in AWS KMS, through `aws-sdk-kms`.
//!
//! [`AwsKms`] is a [`KeyProvider`]: `generate_data_key` calls `GenerateDataKey` on the home
//! region's key, `wrap` calls `Encrypt` on each further region's key, `unwrap` calls
//! `Decrypt` naming the key, and the KMS `EncryptionContext` is always the message's
//! encryption context. Encrypted data keys are written exactly as the AWS Encryption SDK's
//! KMS keyring writes them: provider id `aws-kms`, provider info the key ARN KMS answered
//! with, ciphertext the KMS `CiphertextBlob`, so stock SDKs decrypt keyhold's messages and
//! the other way round.
//!
//! Credentials come from the standard AWS chain (environment, profiles, container and
//! instance roles), or, in BYOK mode ([`AssumeRole`]), from STS `AssumeRole` into the
//! tenant's role with the tenant's ExternalId; the SDK's identity cache keeps those
//! credentials and refreshes them before they expire. The standard configuration is
//! honoured, including `AWS_ENDPOINT_URL_KMS` and `AWS_ENDPOINT_URL_STS`. One client per
//! region, each with the timeouts and the retry policy (standard mode: exponential backoff
//! with full jitter) of [`AwsKmsConfig`].
//!
//! [`TenantRouter`] serves many tenants at once, each BYOK tenant through its own assumed
//! role.
//!
//! Plaintext data keys from KMS responses go straight into zeroizing [`DataKey`]s. The SDK
//! itself keeps transient copies it does not zeroize: the response body it parses and,
//! for `Encrypt`, the request it serializes; those buffers are freed when the call ends.
//!
//! Errors map to [`ProviderError`] kinds in [`errors`]: revoked (disabled, pending
//! deletion, not found, access denied), misconfigured (wrong key, wrong usage), retryable
//! (throttling, 5xx, timeouts, connection failures).

#![forbid(unsafe_code)]

mod errors;
mod tenants;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeyState as AwsKeyState, OriginType};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use keyhold_core::{DataKey, EncryptedDataKey, EncryptionContext, KeyArn, KeyRef, Region};
use keyhold_provider::{KeyDescription, KeyOrigin, KeyProvider, KeyState, ProviderError, Rotation};

pub use aws_config::SdkConfig as AwsSdkConfig;
pub use errors::map_sdk_error;
pub use tenants::TenantRouter;

/// The provider id the AWS KMS keyring writes into each encrypted data key.
pub const PROVIDER_ID: &str = "aws-kms";

/// Timeouts and retries for every KMS (and STS) call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsKmsConfig {
    /// Establishing a connection.
    pub connect_timeout: Duration,
    /// One attempt of one call, connection included.
    pub attempt_timeout: Duration,
    /// One call, all attempts and backoff included.
    pub operation_timeout: Duration,
    /// Attempts per call (1 = no retry).
    pub max_attempts: u32,
    /// First retry delay before jitter; doubles per attempt.
    pub initial_backoff: Duration,
    /// Upper bound of a retry delay.
    pub max_backoff: Duration,
}

impl Default for AwsKmsConfig {
    /// 2 s to connect, 5 s per attempt, 15 s per call, 4 attempts, backoff from 50 ms up to
    /// 2 s: a revoked or unreachable KMS is reported in seconds, not minutes.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl AwsKmsConfig {
    fn retry(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts.max(1))
            .with_initial_backoff(self.initial_backoff)
            .with_max_backoff(self.max_backoff)
    }

    fn timeouts(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }
}

/// BYOK mode: keyhold reaches the tenant's keys through a role in the tenant's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    /// The tenant's role (`arn:aws:iam::<account>:role/<name>`).
    pub role_arn: String,
    /// The tenant's ExternalId (`keyhold-<tenant>` in the generated template).
    pub external_id: String,
    /// The session name, visible in the tenant's CloudTrail.
    pub session_name: String,
}

impl AssumeRole {
    /// The role assumption for `tenant`: the one naming rule for session names (the
    /// tenant id, `:` replaced, after `keyhold-`), shared by the server and the CLI.
    pub fn for_tenant(tenant: &keyhold_core::TenantId, role_arn: &str, external_id: &str) -> Self {
        Self {
            role_arn: role_arn.to_owned(),
            external_id: external_id.to_owned(),
            session_name: format!("keyhold-{}", tenant.as_str().replace(':', "-")),
        }
    }
}

/// AWS KMS as a [`KeyProvider`].
pub struct AwsKms {
    sdk: SdkConfig,
    config: AwsKmsConfig,
    clients: Mutex<HashMap<Region, Client>>,
}

impl AwsKms {
    /// Loads the standard AWS configuration (environment, profiles, endpoint overrides) and
    /// uses its credential chain.
    pub async fn from_env(config: AwsKmsConfig) -> Self {
        Self::new(&load_sdk_config(&config).await, config)
    }

    /// Loads the standard AWS configuration, then assumes `role` through STS; the
    /// assumed-role credentials are cached and refreshed before they expire.
    pub async fn assume_role(role: &AssumeRole, config: AwsKmsConfig) -> Self {
        let base = load_sdk_config(&config).await;
        Self::assume_role_with(&base, role, config).await
    }

    /// As [`AwsKms::assume_role`], from an explicit base configuration (whose credentials
    /// call STS).
    pub async fn assume_role_with(base: &SdkConfig, role: &AssumeRole, config: AwsKmsConfig) -> Self {
        let mut base = base.clone();
        if base.region().is_none() {
            // STS needs a region to sign for; the global partition endpoint's home is us-east-1.
            base = base.into_builder().region(aws_config::Region::from_static("us-east-1")).build();
        }
        let provider = aws_config::sts::AssumeRoleProvider::builder(role.role_arn.clone())
            .external_id(role.external_id.clone())
            .session_name(role.session_name.clone())
            .configure(&base)
            .build()
            .await;
        let sdk = base
            .into_builder()
            .credentials_provider(aws_sdk_kms::config::SharedCredentialsProvider::new(provider))
            .build();
        Self::new(&sdk, config)
    }

    /// A provider over an explicit configuration (credentials, endpoint); the region of
    /// each call is the key ARN's.
    pub fn new(sdk: &SdkConfig, config: AwsKmsConfig) -> Self {
        Self { sdk: sdk.clone(), config, clients: Mutex::new(HashMap::new()) }
    }

    /// The client for `region` (created on first use, then shared).
    pub fn client(&self, region: &Region) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        clients
            .entry(region.clone())
            .or_insert_with(|| {
                let conf = aws_sdk_kms::config::Builder::from(&self.sdk)
                    .region(aws_sdk_kms::config::Region::new(region.as_str().to_owned()))
                    .retry_config(self.config.retry())
                    .timeout_config(self.config.timeouts())
                    .build();
                Client::from_conf(conf)
            })
            .clone()
    }

    fn arn(&self, key: &KeyRef) -> Result<KeyArn, ProviderError> {
        parse_arn(key.as_str())
    }

    fn client_for(&self, key: &KeyRef) -> Result<(KeyArn, Client), ProviderError> {
        let arn = self.arn(key)?;
        let client = self.client(arn.region());
        Ok((arn, client))
    }
}

/// The standard AWS configuration with keyhold's timeouts and retries. The default region
/// (used only for STS; KMS calls go to each key ARN's region) comes from the environment
/// or the profile, else `us-east-1`: loading never waits for the instance metadata
/// service, so a machine without AWS starts at once. Credentials resolve on first use.
pub async fn load_sdk_config(config: &AwsKmsConfig) -> SdkConfig {
    let region = aws_config::meta::region::RegionProviderChain::first_try(
        aws_config::environment::EnvironmentVariableRegionProvider::new(),
    )
    .or_else(aws_config::profile::ProfileFileRegionProvider::new())
    .or_else(aws_config::Region::from_static("us-east-1"));
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(config.retry())
        .timeout_config(config.timeouts())
        .load()
        .await
}

fn parse_arn(s: &str) -> Result<KeyArn, ProviderError> {
    let partition = s.split(':').nth(1).unwrap_or("aws");
    KeyArn::parse_in(s, partition).map_err(|e| ProviderError::InvalidRequest(e.to_string()))
}

fn context_map(context: &EncryptionContext) -> HashMap<String, String> {
    context.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// The key ARN KMS answered with, checked: the keyring writes it as provider info, so it
/// must be a key ARN (not an alias) and, for `Decrypt`, the key that was asked for.
fn answered_arn(key: &KeyRef, answered: Option<&str>) -> Result<KeyArn, ProviderError> {
    let text = answered.ok_or_else(|| unexpected(key, "the response names no key"))?;
    let arn = parse_arn(text).map_err(|_| unexpected(key, &format!("the response names {text:?}, not a key ARN")))?;
    match arn.resource() {
        keyhold_core::KeyResource::Key(_) => Ok(arn),
        keyhold_core::KeyResource::Alias(_) => Err(unexpected(key, "the response names an alias, not a key")),
    }
}

fn unexpected(key: &KeyRef, what: &str) -> ProviderError {
    ProviderError::Unavailable { code: "UnexpectedResponse".into(), message: format!("KMS call on {key}: {what}") }
}

/// Takes the plaintext out of a response blob into a zeroizing [`DataKey`], checking its
/// length.
fn data_key(key: &KeyRef, blob: Option<Blob>, len: usize) -> Result<DataKey, ProviderError> {
    let blob = blob.ok_or_else(|| unexpected(key, "the response has no plaintext"))?;
    let dk = DataKey::from_vec(blob.into_inner());
    if dk.len() != len {
        return Err(unexpected(key, &format!("the plaintext is {} bytes, not {len}", dk.len())));
    }
    Ok(dk)
}

#[async_trait]
impl KeyProvider for AwsKms {
    fn name(&self) -> &'static str {
        PROVIDER_ID
    }

    fn accepts(&self, key: &KeyRef) -> bool {
        key.as_str().starts_with("arn:")
    }

    fn key_for(&self, edk: &EncryptedDataKey) -> Option<KeyRef> {
        if edk.provider_id != PROVIDER_ID {
            return None;
        }
        let text = std::str::from_utf8(&edk.provider_info).ok()?;
        parse_arn(text).ok()?;
        KeyRef::parse(text).ok()
    }

    fn region_of(&self, key: &KeyRef) -> Option<Region> {
        parse_arn(key.as_str()).ok().map(|a| a.region().clone())
    }

    fn wraps_in_region(&self, provider_id: &str, provider_info: &[u8], region: &Region) -> bool {
        // arn:<partition>:kms:<region>:...
        provider_id == PROVIDER_ID
            && provider_info.split(|b| *b == b':').nth(3).is_some_and(|r| r == region.as_str().as_bytes())
    }

    async fn generate_data_key(
        &self,
        key: &KeyRef,
        len: usize,
        context: &EncryptionContext,
    ) -> Result<(DataKey, EncryptedDataKey), ProviderError> {
        let (arn, client) = self.client_for(key)?;
        let bytes =
            i32::try_from(len).map_err(|_| ProviderError::InvalidRequest(format!("{len} bytes is too long")))?;
        let mut out = client
            .generate_data_key()
            .key_id(arn.as_str())
            .number_of_bytes(bytes)
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| map_sdk_error(key, e))?;
        let dk = data_key(key, out.plaintext.take(), len)?;
        let answered = answered_arn(key, out.key_id())?;
        let ciphertext = out.ciphertext_blob.take().ok_or_else(|| unexpected(key, "the response has no ciphertext"))?;
        Ok((dk, edk(&answered, ciphertext)))
    }

    async fn wrap(
        &self,
        key: &KeyRef,
        data_key: &DataKey,
        context: &EncryptionContext,
    ) -> Result<EncryptedDataKey, ProviderError> {
        let (arn, client) = self.client_for(key)?;
        // The SDK takes its own copy of the data key into the request (and its base64 body),
        // which it does not zeroize; see the crate docs.
        let mut out = client
            .encrypt()
            .key_id(arn.as_str())
            .plaintext(Blob::new(data_key.expose().to_vec()))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| map_sdk_error(key, e))?;
        let answered = answered_arn(key, out.key_id())?;
        let ciphertext = out.ciphertext_blob.take().ok_or_else(|| unexpected(key, "the response has no ciphertext"))?;
        Ok(edk(&answered, ciphertext))
    }

    async fn unwrap(&self, edk: &EncryptedDataKey, context: &EncryptionContext) -> Result<DataKey, ProviderError> {
        let key = self.key_for(edk).ok_or_else(|| {
            ProviderError::InvalidRequest("the encrypted data key was not written by the AWS KMS keyring".into())
        })?;
        let (arn, client) = self.client_for(&key)?;
        let mut out = client
            .decrypt()
            .key_id(arn.as_str())
            .ciphertext_blob(Blob::new(edk.ciphertext.clone()))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| map_sdk_error(&key, e))?;
        let plaintext = out.plaintext.take();
        if out.key_id() != Some(arn.as_str()) {
            // Drop the plaintext unread: KMS decrypted with another key than the one named.
            drop(plaintext.map(|b| DataKey::from_vec(b.into_inner())));
            return Err(ProviderError::InvalidCiphertext {
                key: key.clone(),
                reason: format!("KMS decrypted it with {:?}, not the key named in the message", out.key_id()),
            });
        }
        let len = plaintext.as_ref().map_or(0, |b| b.as_ref().len());
        data_key(&key, plaintext, len)
    }

    async fn describe(&self, key: &KeyRef) -> Result<KeyDescription, ProviderError> {
        let (arn, client) = self.client_for(key)?;
        let out = client.describe_key().key_id(arn.as_str()).send().await.map_err(|e| map_sdk_error(key, e))?;
        let m = out.key_metadata().ok_or_else(|| unexpected(key, "the response has no key metadata"))?;
        let region =
            m.arn().and_then(|a| parse_arn(a).ok()).map_or_else(|| arn.region().clone(), |a| a.region().clone());
        let state = match m.key_state() {
            Some(AwsKeyState::Enabled) => KeyState::Enabled,
            Some(AwsKeyState::Disabled) => KeyState::Disabled,
            Some(AwsKeyState::PendingDeletion | AwsKeyState::PendingReplicaDeletion) => KeyState::PendingDeletion {
                deletion_at_ms: m.deletion_date().map_or(0, |d| u64::try_from(d.to_millis().unwrap_or(0)).unwrap_or(0)),
            },
            Some(AwsKeyState::PendingImport) => KeyState::PendingImport,
            _ => KeyState::Unavailable,
        };
        Ok(KeyDescription {
            key: key.clone(),
            region,
            state,
            created_ms: m.creation_date().map_or(0, |d| u64::try_from(d.to_millis().unwrap_or(0)).unwrap_or(0)),
            origin: match m.origin() {
                Some(OriginType::External) => KeyOrigin::External,
                Some(OriginType::AwsCloudhsm) => KeyOrigin::CloudHsm,
                Some(OriginType::ExternalKeyStore) => KeyOrigin::ExternalKeyStore,
                _ => KeyOrigin::Provider,
            },
            material_versions: None,
            description: m.description().unwrap_or_default().to_owned(),
            // DescribeKey may omit both (moto does for keys created without them): they
            // then have AWS's defaults, and a symmetric default key can only be
            // ENCRYPT_DECRYPT.
            spec: m
                .key_spec()
                .map_or_else(|| keyhold_provider::SYMMETRIC_DEFAULT.to_owned(), |s| s.as_str().to_owned()),
            usage: m
                .key_usage()
                .map_or_else(|| keyhold_provider::ENCRYPT_DECRYPT.to_owned(), |u| u.as_str().to_owned()),
            multi_region: m.multi_region().unwrap_or(false),
        })
    }

    async fn rotation(&self, key: &KeyRef) -> Result<Rotation, ProviderError> {
        let (arn, client) = self.client_for(key)?;
        let out =
            client.get_key_rotation_status().key_id(arn.as_str()).send().await.map_err(|e| map_sdk_error(key, e))?;
        Ok(if out.key_rotation_enabled() {
            Rotation::Enabled { period_days: out.rotation_period_in_days().and_then(|d| u32::try_from(d).ok()) }
        } else {
            Rotation::Disabled
        })
    }

    async fn key_policy(&self, key: &KeyRef) -> Result<Option<String>, ProviderError> {
        let (arn, client) = self.client_for(key)?;
        let out = client
            .get_key_policy()
            .key_id(arn.as_str())
            .policy_name("default")
            .send()
            .await
            .map_err(|e| map_sdk_error(key, e))?;
        Ok(out.policy().map(str::to_owned))
    }
}

fn edk(answered: &KeyArn, ciphertext: Blob) -> EncryptedDataKey {
    EncryptedDataKey {
        provider_id: PROVIDER_ID.to_owned(),
        provider_info: answered.as_str().as_bytes().to_vec(),
        ciphertext: ciphertext.into_inner(),
    }
}
