//! The key health monitor: every tenant that is active, degraded or suspended has each of
//! its keys probed on a schedule (jittered), with a real round trip under the tenant's
//! context — `GenerateDataKey` on the key, then `Decrypt` of what it returned — so both a
//! key state change and a key policy or grant change are seen.
//!
//! A definitive refusal (disabled, pending deletion, not found, access denied, wrong key)
//! suspends the tenant at once: its cached data keys are dropped and every request is
//! refused with `tenant_suspended`. A transient failure marks an active tenant degraded
//! (still served). When every key answers again, the tenant is active again.
//!
//! Revocation bound on this instance: KMS propagation + one probe interval (+10% jitter);
//! on other instances sharing the registry, add the tenant view's 5 s lifetime.

use std::sync::Arc;
use std::time::Duration;

use keyhold_core::{EncryptionContext, RESERVED_PURPOSE_KEY, RESERVED_TENANT_KEY};
use keyhold_provider::{ErrorClass, ProviderError};
use keyhold_registry::{Tenant, TenantState};

use crate::state::AppState;

/// The `purpose` in a probe's encryption context, so the tenant can tell probes apart in
/// CloudTrail.
pub const PROBE_PURPOSE: &str = "keyhold-probe";

/// The default interval between probes of a tenant's keys.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// What one probe pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// Tenants probed.
    pub probed: usize,
    /// Tenants suspended by this pass.
    pub suspended: usize,
    /// Tenants marked degraded.
    pub degraded: usize,
    /// Tenants made active again.
    pub resumed: usize,
}

enum Outcome {
    Healthy,
    Refused(String),
    Transient(String),
}

async fn probe(state: &AppState, tenant: &Tenant) -> Outcome {
    let Ok(view) = state.tenant_view(&tenant.id).await else {
        return Outcome::Transient("the registry did not answer".into());
    };
    if view.keys.is_empty() {
        return Outcome::Healthy;
    }
    let mut context = EncryptionContext::new();
    context.insert(RESERVED_TENANT_KEY, tenant.id.as_str());
    context.insert(RESERVED_PURPOSE_KEY, PROBE_PURPOSE);
    let mut transient = None;
    for key in view.keys.iter() {
        let Some(provider) = state.providers.iter().find(|p| p.accepts(key)) else {
            return Outcome::Refused(format!("no key provider serves key {key}"));
        };
        let result: Result<(), ProviderError> = async {
            let (dk, edk) = provider.generate_data_key(key, 32, &context).await?;
            let back = provider.unwrap(&edk, &context).await?;
            if back.ct_eq(&dk) {
                Ok(())
            } else {
                Err(ProviderError::InvalidCiphertext { key: key.clone(), reason: "round trip mismatch".into() })
            }
        }
        .await;
        match result {
            Ok(()) => {}
            Err(e) if e.class() == ErrorClass::Retryable => {
                transient = Some(format!("key {key}: {} ({e})", e.code()));
            }
            Err(e) => return Outcome::Refused(format!("key {key} refused: {}", e.code())),
        }
    }
    match transient {
        Some(t) => Outcome::Transient(t),
        None => Outcome::Healthy,
    }
}

/// Probes every tenant once and applies the outcomes.
pub async fn probe_all(state: &AppState) -> Pass {
    let mut pass = Pass::default();
    let Ok(tenants) = state.registry.tenants().await else { return pass };
    for t in tenants {
        if !matches!(t.state, TenantState::Active | TenantState::Degraded | TenantState::Suspended) {
            continue;
        }
        pass.probed += 1;
        let (to, reason) = match probe(state, &t).await {
            // A suspension by validation (a missing or misconfigured key) waits for the
            // next validation; one caused by a key's refusal ends when the key answers.
            Outcome::Healthy if t.state == TenantState::Suspended && !resumable(&t) => continue,
            Outcome::Healthy if t.state != TenantState::Active => {
                pass.resumed += 1;
                (TenantState::Active, "probe: every key answers again".to_owned())
            }
            Outcome::Healthy => continue,
            Outcome::Refused(r) if t.state != TenantState::Suspended => {
                pass.suspended += 1;
                (TenantState::Suspended, format!("probe: {r}"))
            }
            Outcome::Transient(r) if t.state == TenantState::Active => {
                pass.degraded += 1;
                (TenantState::Degraded, format!("probe: {r}"))
            }
            Outcome::Refused(_) | Outcome::Transient(_) => continue,
        };
        // The tenant may have changed meanwhile (deleted); a failed transition is skipped.
        let _ = state.change_state(&t, to, Some(&reason)).await;
    }
    pass
}

fn resumable(t: &Tenant) -> bool {
    t.reason.as_deref().is_some_and(|r| r.starts_with("probe:") || r.starts_with("key "))
}

/// Runs [`probe_all`] every `interval` (plus up to 10% jitter) until dropped.
pub fn spawn(state: Arc<AppState>, interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let jitter = interval.mul_f64(f64::from(jitter_permille()) / 10_000.0);
            tokio::time::sleep(interval + jitter).await;
            probe_all(&state).await;
        }
    })
}

/// 0..=1000 from the system's random source (no extra dependency for a jitter).
fn jitter_permille() -> u16 {
    let mut b = [0u8; 2];
    match aws_lc_rs::rand::fill(&mut b) {
        Ok(()) => u16::from_le_bytes(b) % 1001,
        Err(_) => 500,
    }
}
