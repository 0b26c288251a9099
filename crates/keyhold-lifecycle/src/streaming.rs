//! Serving large objects as streams: the same checks as the one-shot paths, done before
//! the first byte is answered, then materials (to encrypt) or a body decryptor (to
//! decrypt) the caller drives chunk by chunk; counts are recorded when a stream ends.

use keyhold_core::{EncryptionContext, Purpose, TenantId};
use keyhold_envelope::{AlgorithmSuite, BodyDecryptor, Header};
use keyhold_provider::ErrorClass;
use keyhold_service::{EncryptParams, KeySet, Materials};
use std::sync::Arc;
use std::time::Instant;

use crate::crypto::{message_purpose, servable};
use crate::{Caller, Lifecycle, LifecycleError};

/// A checked stream decryption: the body decryptor and the message's purpose.
pub struct StreamDecryption {
    /// Drives the message body.
    pub body: BodyDecryptor,
    /// The message's purpose.
    pub purpose: Purpose,
}

impl Lifecycle {
    /// Materials to encrypt a stream of `tenant` for `purpose` under its active keys
    /// (the checks of [`Lifecycle::encrypt`]); the caller reports the stream's end with
    /// [`Lifecycle::stream_encrypted`].
    pub async fn stream_materials(
        &self,
        caller: &Caller<'_>,
        tenant: &TenantId,
        purpose: Purpose,
        context: EncryptionContext,
        suite: AlgorithmSuite,
    ) -> Result<Arc<Materials>, LifecycleError> {
        if !caller.purposes.allows(&purpose) {
            return Err(LifecycleError::Forbidden(format!("service {} may not use purpose {purpose}", caller.service)));
        }
        self.admit(caller, tenant)?;
        self.journal.check(tenant)?;
        let view = self.tenant_view(tenant).await?;
        servable(&view)?;
        let params = EncryptParams {
            tenant: tenant.clone(),
            purpose,
            keys: view.active.clone(),
            context,
            suite,
            generation: view.tenant.dek_generation,
        };
        self.keyhold.encryption_materials(&params, 0).await.map_err(|e| LifecycleError::from_service(tenant, e))
    }

    /// Counts a finished encrypted stream of `bytes` plaintext bytes.
    pub fn stream_encrypted(
        &self,
        caller: &Caller<'_>,
        tenant: &TenantId,
        purpose: &Purpose,
        m: &Materials,
        bytes: u64,
    ) {
        m.record_use(bytes);
        self.journal.usage().encrypted(tenant, purpose, caller.service, self.now_ms(), 1);
    }

    /// A body decryptor for a message of `tenant` whose header was read (the checks of
    /// [`Lifecycle::decrypt`], before any key is used).
    pub async fn stream_decryptor(
        &self,
        caller: &Caller<'_>,
        tenant: &TenantId,
        header: Header,
    ) -> Result<StreamDecryption, LifecycleError> {
        let purpose = message_purpose(caller, tenant, &header)?;
        self.admit(caller, tenant)?;
        self.journal.check(tenant)?;
        let view = self.tenant_view(tenant).await?;
        servable(&view)?;
        let mut failures = Vec::new();
        let started = Instant::now();
        let result = self.keyhold.body_decryptor(tenant, header, &KeySet(&view.allowed), &mut failures).await;
        if failures.iter().any(|f| f.class == ErrorClass::Revoked)
            && self.after_refusal(&view, &failures, started).await
        {
            return Err(LifecycleError::TenantSuspended { tenant: tenant.clone(), reason: "its key refused".into() });
        }
        let body = result.map_err(|e| LifecycleError::from_service(tenant, e))?;
        self.journal.usage().decrypted(tenant, &purpose, caller.service, self.now_ms(), 1);
        Ok(StreamDecryption { body, purpose })
    }

    /// Whether a message with this header is under the tenant's active keys already (a
    /// stream re-encryption then answers "unchanged"). The tenant must be servable, as for
    /// any re-encryption.
    pub async fn under_active_keys(&self, tenant: &TenantId, header: &Header) -> Result<bool, LifecycleError> {
        self.journal.check(tenant)?;
        let view = self.tenant_view(tenant).await?;
        servable(&view)?;
        let keys = self.keyhold.message_keys(header);
        Ok(!view.active.is_empty()
            && keys.iter().all(|k| view.active.contains(k))
            && view.active.iter().all(|k| keys.contains(k)))
    }
}
