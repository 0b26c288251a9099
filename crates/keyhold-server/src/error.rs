//! API errors: `{"error":{"code","message"}}` with a stable code, and the HTTP status
//! taken from the variant (never from message text). Client faults are 4xx; a failing
//! dependency (registry, key service) is 503 and retryable; 500 is only for keyhold's own
//! bugs.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyhold_lifecycle::LifecycleError;
use keyhold_provider::{ErrorClass, ProviderError};
use keyhold_registry::RegistryError;
use serde::Serialize;
use utoipa::ToSchema;

/// An API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// What happened and what to do, without secrets.
    pub message: String,
    /// Seconds the client should wait before retrying (`Retry-After`), for overload and
    /// rate limits.
    pub retry_after_s: Option<u32>,
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: `invalid_request`, `unauthenticated`, `forbidden`, `not_found`,
    /// `method_not_allowed`, `tenant_not_found`, `tenant_exists`, `tenant_not_active`,
    /// `tenant_suspended`, `tenant_deleted`, `tenant_mismatch`, `malformed_ciphertext`,
    /// `key_not_in_tenant`, `key_in_use`, `key_retired`, `conflict`, `key_unavailable`,
    /// `key_revoked`, `key_misconfigured`, `not_configured`, `audit_broken`,
    /// `payload_too_large`, `unsupported_media_type`, `request_timeout`, `overloaded`,
    /// `audit_unavailable`, `registry_unavailable`, `shred_incomplete`, `internal`. Each
    /// operation's answers in the document name the codes it can give.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `code`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_s: None }
    }

    /// 503 `overloaded` with `Retry-After`: keyhold is at its connection or in-flight
    /// request limit.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            retry_after_s: Some(crate::conn::RETRY_AFTER_S),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        }
    }

    /// 429 `rate_limited` with `Retry-After`: a per-tenant or per-service limit.
    pub fn rate_limited(message: impl Into<String>, retry_after_s: u32) -> Self {
        Self {
            retry_after_s: Some(retry_after_s.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// 408 `request_timeout`: the request body did not arrive in time.
    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
    }

    /// 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `tenant_not_found`.
    pub fn tenant_not_found(tenant: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "tenant_not_found", format!("tenant {tenant} does not exist"))
    }

    /// 500 `internal`, with a generic body (the cause goes to the log).
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "keyhold failed; retry, or tell the operator")
    }

    /// 404 for an unknown route.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see /openapi.json")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(s));
        }
        resp
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::TenantExists(t) => {
                Self::new(StatusCode::CONFLICT, "tenant_exists", format!("tenant {t} already exists"))
            }
            RegistryError::TenantNotFound(t) => Self::tenant_not_found(t.as_str()),
            RegistryError::TenantDeleted(t) => {
                Self::new(StatusCode::GONE, "tenant_deleted", format!("tenant {t} was deleted"))
            }
            RegistryError::ServiceExists(s) => {
                Self::new(StatusCode::CONFLICT, "service_exists", format!("service {s:?} is already registered"))
            }
            RegistryError::ServiceNotFound(s) => {
                Self::new(StatusCode::NOT_FOUND, "service_not_found", format!("no service named {s:?} is registered"))
            }
            // The database's own text stays in the log: it can name tables and values.
            _ => Self::new(StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable", "the registry failed; retry"),
        }
    }
}

impl From<crate::services::ServiceError> for ApiError {
    fn from(e: crate::services::ServiceError) -> Self {
        match e {
            crate::services::ServiceError::Registry(r) => r.into(),
            crate::services::ServiceError::KeyGeneration => Self::internal(),
            other => Self::invalid(other.to_string()),
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        use LifecycleError as L;
        let message = e.to_string();
        let (status, code) = match &e {
            L::RateLimited { retry_after_s, .. } => return Self::rate_limited(message, *retry_after_s),
            L::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            L::MalformedCiphertext(_) => (StatusCode::BAD_REQUEST, "malformed_ciphertext"),
            L::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            L::TenantNotFound(_) => (StatusCode::NOT_FOUND, "tenant_not_found"),
            L::TenantExists(_) => (StatusCode::CONFLICT, "tenant_exists"),
            L::TenantDeleted(_) => (StatusCode::GONE, "tenant_deleted"),
            L::TenantPending(_) => (StatusCode::CONFLICT, "tenant_not_active"),
            L::TenantSuspended { .. } => (StatusCode::FORBIDDEN, "tenant_suspended"),
            L::TenantMismatch(_) => (StatusCode::FORBIDDEN, "tenant_mismatch"),
            L::KeyNotInTenant(_) => (StatusCode::BAD_REQUEST, "key_not_in_tenant"),
            L::KeyInUse(_) => (StatusCode::CONFLICT, "key_in_use"),
            L::KeyRetired(_) => (StatusCode::CONFLICT, "key_retired"),
            L::MessageKeyRetired { .. } => (StatusCode::CONFLICT, "key_retired"),
            L::KeyActive(_) => (StatusCode::CONFLICT, "key_active"),
            L::NotByok(..) => (StatusCode::CONFLICT, "tenant_not_byok"),
            L::SetupFixed(_) => (StatusCode::CONFLICT, "setup_fixed"),
            L::KeyNotFound(_) => (StatusCode::NOT_FOUND, "key_not_found"),
            L::KeyProtectsData { .. } => (StatusCode::CONFLICT, "key_protects_data"),
            L::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            L::NotConfigured(_) => (StatusCode::CONFLICT, "not_configured"),
            L::AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
            L::Provider { source, .. } => return provider_error(source),
            L::NoProviderFor(_) => (StatusCode::CONFLICT, "key_misconfigured"),
            L::ShredIncomplete { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "shred_incomplete"),
            L::Registry(_) => {
                return Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "registry_unavailable",
                    "the registry failed or is unreachable; retry",
                );
            }
            // keyhold's own failures: the body stays generic, the chain is in the message
            // only for operators' logs.
            _ => {
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "keyhold failed; retry, or tell the operator",
                );
            }
        };
        Self::new(status, code, message)
    }
}

/// A key provider's refusal or failure as an API error.
pub fn provider_error(e: &ProviderError) -> ApiError {
    match e.class() {
        ErrorClass::Revoked => ApiError::new(
            StatusCode::FORBIDDEN,
            "key_revoked",
            format!("the tenant's key refused ({}): {e}; the tenant must restore access", e.code()),
        ),
        ErrorClass::Misconfigured => ApiError::new(
            StatusCode::CONFLICT,
            "key_misconfigured",
            format!("the tenant's key cannot be used ({}): {e}", e.code()),
        ),
        ErrorClass::Retryable if matches!(e, ProviderError::BudgetExceeded { .. }) => {
            let retry = match e {
                ProviderError::BudgetExceeded { retry_after_s } => *retry_after_s,
                _ => 1,
            };
            ApiError::rate_limited(e.to_string(), retry)
        }
        ErrorClass::Retryable if matches!(e, ProviderError::AuditUnavailable) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the audit trail could not record this key use; the request was refused and returned nothing, retry",
        ),
        ErrorClass::Retryable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "key_unavailable",
            format!("the key service is unavailable ({}); retry: {e}", e.code()),
        ),
        ErrorClass::Invalid => ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_ciphertext",
            format!("the ciphertext's data key does not unwrap: {e}"),
        ),
    }
}

impl ApiError {
    /// 400 `malformed_ciphertext`.
    pub fn invalid_ciphertext(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_ciphertext", message)
    }
}
