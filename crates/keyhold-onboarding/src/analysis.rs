//! Static analysis of a key policy, for when the platform can read it: which statement
//! (by Sid), action, principal or condition is missing or denies. Policy evaluation here
//! follows IAM's rules as far as key policies use them: an explicit Deny wins, an Allow is
//! needed for every action, `*` and `?` wildcards in actions, and the condition operators
//! a tenant condition is written with (`StringEquals`, `StringLike`, and their
//! `ForAnyValue:` forms).

use keyhold_core::TenantId;
use serde_json::Value;

use crate::finding::{Finding, Severity};
use crate::policy::{SID_DESCRIBE, SID_USE, USE_ACTIONS};

const CONTEXT_KEY: &str = "kms:EncryptionContext:tenant";

/// Analyzes `policy` (the key policy JSON text) for `platform_principal` serving `tenant`.
/// An empty result means the policy grants exactly what keyhold needs.
pub fn analyze_key_policy(policy: &str, tenant: &TenantId, platform_principal: &str) -> Vec<Finding> {
    let doc: Value = match serde_json::from_str(policy) {
        Ok(v) => v,
        Err(e) => {
            return vec![Finding::new(
                Severity::Error,
                "policy_malformed_json",
                format!("the key policy is not valid JSON (line {}, column {}): {e}", e.line(), e.column()),
                "correct the JSON syntax (a missing comma or brace is the usual cause) and save the policy again",
            )];
        }
    };
    let statements: Vec<&Value> = match doc.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => {
            return vec![Finding::new(
                Severity::Error,
                "policy_no_statements",
                "the key policy has no Statement",
                "apply the key policy keyhold generated for your tenant",
            )];
        }
    };
    let mut findings = Vec::new();
    let required: Vec<(&str, &str, bool)> = std::iter::once(("kms:DescribeKey", SID_DESCRIBE, false))
        .chain(USE_ACTIONS.iter().map(|a| (*a, SID_USE, true)))
        .collect();
    for (action, sid, needs_context) in required {
        check_action(&statements, action, sid, needs_context, tenant, platform_principal, &mut findings);
    }
    let admin = statements.iter().any(|s| {
        effect(s) == Some("Allow")
            && principals(s).iter().any(|p| p.ends_with(":root"))
            && actions(s).iter().any(|a| action_matches(a, "kms:PutKeyPolicy"))
    });
    if !admin {
        findings.push(Finding::new(
            Severity::Warning,
            "policy_no_account_admin",
            "no statement lets your account root administer the key (kms:PutKeyPolicy); you could lose control of it",
            "add the TenantAccountAdministersKey statement from the generated policy",
        ));
    }
    findings
}

fn check_action(
    statements: &[&Value],
    action: &str,
    sid: &str,
    needs_context: bool,
    tenant: &TenantId,
    principal: &str,
    findings: &mut Vec<Finding>,
) {
    let applies = |s: &Value| {
        principals(s).iter().any(|p| principal_matches(p, principal))
            && actions(s).iter().any(|a| action_matches(a, action))
    };
    for s in statements.iter().filter(|s| effect(s) == Some("Deny") && applies(s)) {
        if condition_admits_tenant(s, tenant) != Some(false) {
            findings.push(Finding::new(
                Severity::Error,
                "policy_denies",
                format!("statement {} denies {action} to {principal}", sid_of(s)),
                format!(
                    "remove {action} from the Deny statement {} or exclude the platform principal from it",
                    sid_of(s)
                ),
            ));
        }
    }
    let allows: Vec<&&Value> = statements.iter().filter(|s| effect(s) == Some("Allow") && applies(s)).collect();
    if allows.is_empty() {
        let principal_anywhere =
            statements.iter().any(|s| principals(s).iter().any(|p| principal_matches(p, principal)));
        let (code, message) = if principal_anywhere {
            ("policy_action_missing", format!("no statement allows {action} to {principal}"))
        } else {
            (
                "policy_principal_missing",
                format!("no statement names the platform principal {principal}, so {action} is not allowed"),
            )
        };
        findings.push(Finding::new(
            Severity::Error,
            code,
            message,
            format!("add {action} to the {sid} statement of the generated policy, with principal {principal}"),
        ));
        return;
    }
    if !needs_context {
        // This action carries no encryption context, so an Allow conditioned on one never
        // applies to it.
        if allows.iter().all(|s| condition_admits_tenant(s, tenant).is_some()) {
            findings.push(Finding::new(
                Severity::Error,
                "policy_condition_blocks_action",
                format!("{action} carries no encryption context, so the {CONTEXT_KEY} condition on the statements that allow it never matches"),
                format!("allow {action} in a statement without an encryption-context condition, as {sid} in the generated policy does"),
            ));
        }
        return;
    }
    match allows.iter().map(|s| condition_admits_tenant(s, tenant)).max() {
        Some(Some(true)) => {}
        Some(None) => findings.push(Finding::new(
            Severity::Warning,
            "policy_condition_missing",
            format!("{action} is allowed to the platform without a {CONTEXT_KEY} condition, for any tenant's data"),
            format!("add the condition StringEquals {{\"{CONTEXT_KEY}\": \"{tenant}\"}} to statement {sid}"),
        )),
        _ => findings.push(Finding::new(
            Severity::Error,
            "policy_condition_other_tenant",
            format!("{action} is allowed only under a {CONTEXT_KEY} condition that does not match tenant {tenant}"),
            format!("set the condition value of {CONTEXT_KEY} in statement {sid} to \"{tenant}\""),
        )),
    }
}

fn effect(s: &Value) -> Option<&str> {
    s.get("Effect").and_then(Value::as_str)
}

fn sid_of(s: &Value) -> String {
    s.get("Sid").and_then(Value::as_str).map_or_else(|| "(without Sid)".to_owned(), |sid| format!("{sid:?}"))
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn actions(s: &Value) -> Vec<&str> {
    strings(s.get("Action"))
}

fn principals(s: &Value) -> Vec<&str> {
    match s.get("Principal") {
        Some(Value::String(p)) => vec![p.as_str()],
        Some(p @ Value::Object(_)) => strings(p.get("AWS")),
        _ => Vec::new(),
    }
}

/// Whether a policy principal names `principal`: the same ARN, `*`, or its account root.
fn principal_matches(policy_principal: &str, principal: &str) -> bool {
    if policy_principal == "*" || policy_principal == principal {
        return true;
    }
    let account = |arn: &str| arn.split(':').nth(4).map(str::to_owned);
    policy_principal.ends_with(":root") && account(policy_principal) == account(principal)
        || policy_principal.len() == 12 && Some(policy_principal.to_owned()) == account(principal)
}

/// IAM action matching: case-insensitive, `*` and `?` wildcards.
fn action_matches(pattern: &str, action: &str) -> bool {
    wildcard(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase())
}

fn wildcard(pattern: &str, text: &str) -> bool {
    match pattern.chars().next() {
        None => text.is_empty(),
        Some('*') => {
            let rest = pattern.get(1..).unwrap_or_default();
            (0..=text.len()).any(|i| text.is_char_boundary(i) && wildcard(rest, text.get(i..).unwrap_or_default()))
        }
        Some(c) => {
            let mut t = text.chars();
            match t.next() {
                Some(tc) if c == '?' || c == tc => {
                    wildcard(pattern.get(c.len_utf8()..).unwrap_or_default(), t.as_str())
                }
                _ => false,
            }
        }
    }
}

/// Whether a statement's conditions admit requests under the tenant's context: `None`
/// when it has no condition on the tenant context key, `Some(true)` when its condition is
/// satisfied by the tenant id, `Some(false)` when it is not.
fn condition_admits_tenant(s: &Value, tenant: &TenantId) -> Option<bool> {
    let conditions = s.get("Condition")?.as_object()?;
    let mut verdict = None;
    for (operator, block) in conditions {
        let Some(values) = block.as_object().and_then(|b| b.get(CONTEXT_KEY)) else { continue };
        let values = strings(Some(values));
        let op = operator.strip_prefix("ForAnyValue:").unwrap_or(operator);
        let ok = match op {
            "StringEquals" => values.contains(&tenant.as_str()),
            "StringLike" => values.iter().any(|v| wildcard(v, tenant.as_str())),
            "StringNotEquals" => !values.contains(&tenant.as_str()),
            _ => continue,
        };
        verdict = Some(verdict.unwrap_or(true) && ok);
    }
    verdict
}
