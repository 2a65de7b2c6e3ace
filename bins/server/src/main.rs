//! `wshub`: a real-time WebSocket hub. See the README for the tour.
//!
//! This file only parses the command line, runs it and maps errors to exit codes; the commands
//! are in `server::cli`.

use std::process::ExitCode;

use clap::Parser;
use server::cli::{Cli, ConfigError};

/// jemalloc's background thread gives freed memory back to the system, so RSS falls after
/// a wave of connections ends; glibc's per-thread arenas keep it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wshub: {e:#}");
            // 64 is EX_USAGE: configuration and usage errors, as linkerd does.
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(64)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
