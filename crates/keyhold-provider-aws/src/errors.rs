//! From `aws-sdk-kms` errors to [`ProviderError`] kinds.
//!
//! The service's error code decides (never its message, except to tell a key pending
//! deletion from other invalid states, which share `KMSInvalidStateException`):
//! revoked for `DisabledException`, `KMSInvalidStateException`, `AccessDeniedException`,
//! `NotFoundException`; misconfigured for `IncorrectKeyException`,
//! `InvalidKeyUsageException` and other wrong-key answers; retryable for throttling, any
//! 5xx, timeouts and connection failures (after the SDK's own retries are spent).

use std::error::Error as StdError;

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::operation::RequestId;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use keyhold_core::KeyRef;
use keyhold_provider::ProviderError;

/// Maps a failed KMS call on `key` to the provider error kind a caller acts on.
pub fn map_sdk_error<E>(key: &KeyRef, err: SdkError<E, HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    if let Some(failure) = credential_failure(key, &err) {
        return failure;
    }
    match &err {
        SdkError::TimeoutError(_) => unavailable("Timeout", "the call to AWS KMS timed out"),
        SdkError::DispatchFailure(d) if d.is_timeout() => unavailable("Timeout", "the call to AWS KMS timed out"),
        SdkError::DispatchFailure(_) => {
            unavailable("ConnectionError", &format!("AWS KMS could not be reached: {}", chain(&err)))
        }
        SdkError::ResponseError(r) => unavailable(
            "ResponseError",
            &format!("AWS KMS sent an unreadable response (HTTP {})", r.raw().status().as_u16()),
        ),
        SdkError::ServiceError(s) => from_code(
            key,
            s.err().code().unwrap_or("Unknown"),
            s.err().message().unwrap_or("").to_owned(),
            s.raw().status().as_u16(),
            s.err().meta().request_id(),
        ),
        SdkError::ConstructionFailure(_) => {
            ProviderError::InvalidRequest(format!("the KMS request could not be built: {}", chain(&err)))
        }
        _ => unavailable("Unknown", &chain(&err)),
    }
}

fn from_code(key: &KeyRef, code: &str, message: String, status: u16, request_id: Option<&str>) -> ProviderError {
    let key = key.clone();
    let with_id = |m: &str| match request_id {
        Some(id) => format!("{m} (request id {id})"),
        None => m.to_owned(),
    };
    match code {
        "DisabledException" => ProviderError::KeyDisabled { key },
        "KMSInvalidStateException" if message.to_ascii_lowercase().contains("pending deletion") => {
            ProviderError::KeyPendingDeletion { key }
        }
        "KMSInvalidStateException" => ProviderError::KeyUnusable { key, message },
        "NotFoundException" => ProviderError::KeyNotFound { key },
        "AccessDeniedException" | "AccessDenied" => ProviderError::AccessDenied { key, message: with_id(&message) },
        "IncorrectKeyException"
        | "InvalidKeyUsageException"
        | "UnsupportedOperationException"
        | "KMSInvalidSignatureException"
        | "CustomKeyStoreInvalidStateException" => ProviderError::Misconfigured { key, code: code.to_owned(), message },
        "InvalidCiphertextException" => ProviderError::InvalidCiphertext { key, reason: message },
        "ThrottlingException"
        | "Throttling"
        | "LimitExceededException"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "RequestTimeout"
        | "RequestTimeoutException" => unavailable(code, &with_id(&message)),
        _ if status >= 500 || status == 429 => unavailable(code, &with_id(&format!("HTTP {status}: {message}"))),
        _ => ProviderError::InvalidRequest(with_id(&format!("{code}: {message}"))),
    }
}

fn unavailable(code: &str, message: &str) -> ProviderError {
    ProviderError::Unavailable { code: code.to_owned(), message: message.to_owned() }
}

/// A failure to obtain credentials (in BYOK mode: STS `AssumeRole` refused or failed),
/// found in the error's causes. STS refusing the role (`AccessDenied`: the tenant removed
/// the role, its trust or the ExternalId) is a revocation of the platform's access to
/// `key`; anything else about credentials is retryable.
fn credential_failure(key: &KeyRef, err: &(dyn StdError + 'static)) -> Option<ProviderError> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    let mut in_credentials = false;
    while let Some(e) = cur {
        in_credentials |= e.downcast_ref::<CredentialsError>().is_some();
        if in_credentials && let Some(sts) = e.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>() {
            let message = format!("STS AssumeRole into the tenant's role failed: {}", chain(sts));
            return Some(match sts.code() {
                Some("AccessDenied" | "AccessDeniedException") => {
                    ProviderError::AccessDenied { key: key.clone(), message }
                }
                Some(code) => unavailable(code, &message),
                None => unavailable("CredentialsError", &message),
            });
        }
        cur = e.source();
    }
    in_credentials
        .then(|| unavailable("CredentialsError", &format!("no AWS credentials could be obtained: {}", chain(err))))
}

/// The error and its causes on one line, for messages (no secrets are in SDK errors).
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}
