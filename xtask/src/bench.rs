//! `cargo xtask bench`: the micro-benchmarks of `ws-core`.

use std::fs;

use crate::{cargo, exec, project_root};

pub(crate) fn run(runner_args: &[String]) -> anyhow::Result<()> {
    let core = project_root().join("crates/ws-core");
    let has_bench_dir = fs::read_dir(core.join("benches")).is_ok_and(|mut entries| {
        entries.any(|entry| {
            entry.is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "rs"))
        })
    });
    let declares_bench = fs::read_to_string(core.join("Cargo.toml"))
        .is_ok_and(|manifest| manifest.contains("[[bench]]"));
    if !has_bench_dir && !declares_bench {
        println!(
            "ws-core has no benchmarks yet: add them under crates/ws-core/benches/ \
             (hub fan-out, client throughput), then `cargo xtask bench` runs them"
        );
        return Ok(());
    }
    println!("==> ws-core micro-benchmarks");
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "ws-core"]);
    if !runner_args.is_empty() {
        cmd.arg("--").args(runner_args);
    }
    exec(&mut cmd)
}
