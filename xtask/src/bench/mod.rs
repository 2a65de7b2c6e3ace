//! `cargo xtask bench`: the load benchmark, wshub against the baseline servers of
//! `../shared/peers` in one run on one machine, and the ws-core micro-benchmarks (`--micro`).
//!
//! Each case runs `--runs` times (3 by default) against every server, interleaved (run 1 of
//! every server, then run 2, …) so that a noisy neighbour hurts all of them alike; without
//! `--runs`, a fan-out case runs at least 5 times when `uws` is among the servers (its rate
//! is bimodal between runs), and the v2 cases run against wshub alone (the baselines do not
//! speak v2). Every run
//! starts a fresh server pinned to CPU 0 and the generator (`bins/wshub-bench`) pinned to
//! CPU 1, and reads the generator's one JSON line. The medians, the ratios wshub/baseline and
//! the targets go between the markers of `docs/benchmarks.md`; every run's JSON goes to
//! `target/bench/results.json`.
//!
//! This module is the command and its flags: the quick and full profiles, the peers, the
//! micro-benchmarks. [`cases`] holds the case table and its metrics, [`run`](mod@run) one run
//! of a case against a fresh server, [`report`] the console lines, `docs/benchmarks.md` and
//! `target/bench/results.json`, [`redis`] the `redis-fanout` and `redis-cluster-fanout`
//! cases (1–3 nodes on one Redis and on a 3-shard cluster, Redis CPU per delivery), and
//! [`redis_pub`] the
//! `redis-1pub`/`redis-8pub` cases (Redis against memory on one node, by publishers).
//! Starting and stopping servers is `crate::servers`, shared with `cargo xtask soak`.

use std::fs;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::flags::BenchFlags;
use crate::servers::{
    Pinning, ReleaseBuild, Server, build_peer, build_release, fresh_release_wshub,
};
use crate::{cargo, exec, project_root};

mod cases;
mod redis;
mod redis_pub;
mod report;
mod run;

use cases::{full_cases, quick_cases};
use redis::Topology;
use report::{Report, Results, brief, fmt_value, merge_previous, splice, write_raw};
use run::{losses, run_once};

/// The baseline servers, in table order.
const PEERS: &[&str] = &["node-ws", "rust-naive", "uws"];

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let flags = BenchFlags::parse(args).map_err(anyhow::Error::msg)?;
    if flags.micro {
        return micro(&flags.runner_args);
    }
    if flags.quick {
        return quick(flags.runs.unwrap_or(1));
    }
    full(&flags, args)
}

/// The smoke profile of `cargo xtask test`: small, wshub only, asserting only that every case
/// ran and lost nothing.
pub(crate) fn quick(runs: u32) -> anyhow::Result<()> {
    let root = project_root();
    exec(cargo().args(["build", "--quiet", "-p", "wshub-bench"]))?;
    let wshub = match fresh_release_wshub(&root) {
        Some(binary) => {
            println!(
                "wshub: release build {} (newer than every source file)",
                binary.display()
            );
            binary
        }
        None => {
            println!("wshub: debug build (no release build newer than the sources)");
            exec(cargo().args(["build", "--quiet", "-p", "server", "--bin", "wshub"]))?;
            root.join("target/debug/wshub")
        }
    };
    let generator = root.join("target/debug/wshub-bench");
    let work = root.join("target/bench/quick");
    fs::create_dir_all(&work)?;
    let server = Server::Wshub { binary: wshub };
    let pinning = Pinning::detect();
    let mut problems = Vec::new();
    for case in quick_cases() {
        for run in 1..=runs {
            let result = run_once(&server, &case, run, &generator, &work, pinning)
                .with_context(|| format!("quick bench `{}`", case.name))?;
            let summary: Vec<String> = case
                .metrics
                .iter()
                .map(|m| format!("{} {}", m.label, fmt_value(result.get(m.key))))
                .collect();
            println!("  {:<12} {}", case.name, summary.join(", "));
            problems.extend(
                losses(&result)
                    .into_iter()
                    .map(|p| format!("{}: {p}", case.name)),
            );
        }
    }
    for topology in [Topology::Standalone, Topology::Cluster] {
        match redis::missing(topology) {
            None => redis::quick(topology)
                .with_context(|| format!("quick bench `{}`", topology.case()))?,
            Some(why) => println!("  {:<12} skipped: {why}", topology.case()),
        }
    }
    if !problems.is_empty() {
        bail!(
            "the quick bench ran but lost something:\n  {}",
            problems.join("\n  ")
        );
    }
    println!("quick bench: every case ran, nothing lost");
    Ok(())
}

/// The full benchmark: release builds, every peer, medians, `docs/benchmarks.md`.
fn full(flags: &BenchFlags, args: &[String]) -> anyhow::Result<()> {
    let root = project_root();
    let runs = flags.runs.unwrap_or(3);
    let mut cases = full_cases();
    let redis_cases: Vec<Topology> = [Topology::Standalone, Topology::Cluster]
        .into_iter()
        .filter(|t| flags.cases.is_empty() || flags.cases.iter().any(|c| c == t.case()))
        .collect();
    let redis_pub_cases: Vec<(&'static str, usize)> = redis_pub::CASES
        .into_iter()
        .filter(|(name, _)| flags.cases.is_empty() || flags.cases.iter().any(|c| c == name))
        .collect();
    if !flags.cases.is_empty() {
        let mut known: Vec<&str> = cases.iter().map(|c| c.name).collect();
        known.extend([redis::CASE, redis::CLUSTER_CASE]);
        known.extend(redis_pub::CASES.iter().map(|(name, _)| *name));
        if let Some(unknown) = flags.cases.iter().find(|c| !known.contains(&c.as_str())) {
            bail!("unknown case `{unknown}`; cases: {}", known.join(", "));
        }
        cases.retain(|c| flags.cases.iter().any(|f| f == c.name));
    }
    if let Some(unknown) = flags.peers.iter().find(|p| !PEERS.contains(&p.as_str())) {
        bail!("unknown peer `{unknown}`; peers: {}", PEERS.join(", "));
    }

    let ReleaseBuild { wshub, generator } = build_release(&root)?;
    let mut servers = vec![wshub];
    let mut notes = Vec::new();
    let wanted_peers: Vec<&'static str> = if flags.no_peers || cases.is_empty() {
        Vec::new()
    } else {
        PEERS
            .iter()
            .copied()
            .filter(|p| flags.peers.is_empty() || flags.peers.iter().any(|f| f == p))
            .collect()
    };
    for peer in wanted_peers {
        println!("\n==> baseline `{peer}`: copy into target/peers and build");
        match build_peer(&root, peer) {
            Ok(dir) => servers.push(Server::Peer { name: peer, dir }),
            Err(e) => {
                eprintln!("error: {e:#}");
                notes.push(format!(
                    "`{peer}` could not be built and was left out: {e:#}"
                ));
            }
        }
    }

    let work = root.join("target/bench");
    fs::create_dir_all(work.join("logs"))?;
    let pinning = Pinning::detect();
    if !pinning.pinned() {
        notes.push(pinning.describe());
    }
    let started = Instant::now();
    let load_before = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let raw_path = work.join("results.json");
    // A rerun of some cases keeps the other cases of the previous run, so one noisy case can
    // be measured again without rerunning everything (and the table stays whole).
    let previous: Vec<Value> = if flags.cases.is_empty() {
        Vec::new()
    } else {
        fs::read_to_string(&raw_path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    };
    // results[case][server] = one entry per run.
    let mut results: Results = vec![vec![Vec::new(); servers.len()]; cases.len()];
    let names: Vec<&str> = servers.iter().map(Server::name).collect();
    // An explicit `--runs` is obeyed (a smoke run of one); the default count is raised for
    // the fan-out cases when uws runs.
    let bimodal = cases.iter().any(|c| c.runs(runs, &names) > runs);
    if bimodal && flags.runs.is_none() {
        notes.push(format!(
            "uws is among the servers: every fan-out case that the baselines run ran {} times (uws's fan-out rate is bimodal between runs; see the min–max spread run by run).",
            cases::BIMODAL_RUNS
        ));
    } else if bimodal {
        notes.push(format!(
            "uws's fan-out rate is bimodal between runs, and `--runs {runs}` is fewer than the {} runs its fan-out medians need: read its fan-out figures as a smoke test only.",
            cases::BIMODAL_RUNS
        ));
    }
    for (c, case) in cases.iter().enumerate() {
        let case_runs = if flags.runs.is_some() {
            runs
        } else {
            case.runs(runs, &names)
        };
        for run in 1..=case_runs {
            for (s, server) in servers.iter().enumerate() {
                if case.wshub_only && !matches!(server, Server::Wshub { .. }) {
                    continue;
                }
                println!(
                    "\n==> {} · {} · run {run}/{case_runs}",
                    case.name,
                    server.name()
                );
                let result = run_once(server, case, run, &generator, &work, pinning)
                    .map_err(|e| format!("{e:#}"));
                match &result {
                    Ok(value) => println!("{}", brief(case, value)),
                    Err(e) => eprintln!("error: {e}"),
                }
                results[c][s].push(result);
                // Kept after every run, so an interrupted benchmark still leaves its data.
                let (all, all_results, _) = merge_previous(&cases, &results, &servers, &previous);
                write_raw(&raw_path, &all, &servers, &all_results)?;
            }
        }
    }
    let elapsed = started.elapsed();

    // Only the broker cases asked for (`--case redis-1pub`): the main table is left alone.
    let main_ran = !cases.is_empty();
    let (cases, results, kept) = merge_previous(&cases, &results, &servers, &previous);
    if !kept.is_empty() {
        let quoted = |names: &mut dyn Iterator<Item = &str>| {
            names
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        notes.push(format!(
            "Rerun in this invocation: {}; {} from the previous run (`target/bench/results.json`), possibly of another commit and run count.",
            quoted(&mut flags.cases.iter().map(String::as_str)),
            quoted(&mut kept.iter().copied())
        ));
    }

    let command = std::iter::once("cargo xtask bench".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let report = Report {
        command: &command,
        cases: &cases,
        servers: &servers,
        results: &results,
        runs,
        notes: &notes,
        kept: &kept,
        elapsed,
        load_before: load_before.trim(),
        pinning,
    };
    let doc = root.join("docs/benchmarks.md");
    if main_ran && !cases.is_empty() {
        let section = report.render();
        let text = fs::read_to_string(&doc).unwrap_or_default();
        fs::write(&doc, splice(&text, &section))?;
        println!("\n{section}");
        println!(
            "wrote {} (and every run's JSON to {})",
            doc.display(),
            raw_path.display()
        );
    }
    if !redis_pub_cases.is_empty() {
        if redis::available() {
            let section = redis_pub::full(
                &root,
                &redis_pub_cases,
                &servers[0],
                &generator,
                pinning,
                runs,
            )?;
            println!("\n{section}\nwrote {}", doc.display());
        } else {
            eprintln!("`redis-1pub`, `redis-8pub` skipped: no `redis-server` on PATH");
        }
    }
    for topology in redis_cases {
        match redis::missing(topology) {
            None => {
                let section = redis::full(&root, runs, topology)?;
                println!("\n{section}\nwrote {}", doc.display());
            }
            Some(why) => eprintln!("`{}` skipped: {why}", topology.case()),
        }
    }
    Ok(())
}

/// `cargo bench -p ws-core`: the micro-benchmarks (divan).
fn micro(runner_args: &[String]) -> anyhow::Result<()> {
    println!("==> ws-core micro-benchmarks");
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "ws-core"]);
    if !runner_args.is_empty() {
        cmd.arg("--").args(runner_args);
    }
    exec(&mut cmd)
}
