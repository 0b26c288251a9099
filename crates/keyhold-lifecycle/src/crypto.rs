//! Serving a tenant's encrypt and decrypt requests: the checks before any key is used
//! (service purposes, tenant state, the journal's health; the service core checks the
//! context's size and reserved keys), decryption that
//! asks only keys of the tenant's history, and the reaction to a refusal, which is a
//! probe, never a state change decided by the request.

use std::time::Instant;

use keyhold_core::{EncryptionContext, Purpose, RESERVED_PURPOSE_KEY, TenantId};
use keyhold_envelope::{AlgorithmSuite, Header};
use keyhold_provider::ErrorClass;
use keyhold_registry::{Purposes, TenantState};
use keyhold_service::{EncryptParams, KeyFailure, KeySet, ServiceError};

use crate::{Lifecycle, LifecycleError, TenantView};

/// The platform service a request comes from, as authenticated by the edge.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// Its registered name (recorded in usage counts).
    pub service: &'a str,
    /// The purposes it may use.
    pub purposes: &'a Purposes,
}

/// A decryption's result.
pub struct Decrypted {
    /// The authenticated header (purpose and caller context).
    pub header: Header,
    /// The purpose it was encrypted for (checked against the calling service's).
    pub purpose: Purpose,
}

impl Lifecycle {
    /// Encrypts `plaintext` for `tenant` under its active keys, appending the message to
    /// `out`.
    pub async fn encrypt(
        &self,
        caller: &Caller<'_>,
        tenant: TenantId,
        purpose: Purpose,
        context: EncryptionContext,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), LifecycleError> {
        self.encrypt_as(caller, tenant, purpose, context, AlgorithmSuite::default(), plaintext, out).await
    }

    /// [`Lifecycle::encrypt`] with algorithm suite `suite` (a committing one).
    #[allow(clippy::too_many_arguments, reason = "encrypt's arguments and the suite")]
    pub async fn encrypt_as(
        &self,
        caller: &Caller<'_>,
        tenant: TenantId,
        purpose: Purpose,
        context: EncryptionContext,
        suite: AlgorithmSuite,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), LifecycleError> {
        if !caller.purposes.allows(&purpose) {
            return Err(LifecycleError::Forbidden(format!("service {} may not use purpose {purpose}", caller.service)));
        }
        self.admit(caller, &tenant)?;
        // Reserved keys and the context's size are checked by the service before any key
        // is asked.
        self.journal.check(&tenant)?;
        let view = self.tenant_view(&tenant).await?;
        servable(&view)?;
        let params = EncryptParams {
            tenant,
            purpose,
            keys: view.active.clone(),
            context,
            suite,
            generation: view.tenant.dek_generation,
        };
        let tenant = &params.tenant;
        let started = Instant::now();
        match self.keyhold.encrypt_into(&params, plaintext, out).await {
            Ok(()) => {
                self.journal.usage().encrypted(tenant, &params.purpose, caller.service, self.now_ms(), 1);
                Ok(())
            }
            Err(e) => {
                if let ServiceError::Provider { key, source } = &e
                    && source.class() == ErrorClass::Revoked
                {
                    let failures = [KeyFailure { key: key.clone(), class: ErrorClass::Revoked }];
                    Box::pin(self.after_refusal(&view, &failures, started)).await;
                }
                Err(LifecycleError::from_service(tenant, e))
            }
        }
    }

    /// Decrypts `message` of `tenant`, appending the plaintext to `out`. The header is
    /// checked first (tenant, purpose), then only keys of the tenant's
    /// history are asked.
    pub async fn decrypt(
        &self,
        caller: &Caller<'_>,
        tenant: &TenantId,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Decrypted, LifecycleError> {
        let header = self.read_header(message)?;
        let purpose = message_purpose(caller, tenant, &header)?;
        self.journal.check(tenant)?;
        let view = self.tenant_view(tenant).await?;
        servable(&view)?;
        self.decrypt_checked(caller, &view, header, purpose, message, out).await
    }

    /// Decryption after the checks ([`Lifecycle::decrypt`]'s and re-encryption's): the
    /// header parsed and of `view`'s tenant, its purpose the caller's, the tenant servable.
    pub(crate) async fn decrypt_checked(
        &self,
        caller: &Caller<'_>,
        view: &TenantView,
        header: Header,
        purpose: Purpose,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Decrypted, LifecycleError> {
        let tenant = &view.tenant.id;
        self.admit(caller, tenant)?;
        let mut failures = Vec::new();
        let started = Instant::now();
        let result =
            self.keyhold.decrypt_among(tenant, header, message, &KeySet(&view.allowed), &mut failures, out).await;
        if failures.iter().any(|f| f.class == ErrorClass::Revoked)
            && Box::pin(self.after_refusal(view, &failures, started)).await
        {
            // The probe confirmed the revocation: nothing is answered for this tenant.
            out.clear();
            return Err(suspended(tenant, "its key refused"));
        }
        match result {
            Ok(header) => {
                self.journal.usage().decrypted(tenant, &purpose, caller.service, self.now_ms(), 1);
                Ok(Decrypted { header, purpose })
            }
            Err(keyhold_service::ServiceError::KeyNotInTenant) => {
                // Keys retired from the history are never asked: say so, not "unknown".
                let header = self.read_header(message)?;
                let retired: Vec<String> = self
                    .keyhold
                    .message_keys(&header)
                    .into_iter()
                    .filter(|k| view.retired.contains(k))
                    .map(|k| k.to_string())
                    .collect();
                if retired.is_empty() {
                    Err(LifecycleError::KeyNotInTenant(tenant.clone()))
                } else {
                    Err(LifecycleError::MessageKeyRetired { tenant: tenant.clone(), keys: retired.join(", ") })
                }
            }
            Err(e) => Err(LifecycleError::from_service(tenant, e)),
        }
    }

    /// A key refused on the request path. A refusal by an active key makes a probe of the
    /// tenant's active keys (coalesced: requests refused before a probe started wait for
    /// it and share its verdict); the probe alone decides. A refusal by a decrypt-only key
    /// changes nothing. Returns whether the tenant is suspended now.
    pub(crate) async fn after_refusal(&self, view: &TenantView, failures: &[KeyFailure], refused_at: Instant) -> bool {
        let by_active = failures.iter().any(|f| f.class == ErrorClass::Revoked && view.active.contains(&f.key));
        if !by_active {
            return false;
        }
        self.probe_now(&view.tenant.id, refused_at).await == Some(TenantState::Suspended)
    }
}

impl Lifecycle {
    /// A message's header, or why it is not one.
    /// Admits one crypto step of `caller` for `tenant` under the request-rate limits.
    pub(crate) fn admit(&self, caller: &Caller<'_>, tenant: &TenantId) -> Result<(), LifecycleError> {
        self.limiter
            .admit(caller.service, tenant.as_str())
            .map_err(|(limit, retry_after_s)| LifecycleError::RateLimited { limit, retry_after_s })
    }

    pub(crate) fn read_header(&self, message: &[u8]) -> Result<Header, LifecycleError> {
        keyhold_envelope::read_header(message, &self.keyhold.settings().decrypt)
            .map_err(|e| LifecycleError::MalformedCiphertext(format!("the ciphertext is not a valid message: {e}")))
    }
}

/// The checks on a message's header before any key is used: it is `tenant`'s, and its
/// purpose is one the caller may use. Returns the purpose.
pub(crate) fn message_purpose(
    caller: &Caller<'_>,
    tenant: &TenantId,
    header: &Header,
) -> Result<Purpose, LifecycleError> {
    keyhold_service::check_tenant(tenant, header).map_err(|_| LifecycleError::TenantMismatch(tenant.clone()))?;
    let purpose = header.context_value(RESERVED_PURPOSE_KEY).and_then(|p| Purpose::parse(p).ok()).ok_or_else(|| {
        LifecycleError::MalformedCiphertext("the ciphertext carries no purpose; keyhold did not write it".into())
    })?;
    if !caller.purposes.allows(&purpose) {
        return Err(LifecycleError::Forbidden(format!("service {} may not use purpose {purpose}", caller.service)));
    }
    Ok(purpose)
}

/// Whether the tenant may be served.
pub(crate) fn servable(view: &TenantView) -> Result<(), LifecycleError> {
    let t = &view.tenant;
    match t.state {
        TenantState::Active | TenantState::Degraded => Ok(()),
        TenantState::Pending => Err(LifecycleError::TenantPending(t.id.clone())),
        TenantState::Suspended => Err(suspended(&t.id, t.reason.as_deref().unwrap_or("access was revoked"))),
        TenantState::Deleted => Err(LifecycleError::TenantDeleted(t.id.clone())),
    }
}

fn suspended(tenant: &TenantId, reason: &str) -> LifecycleError {
    LifecycleError::TenantSuspended { tenant: tenant.clone(), reason: reason.to_owned() }
}
