//! The validation dry run: everything that must hold before a tenant's keys can protect
//! its data, checked live and reported per region with the exact fault.
//!
//! In order: each key reference parses (ARN syntax, with the fault named); the keys fit
//! the realm (no region outside it, one key per region, every region covered);
//! `DescribeKey` (spec `SYMMETRIC_DEFAULT`, usage `ENCRYPT_DECRYPT`, state `Enabled`,
//! origin); a live round trip with the tenant's encryption context (the home key generates
//! a data key, every other key wraps that same data key, each unwraps its own); automatic
//! rotation (a warning when off); where the platform may read it, the key policy through
//! [`crate::analyze_key_policy`]; and, in a multi-region realm, parity between the
//! regions. A refusal by AWS becomes a finding carrying the AWS error code; nothing here
//! panics or gives up early: every region is checked and reported.

use std::fmt::Write as _;
use std::sync::Arc;

use keyhold_core::{DataKey, EncryptionContext, KeyArn, KeyRef, KeyResource, Region, TenantId};
use keyhold_provider::{
    ENCRYPT_DECRYPT, KeyDescription, KeyOrigin, KeyProvider, KeyState, ProviderError, Rotation, SYMMETRIC_DEFAULT,
};
use serde::Serialize;

use crate::finding::{Finding, Severity};
use crate::realms::Realm;

/// The `purpose` the round trip's encryption context carries, so the tenant can tell
/// validation calls from data calls in CloudTrail.
pub const VALIDATION_PURPOSE: &str = "keyhold-validation";

/// What to validate.
pub struct Validation<'a> {
    /// The tenant.
    pub tenant: &'a TenantId,
    /// Its realm.
    pub realm: &'a Realm,
    /// The key references as the tenant gave them (ARNs, or local key ids).
    pub keys: &'a [String],
    /// The platform principal the key policy must serve; without it the policy is not
    /// analysed.
    pub platform_principal: Option<&'a str>,
    /// The providers to reach the keys through (the first that accepts a key serves it).
    pub providers: &'a [Arc<dyn KeyProvider>],
}

/// What validation found about one region's key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    /// The region.
    pub region: String,
    /// The key as given.
    pub key: String,
    /// Its state, when `DescribeKey` answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// Its spec, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<String>,
    /// Its origin, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
    /// Whether the live round trip worked.
    pub round_trip: bool,
    /// Automatic rotation: `enabled`, `disabled`, `unknown` (not readable), `not_supported`.
    pub rotation: &'static str,
    /// Whether the key policy was read and analysed.
    pub policy_analyzed: bool,
    /// The findings for this key.
    pub findings: Vec<Finding>,
}

/// The outcome of a validation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The tenant.
    pub tenant: String,
    /// The realm.
    pub realm: String,
    /// Whether the keys can be attached: no finding of severity error.
    pub usable: bool,
    /// One entry per key that names a region of the realm, in realm order.
    pub keys: Vec<KeyReport>,
    /// Findings about the key set as a whole (syntax, realm fit, parity).
    pub findings: Vec<Finding>,
}

impl Report {
    /// Every finding, key findings first.
    pub fn all_findings(&self) -> impl Iterator<Item = &Finding> {
        self.keys.iter().flat_map(|k| k.findings.iter()).chain(self.findings.iter())
    }

    /// How many findings have `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.all_findings().filter(|f| f.severity == severity).count()
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as text, one line per finding, grouped by region.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = if self.usable { "usable" } else { "NOT usable" };
        let _ = writeln!(
            out,
            "tenant {} realm {}: {verdict} ({} errors, {} warnings)",
            self.tenant,
            self.realm,
            self.count(Severity::Error),
            self.count(Severity::Warning)
        );
        for k in &self.keys {
            let _ = writeln!(
                out,
                "\n{}  {}\n  state {}  spec {}  origin {}  round trip {}  rotation {}  policy {}",
                k.region,
                k.key,
                k.state.unwrap_or("unknown"),
                k.spec.as_deref().unwrap_or("unknown"),
                k.origin.unwrap_or("unknown"),
                if k.round_trip { "ok" } else { "failed" },
                k.rotation,
                if k.policy_analyzed { "analysed" } else { "not read" },
            );
            for f in &k.findings {
                let _ = writeln!(out, "  {f}");
            }
        }
        if !self.findings.is_empty() {
            let _ = writeln!(out, "\nkey set");
            for f in &self.findings {
                let _ = writeln!(out, "  {f}");
            }
        }
        out
    }
}

fn finding(
    severity: Severity,
    code: &'static str,
    region: Option<&Region>,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        severity,
        code,
        region: region.map(|r| r.to_string()),
        aws_error: None,
        message: message.into(),
        fix: fix.into(),
    }
}

struct Resolved<'a> {
    given: &'a str,
    key: KeyRef,
    provider: Arc<dyn KeyProvider>,
    region: Region,
}

/// Runs the validation. Never fails: every fault is a finding in the report.
pub async fn validate(v: &Validation<'_>) -> Report {
    let mut set_findings = Vec::new();
    let mut resolved: Vec<Resolved<'_>> = Vec::new();
    for (i, given) in v.keys.iter().enumerate() {
        if let Some(r) = resolve(v, i + 1, given, &mut set_findings).await {
            resolved.push(r);
        }
    }

    // Realm fit: one key per region of the realm, none outside it.
    let mut slots: Vec<Option<Resolved<'_>>> = v.realm.regions.iter().map(|_| None).collect();
    for r in resolved {
        let Some(slot) = v.realm.regions.iter().position(|x| *x == r.region).and_then(|p| slots.get_mut(p)) else {
            set_findings.push(finding(
                Severity::Error,
                "key_region_outside_realm",
                Some(&r.region),
                format!(
                    "key {} is in {}, which is not in realm {} ({})",
                    r.given,
                    r.region,
                    v.realm.id,
                    region_list(v.realm)
                ),
                format!("create the key in one of {} and submit that key's ARN instead", region_list(v.realm)),
            ));
            continue;
        };
        if let Some(first) = slot {
            set_findings.push(finding(
                Severity::Error,
                "key_region_duplicate",
                Some(&r.region),
                format!("keys {} and {} are both in {}", first.given, r.given, r.region),
                format!("submit exactly one key for {}", r.region),
            ));
            continue;
        }
        *slot = Some(r);
    }
    for (region, slot) in v.realm.regions.iter().zip(&slots) {
        if slot.is_none() {
            set_findings.push(finding(
                Severity::Error,
                "key_region_missing",
                Some(region),
                format!("realm {} needs a key in {region}, and none was given", v.realm.id),
                format!("create a key in {region} with the generated policy and add its ARN"),
            ));
        }
    }

    // Live checks, per region; the home region's data key is wrapped by the others.
    let context = validation_context(v.tenant);
    let mut home_key: Option<DataKey> = None;
    let mut reports = Vec::new();
    let mut descriptions = Vec::new();
    for r in slots.iter().flatten() {
        let (report, description) = check_key(v, r, &context, &mut home_key).await;
        reports.push(report);
        descriptions.push(description);
    }
    set_findings.extend(parity(&reports, &descriptions));

    let usable = reports.iter().flat_map(|k| &k.findings).chain(&set_findings).all(|f| f.severity != Severity::Error);
    Report {
        tenant: v.tenant.to_string(),
        realm: v.realm.id.to_string(),
        usable,
        keys: reports,
        findings: set_findings,
    }
}

fn region_list(realm: &Realm) -> String {
    realm.regions.iter().map(Region::as_str).collect::<Vec<_>>().join(", ")
}

fn validation_context(tenant: &TenantId) -> EncryptionContext {
    let mut c = EncryptionContext::new();
    c.insert(keyhold_core::RESERVED_TENANT_KEY, tenant.as_str());
    c.insert(keyhold_core::RESERVED_PURPOSE_KEY, VALIDATION_PURPOSE);
    c
}

/// Parses one given key and finds its provider and region, or records why not.
async fn resolve<'a>(
    v: &Validation<'_>,
    index: usize,
    given: &'a str,
    findings: &mut Vec<Finding>,
) -> Option<Resolved<'a>> {
    let looks_like_arn = given.trim_start().to_ascii_lowercase().starts_with("arn") || given.contains(':');
    let arn = if looks_like_arn {
        match KeyArn::parse(given) {
            Ok(a) => Some(a),
            Err(e) => {
                let text = e.to_string();
                let (message, fix) =
                    text.split_once("; ").unwrap_or((&text, "paste the key ARN from the AWS KMS console"));
                findings.push(Finding {
                    severity: Severity::Error,
                    code: "key_arn_invalid",
                    region: None,
                    aws_error: None,
                    message: format!("key {index}: {message}"),
                    fix: fix.to_owned(),
                });
                return None;
            }
        }
    } else {
        None
    };
    let Ok(key) = KeyRef::parse(given) else {
        findings.push(Finding::new(
            Severity::Error,
            "key_reference_invalid",
            format!("key {index} ({given:?}) is neither a key ARN nor a key id keyhold knows"),
            "submit the key's ARN, arn:aws:kms:<region>:<account>:key/<key id>",
        ));
        return None;
    };
    let Some(provider) = v.providers.iter().find(|p| p.accepts(&key)).cloned() else {
        findings.push(Finding::new(
            Severity::Error,
            "key_provider_unavailable",
            format!("no key provider is configured for key {given}"),
            "configure AWS access for the platform, or use a key of the configured provider",
        ));
        return None;
    };
    if let Some(a) = &arn
        && let KeyResource::Alias(name) = a.resource()
    {
        findings.push(finding(
            Severity::Warning,
            "key_is_alias",
            Some(a.region()),
            format!("key {index} is the alias {name}, which its owner can point at another key at any time"),
            "submit the ARN of the key itself (arn:...:key/<key id>) so the tenant's data stays under one key",
        ));
    }
    let region = match (&arn, provider.region_of(&key)) {
        (Some(a), _) => a.region().clone(),
        (None, Some(r)) => r,
        (None, None) => match provider.describe(&key).await {
            Ok(d) => d.region,
            Err(e) => {
                findings.push(from_provider_error(None, "describe", &key, &e, v));
                return None;
            }
        },
    };
    Some(Resolved { given, key, provider, region })
}

async fn check_key(
    v: &Validation<'_>,
    r: &Resolved<'_>,
    context: &EncryptionContext,
    home_key: &mut Option<DataKey>,
) -> (KeyReport, Option<(KeyDescription, Rotation)>) {
    let region = Some(&r.region);
    let mut findings = Vec::new();
    let mut report = KeyReport {
        region: r.region.to_string(),
        key: r.given.to_owned(),
        state: None,
        spec: None,
        origin: None,
        round_trip: false,
        rotation: "unknown",
        policy_analyzed: false,
        findings: Vec::new(),
    };

    let description = match r.provider.describe(&r.key).await {
        Ok(d) => {
            describe_findings(&d, &r.region, &mut findings);
            report.state = Some(d.state.name());
            report.spec = Some(d.spec.clone());
            report.origin = Some(d.origin.aws_name());
            Some(d)
        }
        Err(e) => {
            findings.push(from_provider_error(region, "DescribeKey", &r.key, &e, v));
            None
        }
    };

    // Round trip: the first region generates; every other wraps that same data key.
    let round_trip = match home_key.as_ref() {
        None => match r.provider.generate_data_key(&r.key, 32, context).await {
            Ok((dk, edk)) => {
                let ok = unwrap_matches(v, r, &edk, &dk, context, &mut findings).await;
                *home_key = Some(dk);
                ok
            }
            Err(e) => {
                findings.push(from_provider_error(region, "GenerateDataKey", &r.key, &e, v));
                false
            }
        },
        Some(dk) => match r.provider.wrap(&r.key, dk, context).await {
            Ok(edk) => unwrap_matches(v, r, &edk, dk, context, &mut findings).await,
            Err(e) => {
                findings.push(from_provider_error(region, "Encrypt", &r.key, &e, v));
                false
            }
        },
    };
    report.round_trip = round_trip;

    let rotation = match r.provider.rotation(&r.key).await {
        Ok(rot) => {
            report.rotation = match rot {
                Rotation::Enabled { .. } => "enabled",
                Rotation::Disabled => {
                    findings.push(finding(
                        Severity::Warning,
                        "key_rotation_off",
                        region,
                        format!("automatic rotation of key {} is off", r.given),
                        format!(
                            "turn on automatic key rotation for the key (aws kms enable-key-rotation --key-id {} \
                             --region {})",
                            r.given, r.region
                        ),
                    ));
                    "disabled"
                }
                Rotation::NotSupported => "not_supported",
            };
            Some(rot)
        }
        Err(e) if matches!(e, ProviderError::AccessDenied { .. }) => {
            findings.push(with_aws(
                finding(
                    Severity::Info,
                    "key_rotation_unreadable",
                    region,
                    "the platform may not read the key's rotation status (kms:GetKeyRotationStatus is not granted)",
                    "check in the AWS KMS console that automatic rotation is on, or grant the platform \
                     kms:GetKeyRotationStatus to have keyhold check it",
                ),
                &e,
            ));
            None
        }
        Err(e) => {
            findings.push(from_provider_error(region, "GetKeyRotationStatus", &r.key, &e, v));
            None
        }
    };

    match r.provider.key_policy(&r.key).await {
        Ok(Some(policy)) => {
            if let Some(principal) = v.platform_principal {
                report.policy_analyzed = true;
                for mut f in crate::analyze_key_policy(&policy, v.tenant, principal) {
                    f.region = Some(r.region.to_string());
                    findings.push(f);
                }
            }
        }
        Ok(None) => {}
        Err(e) if matches!(e, ProviderError::AccessDenied { .. }) => findings.push(with_aws(
            finding(
                Severity::Info,
                "policy_unreadable",
                region,
                "the platform may not read the key policy (kms:GetKeyPolicy is not granted), so it was not analysed; \
                 the live round trip above is what proves access",
                "nothing to do; to have keyhold analyse the policy, grant the platform kms:GetKeyPolicy",
            ),
            &e,
        )),
        Err(e) => findings.push(from_provider_error(region, "GetKeyPolicy", &r.key, &e, v)),
    }

    report.findings = findings;
    (report, description.zip(rotation))
}

async fn unwrap_matches(
    v: &Validation<'_>,
    r: &Resolved<'_>,
    edk: &keyhold_core::EncryptedDataKey,
    expected: &DataKey,
    context: &EncryptionContext,
    findings: &mut Vec<Finding>,
) -> bool {
    match r.provider.unwrap(edk, context).await {
        Ok(back) if back.ct_eq(expected) => true,
        Ok(_) => {
            findings.push(finding(
                Severity::Error,
                "round_trip_mismatch",
                Some(&r.region),
                format!("key {} decrypted the validation data key to a different value", r.given),
                "contact support: the key service returned inconsistent results",
            ));
            false
        }
        Err(e) => {
            findings.push(from_provider_error(Some(&r.region), "Decrypt", &r.key, &e, v));
            false
        }
    }
}

fn describe_findings(d: &KeyDescription, region: &Region, findings: &mut Vec<Finding>) {
    let r = Some(region);
    // A provider that did not report spec or usage gives empty strings: the defaults
    // (SYMMETRIC_DEFAULT, whose only usage is ENCRYPT_DECRYPT) apply, and an empty value
    // is never printed.
    let spec = if d.spec.is_empty() { SYMMETRIC_DEFAULT } else { d.spec.as_str() };
    let usage = if d.usage.is_empty() && spec == SYMMETRIC_DEFAULT { ENCRYPT_DECRYPT } else { d.usage.as_str() };
    if spec != SYMMETRIC_DEFAULT {
        findings.push(finding(
            Severity::Error,
            "key_spec_wrong",
            r,
            format!("the key's spec is {spec}, but keyhold needs {SYMMETRIC_DEFAULT}"),
            "create a new key with key spec SYMMETRIC_DEFAULT (a key's spec cannot be changed) and submit its ARN",
        ));
    }
    if usage != ENCRYPT_DECRYPT {
        findings.push(finding(
            Severity::Error,
            "key_usage_wrong",
            r,
            format!(
                "the key's usage is {}, but keyhold needs {ENCRYPT_DECRYPT}",
                if usage.is_empty() { "not reported" } else { usage }
            ),
            "create a new key with key usage ENCRYPT_DECRYPT (a key's usage cannot be changed) and submit its ARN",
        ));
    }
    match d.state {
        KeyState::Enabled => {}
        KeyState::Disabled => findings.push(finding(
            Severity::Error,
            "key_disabled",
            r,
            "the key is disabled",
            "enable the key (aws kms enable-key)",
        )),
        KeyState::PendingDeletion { deletion_at_ms } => findings.push(finding(
            Severity::Error,
            "key_pending_deletion",
            r,
            format!("the key is scheduled for deletion ({})", deletion_date(deletion_at_ms)),
            "cancel the deletion (aws kms cancel-key-deletion), then enable the key (aws kms enable-key)",
        )),
        KeyState::PendingImport => findings.push(finding(
            Severity::Error,
            "key_pending_import",
            r,
            "the key has no key material yet",
            "import the key material (aws kms import-key-material), or use a key with AWS_KMS origin",
        )),
        _ => findings.push(finding(
            Severity::Error,
            "key_unavailable",
            r,
            format!("the key is in state {}", d.state.name()),
            "wait until the key is Enabled (or reconnect its custom key store) and validate again",
        )),
    }
    match d.origin {
        KeyOrigin::External => findings.push(finding(
            Severity::Warning,
            "key_origin_external",
            r,
            "the key's material is imported (origin EXTERNAL): it can expire or be deleted, and AWS cannot rotate it",
            "keep a copy of the material and re-import it before it expires, or use a key with AWS_KMS origin",
        )),
        KeyOrigin::ExternalKeyStore => findings.push(finding(
            Severity::Warning,
            "key_origin_external_key_store",
            r,
            "the key lives in an external key store: every request depends on your key manager's availability",
            "make sure your external key manager is highly available in this region, or use a key with AWS_KMS origin",
        )),
        _ => {}
    }
}

fn deletion_date(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    format!("its material is destroyed at {}", humantime::format_rfc3339_seconds(at))
}

fn with_aws(mut f: Finding, e: &ProviderError) -> Finding {
    f.aws_error = Some(e.code().to_owned());
    f
}

/// A refused or failed call as a finding: the code names the call and the fault, the AWS
/// error code is kept, the fix says what the key owner (or operator) does.
fn from_provider_error(
    region: Option<&Region>,
    call: &str,
    key: &KeyRef,
    e: &ProviderError,
    v: &Validation<'_>,
) -> Finding {
    let principal = v.platform_principal.unwrap_or("the platform principal");
    let action = match call {
        "GenerateDataKey" => "kms:GenerateDataKey",
        "Encrypt" => "kms:Encrypt",
        "Decrypt" => "kms:Decrypt",
        "DescribeKey" => "kms:DescribeKey",
        "GetKeyRotationStatus" => "kms:GetKeyRotationStatus",
        _ => "kms:GetKeyPolicy",
    };
    let (severity, code, message, fix): (Severity, &'static str, String, String) = match e {
        ProviderError::KeyDisabled { .. } => (
            Severity::Error,
            "key_disabled",
            format!("{call} on {key} was refused: the key is disabled"),
            "enable the key (aws kms enable-key)".into(),
        ),
        ProviderError::KeyPendingDeletion { .. } => (
            Severity::Error,
            "key_pending_deletion",
            format!("{call} on {key} was refused: the key is pending deletion"),
            "cancel the deletion (aws kms cancel-key-deletion), then enable the key".into(),
        ),
        ProviderError::KeyUnusable { message, .. } => (
            Severity::Error,
            "key_unavailable",
            format!("{call} on {key} was refused: {message}"),
            "wait until the key is Enabled and validate again".into(),
        ),
        ProviderError::KeyNotFound { .. } => (
            Severity::Error,
            "key_not_found",
            format!("{call}: key {key} does not exist (or not in the account and region the ARN names)"),
            "check the account id, region and key id in the ARN against the AWS KMS console".into(),
        ),
        ProviderError::AccessDenied { message, .. } => (
            Severity::Error,
            "access_denied",
            format!("{call} on {key} was denied: {message}"),
            if call == "DescribeKey" {
                format!("allow {principal} {action} in the key policy (apply the generated key policy)")
            } else {
                format!(
                    "allow {principal} {action} in the key policy with kms:EncryptionContext:tenant = {} \
                     (apply the generated key policy)",
                    v.tenant
                )
            },
        ),
        ProviderError::Misconfigured { code, message, .. } => (
            Severity::Error,
            "key_misconfigured",
            format!("{call} on {key} failed ({code}): {message}"),
            "use a symmetric ENCRYPT_DECRYPT key (key spec SYMMETRIC_DEFAULT)".into(),
        ),
        ProviderError::InvalidCiphertext { reason, .. } => (
            Severity::Error,
            "round_trip_failed",
            format!("{call} on {key} could not decrypt the validation data key: {reason}"),
            "make sure the key policy's conditions allow the tenant's encryption context on kms:Decrypt".into(),
        ),
        ProviderError::InvalidRequest(m) => (
            Severity::Error,
            "key_reference_invalid",
            format!("{call} on {key} was rejected: {m}"),
            "submit the key's ARN as shown in the AWS KMS console".into(),
        ),
        ProviderError::Unavailable { code, message } => (
            Severity::Error,
            "kms_unavailable",
            format!("{call} on {key} failed temporarily ({code}): {message}"),
            "nothing is wrong with the key as far as keyhold can tell; validate again in a minute".into(),
        ),
        _ => (Severity::Error, "provider_error", format!("{call} on {key} failed: {e}"), "validate again".into()),
    };
    Finding {
        severity,
        code,
        region: region.map(|r| r.to_string()),
        aws_error: Some(e.code().to_owned()),
        message,
        fix,
    }
}

/// In a realm of several regions, the keys should be alike: a difference is a warning
/// (the data stays readable through either key, but failover changes behaviour).
fn parity(reports: &[KeyReport], descriptions: &[Option<(KeyDescription, Rotation)>]) -> Vec<Finding> {
    let mut out = Vec::new();
    let described: Vec<(&KeyReport, &KeyDescription, &Rotation)> =
        reports.iter().zip(descriptions).filter_map(|(r, d)| d.as_ref().map(|(d, rot)| (r, d, rot))).collect();
    let Some(((first_r, first_d, first_rot), rest)) = described.split_first() else {
        return out;
    };
    for (r, d, rot) in rest {
        let mut differs = |code: &'static str, what: &str, a: String, b: String, fix: &str| {
            if a != b {
                out.push(Finding::new(
                    Severity::Warning,
                    code,
                    format!("{what} differs between regions: {} in {}, {} in {}", a, first_r.region, b, r.region),
                    fix,
                ));
            }
        };
        differs(
            "parity_origin_differs",
            "key origin",
            first_d.origin.aws_name().into(),
            d.origin.aws_name().into(),
            "use keys of the same origin in every region of the realm",
        );
        differs(
            "parity_rotation_differs",
            "automatic rotation",
            rotation_name(first_rot).into(),
            rotation_name(rot).into(),
            "turn automatic rotation on for the keys in every region of the realm",
        );
        differs(
            "parity_multi_region_differs",
            "multi-Region key",
            first_d.multi_region.to_string(),
            d.multi_region.to_string(),
            "use either single-Region keys in every region or replicas of one multi-Region key",
        );
        let codes = |k: &KeyReport| {
            let mut c: Vec<&str> =
                k.findings.iter().filter(|f| f.code.starts_with("policy_")).map(|f| f.code).collect();
            c.sort_unstable();
            c.join(",")
        };
        if first_r.policy_analyzed && r.policy_analyzed {
            differs(
                "parity_policy_differs",
                "key policy analysis",
                display_codes(codes(first_r)),
                display_codes(codes(r)),
                "apply the same generated key policy in every region of the realm",
            );
        }
    }
    out
}

fn display_codes(c: String) -> String {
    if c.is_empty() { "clean".into() } else { c }
}

fn rotation_name(r: &Rotation) -> &'static str {
    match r {
        Rotation::Enabled { .. } => "on",
        Rotation::Disabled => "off",
        Rotation::NotSupported => "not supported",
    }
}
