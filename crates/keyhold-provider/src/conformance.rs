//! The conformance suite every [`KeyProvider`] backend runs, through a
//! [`ConformanceHarness`] that can create keys and change their state the way the key
//! owner would (the local provider directly, AWS KMS through its API or a fault-injection
//! proxy for what a test server does not model).
//!
//! Each check returns `Err` with a sentence describing the first violation, so a backend's
//! test reports which promise it broke.

use std::sync::Arc;

use async_trait::async_trait;
use keyhold_core::{EncryptionContext, KeyRef, Region};

use crate::{ErrorClass, KeyProvider, KeyState, ProviderError};

/// What the suite needs from a backend's test setup.
#[async_trait]
pub trait ConformanceHarness: Send + Sync {
    /// The provider under test.
    fn provider(&self) -> Arc<dyn KeyProvider>;
    /// Creates a fresh enabled key in `region`.
    async fn create_key(&self, region: &Region) -> KeyRef;
    /// Disables `key` as its owner would.
    async fn disable(&self, key: &KeyRef);
    /// Enables `key`.
    async fn enable(&self, key: &KeyRef);
    /// Schedules `key` for deletion.
    async fn schedule_deletion(&self, key: &KeyRef);
    /// Cancels the deletion of `key` (which leaves it disabled, as in AWS KMS).
    async fn cancel_deletion(&self, key: &KeyRef);
    /// A reference to a key that does not exist.
    fn missing_key(&self) -> KeyRef;
}

/// A failed conformance check.
pub type Outcome = Result<(), String>;

/// Runs every check, stopping at the first failure.
pub async fn run_all(h: &dyn ConformanceHarness) -> Outcome {
    round_trip(h).await?;
    context_is_bound(h).await?;
    tampering_is_detected(h).await?;
    disabled_keys_refuse(h).await?;
    pending_deletion_refuses(h).await?;
    missing_keys_are_not_found(h).await?;
    describe_reports_region_and_state(h).await?;
    Ok(())
}

fn region(name: &str) -> Result<Region, String> {
    Region::parse(name).map_err(|e| e.to_string())
}

fn ctx() -> EncryptionContext {
    let mut c = EncryptionContext::new();
    c.insert("tenant", "conformance");
    c.insert("purpose", "suite");
    c
}

fn expect<T>(r: Result<T, ProviderError>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what} failed: {e}"))
}

/// Generate, wrap under a second key, unwrap both: the same data key every time.
pub async fn round_trip(h: &dyn ConformanceHarness) -> Outcome {
    let p = h.provider();
    let k1 = h.create_key(&region("eu-central-1")?).await;
    let k2 = h.create_key(&region("eu-west-1")?).await;
    let (dk, edk1) = expect(p.generate_data_key(&k1, 32, &ctx()).await, "generate_data_key")?;
    if dk.len() != 32 {
        return Err(format!("generate_data_key returned {} bytes, not 32", dk.len()));
    }
    if p.key_for(&edk1).as_ref() != Some(&k1) {
        return Err("key_for does not name the generating key".into());
    }
    let edk2 = expect(p.wrap(&k2, &dk, &ctx()).await, "wrap")?;
    if p.key_for(&edk2).as_ref() != Some(&k2) {
        return Err("key_for does not name the wrapping key".into());
    }
    for (edk, which) in [(&edk1, "generated"), (&edk2, "wrapped")] {
        let back = expect(p.unwrap(edk, &ctx()).await, "unwrap")?;
        if !back.ct_eq(&dk) {
            return Err(format!("unwrap of the {which} key returned a different data key"));
        }
    }
    let (other, _) = expect(p.generate_data_key(&k1, 32, &ctx()).await, "second generate_data_key")?;
    if other.ct_eq(&dk) {
        return Err("two generate_data_key calls returned the same key".into());
    }
    Ok(())
}

/// An encrypted data key does not unwrap under another context.
pub async fn context_is_bound(h: &dyn ConformanceHarness) -> Outcome {
    let p = h.provider();
    let k = h.create_key(&region("eu-central-1")?).await;
    let (_, edk) = expect(p.generate_data_key(&k, 32, &ctx()).await, "generate_data_key")?;
    let mut other = ctx();
    other.insert("tenant", "someone-else");
    match p.unwrap(&edk, &other).await {
        Err(e) if e.class() == ErrorClass::Invalid => Ok(()),
        Err(e) => Err(format!("unwrap under another context failed with the wrong kind: {e}")),
        Ok(_) => Err("unwrap under another tenant's context succeeded".into()),
    }
}

/// A tampered encrypted data key does not unwrap.
pub async fn tampering_is_detected(h: &dyn ConformanceHarness) -> Outcome {
    let p = h.provider();
    let k = h.create_key(&region("eu-central-1")?).await;
    let (_, mut edk) = expect(p.generate_data_key(&k, 32, &ctx()).await, "generate_data_key")?;
    if let Some(b) = edk.ciphertext.last_mut() {
        *b ^= 1;
    }
    match p.unwrap(&edk, &ctx()).await {
        Err(e) if e.class() == ErrorClass::Invalid => Ok(()),
        Err(e) => Err(format!("tampered unwrap failed with the wrong kind: {e}")),
        Ok(_) => Err("a tampered encrypted data key unwrapped".into()),
    }
}

async fn all_refuse(
    p: &dyn KeyProvider,
    k: &KeyRef,
    edk: &keyhold_core::EncryptedDataKey,
    ok: fn(&ProviderError) -> bool,
    state: &str,
) -> Outcome {
    let dk = keyhold_core::DataKey::from_slice(&[7; 32]);
    let results = [
        ("generate_data_key", p.generate_data_key(k, 32, &ctx()).await.err()),
        ("wrap", p.wrap(k, &dk, &ctx()).await.err()),
        ("unwrap", p.unwrap(edk, &ctx()).await.err()),
    ];
    for (op, err) in results {
        match err {
            Some(e) if ok(&e) && e.class() == ErrorClass::Revoked => {}
            Some(e) => {
                return Err(format!("{op} on a {state} key failed with the wrong error: {e}"));
            }
            None => return Err(format!("{op} on a {state} key succeeded")),
        }
    }
    Ok(())
}

/// A disabled key refuses generate, wrap and unwrap with [`ProviderError::KeyDisabled`],
/// and works again once enabled.
pub async fn disabled_keys_refuse(h: &dyn ConformanceHarness) -> Outcome {
    let p = h.provider();
    let k = h.create_key(&region("eu-central-1")?).await;
    let (dk, edk) = expect(p.generate_data_key(&k, 32, &ctx()).await, "generate_data_key")?;
    h.disable(&k).await;
    all_refuse(p.as_ref(), &k, &edk, |e| matches!(e, ProviderError::KeyDisabled { .. }), "disabled").await?;
    h.enable(&k).await;
    let back = expect(p.unwrap(&edk, &ctx()).await, "unwrap after enable")?;
    if !back.ct_eq(&dk) {
        return Err("unwrap after enable returned a different key".into());
    }
    Ok(())
}

/// A key pending deletion refuses with [`ProviderError::KeyPendingDeletion`]; cancelling
/// leaves it disabled; enabling restores it.
pub async fn pending_deletion_refuses(h: &dyn ConformanceHarness) -> Outcome {
    let p = h.provider();
    let k = h.create_key(&region("eu-central-1")?).await;
    let (_, edk) = expect(p.generate_data_key(&k, 32, &ctx()).await, "generate_data_key")?;
    h.schedule_deletion(&k).await;
    all_refuse(p.as_ref(), &k, &edk, |e| matches!(e, ProviderError::KeyPendingDeletion { .. }), "pending-deletion")
        .await?;
    h.cancel_deletion(&k).await;
    all_refuse(p.as_ref(), &k, &edk, |e| matches!(e, ProviderError::KeyDisabled { .. }), "cancelled-deletion").await?;
    h.enable(&k).await;
    expect(p.unwrap(&edk, &ctx()).await, "unwrap after cancel and enable")?;
    Ok(())
}

/// Unknown keys are [`ProviderError::KeyNotFound`].
pub async fn missing_keys_are_not_found(h: &dyn ConformanceHarness) -> Outcome {
    let p = h.provider();
    let missing = h.missing_key();
    match p.generate_data_key(&missing, 32, &ctx()).await {
        Err(ProviderError::KeyNotFound { .. }) => {}
        other => {
            return Err(format!("generate_data_key on a missing key gave {:?}", other.err()));
        }
    }
    match p.describe(&missing).await {
        Err(ProviderError::KeyNotFound { .. }) => Ok(()),
        other => Err(format!("describe of a missing key gave {:?}", other.err())),
    }
}

/// `describe` reports the key's region and follows its state.
pub async fn describe_reports_region_and_state(h: &dyn ConformanceHarness) -> Outcome {
    let p = h.provider();
    let r = region("eu-west-1")?;
    let k = h.create_key(&r).await;
    let d = expect(p.describe(&k).await, "describe")?;
    if d.region != r || d.state != KeyState::Enabled || d.key != k {
        return Err(format!("describe of a new key in {r} returned {d:?}"));
    }
    h.disable(&k).await;
    let d = expect(p.describe(&k).await, "describe after disable")?;
    if d.state != KeyState::Disabled {
        return Err(format!("describe after disable reports {}", d.state.name()));
    }
    h.enable(&k).await;
    Ok(())
}
