//! Validation findings: what is wrong (or worth knowing) about a tenant's key, with a
//! stable code, the AWS error code where there is one, and the fix in one sentence.

use serde::Serialize;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Informational.
    Info,
    /// The key works, but something should change (rotation off, broader grant than needed).
    Warning,
    /// The key cannot be used as configured.
    Error,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// Stable machine-readable code (`policy_action_missing`, ...).
    pub code: &'static str,
    /// The region the finding concerns, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The AWS error code behind it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_error: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it, in one sentence.
    pub fix: String,
}

impl Finding {
    /// A finding without region or AWS error code.
    pub fn new(severity: Severity, code: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { severity, code, region: None, aws_error: None, message: message.into(), fix: fix.into() }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        write!(f, "{sev} [{}]", self.code)?;
        if let Some(r) = &self.region {
            write!(f, " {r}")?;
        }
        if let Some(a) = &self.aws_error {
            write!(f, " ({a})")?;
        }
        write!(f, ": {} Fix: {}", self.message, self.fix)
    }
}
