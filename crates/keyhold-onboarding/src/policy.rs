//! The key policy a tenant applies to its KMS key in each region of its realm (CMK
//! mode): its own account keeps full administration; the platform principal may describe
//! the key, and may use it for data keys only under the tenant's own encryption context.
//!
//! Statement ids are stable: validation names them when it finds one missing.

use keyhold_core::TenantId;
use serde_json::{Value, json};

/// Sid of the statement that keeps the tenant's account in control of its key.
pub const SID_ADMIN: &str = "TenantAccountAdministersKey";
/// Sid of the statement that lets the platform describe the key.
pub const SID_DESCRIBE: &str = "KeyholdPlatformDescribesKey";
/// Sid of the statement that lets the platform use the key for this tenant's data.
pub const SID_USE: &str = "KeyholdPlatformUsesKeyForTenant";

/// The KMS actions the platform needs for data keys, granted only under the tenant's
/// encryption context.
pub const USE_ACTIONS: [&str; 4] = ["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*"];

/// Placeholder for the tenant's account id when the platform does not know it.
pub const ACCOUNT_PLACEHOLDER: &str = "<TENANT_ACCOUNT_ID>";

/// Inputs of a key policy.
#[derive(Debug, Clone)]
pub struct PolicyParams<'a> {
    /// The tenant whose data the key protects.
    pub tenant: &'a TenantId,
    /// The IAM principal keyhold runs as (role or user ARN, or an account root).
    pub platform_principal: &'a str,
    /// The tenant's 12-digit AWS account id, if known; otherwise a placeholder to fill in.
    pub tenant_account: Option<&'a str>,
}

/// Why a policy could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The platform principal is not an IAM ARN.
    #[error("platform principal {0:?} is not an IAM principal ARN such as arn:aws:iam::111122223333:role/keyhold")]
    BadPrincipal(String),
    /// The tenant account is not 12 digits.
    #[error("tenant account {0:?} is not a 12-digit AWS account id")]
    BadAccount(String),
}

/// The key policy document.
pub fn key_policy(params: &PolicyParams<'_>) -> Result<Value, PolicyError> {
    let partition = principal_partition(params.platform_principal)
        .ok_or_else(|| PolicyError::BadPrincipal(params.platform_principal.to_owned()))?;
    let account = match params.tenant_account {
        Some(a) if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) => a,
        Some(a) => return Err(PolicyError::BadAccount(a.to_owned())),
        None => ACCOUNT_PLACEHOLDER,
    };
    Ok(json!({
        "Version": "2012-10-17",
        "Id": format!("keyhold-tenant-{}", params.tenant),
        "Statement": [
            {
                "Sid": SID_ADMIN,
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:{partition}:iam::{account}:root") },
                "Action": "kms:*",
                "Resource": "*"
            },
            {
                "Sid": SID_DESCRIBE,
                "Effect": "Allow",
                "Principal": { "AWS": params.platform_principal },
                "Action": "kms:DescribeKey",
                "Resource": "*"
            },
            {
                "Sid": SID_USE,
                "Effect": "Allow",
                "Principal": { "AWS": params.platform_principal },
                "Action": USE_ACTIONS,
                "Resource": "*",
                "Condition": {
                    "StringEquals": { "kms:EncryptionContext:tenant": params.tenant.as_str() }
                }
            }
        ]
    }))
}

/// The partition of an IAM principal ARN (`arn:<partition>:iam::<account>:<root|role/..|user/..>`).
pub(crate) fn principal_partition(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    let resource_ok = resource == "root"
        || resource
            .strip_prefix("role/")
            .or_else(|| resource.strip_prefix("user/"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b)));
    (account_ok && resource_ok && matches!(partition, "aws" | "aws-cn" | "aws-us-gov")).then_some(partition)
}
