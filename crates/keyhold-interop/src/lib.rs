//! Test-only crate: proves keyhold's message format against the reference `aws-esdk`
//! implementation in both directions (`tests/`), and benchmarks keyhold against it and
//! against raw AES-GCM (`benches/throughput.rs`). It exists so that the product build never
//! compiles `aws-esdk`. It has no library code.
