//! Test-only harness shared by keyhold's test suites.
//!
//! - [`moto_endpoint`]: the moto server the test command (`scripts/test`) started, read
//!   from `AWS_ENDPOINT_URL`. A test that needs it and does not find it fails, naming the
//!   command to run: no test passes because its service is missing.
//! - [`FaultProxy`]: an HTTP proxy between `aws-sdk-kms` / STS and moto that forwards
//!   every call, records it, and injects what moto does not model, per operation and per
//!   key: disabled keys, pending deletion, access denied, not found, throttling, 5xx,
//!   dropped connections and latency.
//! - [`peak_rss_kib`]: a process's peak resident set size, for memory-bound tests.

#![forbid(unsafe_code)]

mod proxy;

pub use proxy::{Call, Fault, FaultProxy, Rule, RuleId};

/// The moto server's URL (`http://127.0.0.1:PORT`).
///
/// # Panics
/// When the test command did not start moto; the message says how to run the tests.
#[allow(clippy::panic)]
pub fn moto_endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "AWS_ENDPOINT_URL is not set, so no moto server is running for this test; \
             run the suite with scripts/test, which starts one"
        ),
    }
}

/// An AWS configuration for tests: static test credentials, `region`, every service at
/// `endpoint` (moto, or a [`FaultProxy`] in front of it), and quick timeouts and retries
/// so fault tests finish fast.
pub async fn sdk_config(endpoint: &str, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "keyhold-testkit",
        ))
        .load()
        .await
}

/// A KMS client straight to moto (no proxy) for `region`, for the key owner's side of a
/// test: creating keys, changing their state.
pub async fn moto_kms(region: &str) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&sdk_config(&moto_endpoint(), region).await)
}

/// Creates a symmetric encryption key in moto in `region`; returns its ARN.
///
/// # Panics
/// When moto refuses (a broken test setup).
pub async fn create_moto_key(region: &str) -> String {
    create_moto_key_with_policy(region, None).await
}

/// As [`create_moto_key`], with a key policy.
///
/// # Panics
/// When moto refuses (a broken test setup).
#[allow(clippy::expect_used)]
pub async fn create_moto_key_with_policy(region: &str, policy: Option<&str>) -> String {
    let out = moto_kms(region)
        .await
        .create_key()
        .description("keyhold test key")
        .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
        .set_policy(policy.map(str::to_owned))
        .send()
        .await
        .expect("moto CreateKey");
    out.key_metadata().and_then(|m| m.arn()).expect("moto returned no key ARN").to_owned()
}

/// Peak resident set size of process `pid` in KiB (`VmHWM` in `/proc/<pid>/status`).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
