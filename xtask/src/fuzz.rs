//! `cargo xtask fuzz`: run the cargo-fuzz targets of `fuzz/` for a bounded time each.
//!
//! cargo-fuzz builds with nightly-only flags (`-Zsanitizer=address`, sancov passes). Only a
//! stable toolchain is available here, so the run sets `RUSTC_BOOTSTRAP=1`, which lets the
//! stable compiler accept them. Builds go to `target/fuzz` so the main target directory is not
//! rebuilt with sanitizer flags. A crash leaves its input in `fuzz/artifacts/<target>/` and
//! fails the task; add such inputs to the corpus test in `crates/ws-auth/src/fuzz.rs`, or for
//! the ws-core targets (`core_client`, `core_hub`: the state machines under arbitrary event
//! sequences) turn them into a unit test next to the state machine.

use std::path::Path;

use anyhow::{Context, bail};

use crate::tools::has_cargo_subcommand;
use crate::{Steps, cargo, exec, project_root};

/// The targets of `fuzz/Cargo.toml`, in the order they run.
const TARGETS: &[&str] = &["token", "headers", "core_client", "core_hub"];

pub(crate) fn run(seconds: u64, targets: &[String]) -> anyhow::Result<()> {
    for target in targets {
        if !TARGETS.contains(&target.as_str()) {
            bail!(
                "unknown fuzz target `{target}`; the targets are {}",
                TARGETS.join(", ")
            );
        }
    }
    let targets: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    if !has_cargo_subcommand("fuzz") {
        println!("cargo-fuzz is not installed: installing it");
        exec(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let root = project_root();
    let mut steps = Steps::default();
    for target in targets {
        steps.step(&format!("fuzz {target} for {seconds} s"), || {
            fuzz_one(&root, target, seconds)
        });
    }
    steps.finish("fuzz")
}

fn fuzz_one(root: &Path, target: &str, seconds: u64) -> anyhow::Result<()> {
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let mut cmd = cargo();
    cmd.env("RUSTC_BOOTSTRAP", "1")
        .args([
            "fuzz",
            "run",
            "--fuzz-dir",
            "fuzz",
            "--target-dir",
            "target/fuzz",
            target,
        ])
        .arg(&corpus);
    let seeds = root.join("fuzz/seeds").join(target);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--").arg(format!("-max_total_time={seconds}"));
    exec(&mut cmd)
}
