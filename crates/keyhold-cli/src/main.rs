//! The `keyhold` binary: the local key provider's console, encrypt/decrypt under local or
//! AWS KMS keys, the onboarding tools (policy, template, validate), the HTTP server
//! (`serve`, `token`) and its client commands (`tenant`, `key`, `audit`, `--url`).
//!
//! Flags are parsed by clap into plain structs ([`flags`]); [`commands`] then builds the
//! real objects and runs them. Errors print their whole cause chain and exit with 1.

mod client;
mod commands;
mod flags;
mod server_cmds;

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc: the server's request path allocates from several threads at once, where
/// glibc's allocator contends on its arena locks (measured: 10-15% of HTTP throughput).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = flags::Cli::parse();
    match commands::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyhold: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
