//! Integration tests of the message format: round trips, legacy (v1, non-framed) messages,
//! streaming, and the table of malformed inputs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

mod common;
mod legacy;
mod malformed;
mod roundtrip;
mod streaming;
