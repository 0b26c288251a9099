//! CloudFormation templates a tenant deploys in its own AWS account.
//!
//! * [`cmk_template`]: a symmetric KMS key (KMS origin, single-Region, rotation on by
//!   default), its alias and the key policy of [`key_policy`](crate::key_policy), with the
//!   key ARN as output. Deploy once per region of the realm.
//! * [`byok_role_template`]: an IAM role the platform assumes through STS, trusting the
//!   platform's account only with the tenant's ExternalId, allowed the KMS actions on the
//!   tenant's keys in the realm's regions (data-key actions only under the tenant's
//!   encryption context).
//!
//! The key policy is written as a JSON string (through `Fn::Sub`, for the account id):
//! CloudFormation accepts it, and so does moto, which the test suite deploys it to.

use keyhold_core::{Region, TenantId};
use serde_json::{Value, json};

use crate::policy::{self, PolicyError, PolicyParams};

/// The ExternalId keyhold uses when assuming a tenant's role: unique per tenant, chosen
/// by the platform (never by the tenant), which is what protects against the confused
/// deputy.
pub fn external_id(tenant: &TenantId) -> String {
    format!("keyhold-{tenant}")
}

/// The CMK template (key, alias, policy) for `tenant`.
pub fn cmk_template(tenant: &TenantId, platform_principal: &str) -> Result<Value, PolicyError> {
    let policy =
        policy::key_policy(&PolicyParams { tenant, platform_principal, tenant_account: Some("000000000000") })?;
    // The tenant's own account, filled in by CloudFormation where the stack is deployed.
    let policy = serde_json::to_string_pretty(&policy)
        .unwrap_or_default()
        .replace("arn:aws:iam::000000000000:root", "arn:${AWS::Partition}:iam::${AWS::AccountId}:root")
        .replace("arn:aws-cn:iam::000000000000:root", "arn:${AWS::Partition}:iam::${AWS::AccountId}:root")
        .replace("arn:aws-us-gov:iam::000000000000:root", "arn:${AWS::Partition}:iam::${AWS::AccountId}:root");
    Ok(json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!(
            "keyhold customer-managed key for tenant {tenant}: a symmetric KMS key, its alias and a key policy that lets the platform use it only for this tenant. Deploy in each region of your realm; do not delete the stack while the platform holds your data."
        ),
        "Parameters": {
            "AliasName": {
                "Type": "String",
                "Default": format!("keyhold-{tenant}"),
                "AllowedPattern": "^[a-zA-Z0-9/_-]+$",
                "Description": "Alias for the key, without the alias/ prefix."
            },
            "EnableKeyRotation": {
                "Type": "String",
                "Default": "true",
                "AllowedValues": ["true", "false"],
                "Description": "Rotate the key material every year (recommended)."
            }
        },
        "Resources": {
            "Key": {
                "Type": "AWS::KMS::Key",
                "DeletionPolicy": "Retain",
                "UpdateReplacePolicy": "Retain",
                "Properties": {
                    "Description": format!("keyhold customer-managed key for tenant {tenant}"),
                    "KeySpec": "SYMMETRIC_DEFAULT",
                    "KeyUsage": "ENCRYPT_DECRYPT",
                    "MultiRegion": false,
                    "EnableKeyRotation": { "Ref": "EnableKeyRotation" },
                    "KeyPolicy": { "Fn::Sub": policy }
                }
            },
            "Alias": {
                "Type": "AWS::KMS::Alias",
                "Properties": {
                    "AliasName": { "Fn::Sub": "alias/${AliasName}" },
                    "TargetKeyId": { "Ref": "Key" }
                }
            }
        },
        "Outputs": {
            "KeyArn": {
                "Description": "Give this ARN to the platform.",
                "Value": { "Fn::GetAtt": ["Key", "Arn"] }
            },
            "AliasName": { "Value": { "Ref": "Alias" } }
        }
    }))
}

/// The BYOK role template for `tenant` in `regions`.
pub fn byok_role_template(
    tenant: &TenantId,
    platform_principal: &str,
    regions: &[Region],
) -> Result<Value, PolicyError> {
    let platform_account = principal_account(platform_principal)
        .ok_or_else(|| PolicyError::BadPrincipal(platform_principal.to_owned()))?;
    let key_arns: Vec<Value> = regions
        .iter()
        .map(|r| json!({ "Fn::Sub": format!("arn:${{AWS::Partition}}:kms:{r}:${{AWS::AccountId}}:key/*") }))
        .collect();
    Ok(json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!(
            "keyhold BYOK role for tenant {tenant}: lets the platform use your KMS keys in {} through STS, only with this tenant's ExternalId. Do not delete the stack while the platform holds your data; to reset the role after a misconfiguration, update the stack.",
            regions.iter().map(Region::as_str).collect::<Vec<_>>().join(", ")
        ),
        "Parameters": {
            "PlatformAccountId": {
                "Type": "String",
                "Default": platform_account,
                "AllowedPattern": "^[0-9]{12}$",
                "Description": "The platform's AWS account, which assumes the role."
            },
            "ExternalId": {
                "Type": "String",
                "Default": external_id(tenant),
                "Description": "The ExternalId the platform presents; unique to your tenant."
            }
        },
        "Resources": {
            "Role": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "Description": format!("Assumed by keyhold to use tenant {tenant}'s KMS keys"),
                    "MaxSessionDuration": 3600,
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [{
                            "Sid": "PlatformAssumesWithExternalId",
                            "Effect": "Allow",
                            "Principal": { "AWS": { "Fn::Sub": "arn:${AWS::Partition}:iam::${PlatformAccountId}:root" } },
                            "Action": "sts:AssumeRole",
                            "Condition": { "StringEquals": { "sts:ExternalId": { "Ref": "ExternalId" } } }
                        }]
                    },
                    "Policies": [{
                        "PolicyName": "keyhold-kms-access",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Sid": policy::SID_DESCRIBE,
                                    "Effect": "Allow",
                                    "Action": "kms:DescribeKey",
                                    "Resource": key_arns
                                },
                                {
                                    "Sid": policy::SID_USE,
                                    "Effect": "Allow",
                                    "Action": policy::USE_ACTIONS,
                                    "Resource": key_arns,
                                    "Condition": {
                                        "StringEquals": { "kms:EncryptionContext:tenant": tenant.as_str() }
                                    }
                                }
                            ]
                        }
                    }]
                }
            }
        },
        "Outputs": {
            "RoleArn": {
                "Description": "Give this ARN to the platform.",
                "Value": { "Fn::GetAtt": ["Role", "Arn"] }
            },
            "ExternalId": { "Value": { "Ref": "ExternalId" } }
        }
    }))
}

/// The account of an IAM principal ARN, if it is one.
fn principal_account(arn: &str) -> Option<&str> {
    policy::principal_partition(arn)?;
    arn.split(':').nth(4)
}
