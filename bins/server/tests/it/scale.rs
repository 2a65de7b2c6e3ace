//! Thousands of connections: all served, all fed, memory given back.

use futures_util::StreamExt;
use serde_json::json;

use crate::harness::*;

const PROJECTS: usize = 50;
const PER_PROJECT: usize = 40;

async fn connections(server: &Server) -> u64 {
    let (status, _, body) = http(
        "GET",
        &server.http("/api/admin/stats"),
        &[("authorization", &format!("Bearer {API_KEY}"))],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["connections"]
        .as_u64()
        .unwrap()
}

async fn wait_for_connections(server: &Server, n: u64) {
    let deadline = tokio::time::Instant::now() + STEP;
    while connections(server).await != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections never reached {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Opens every connection, publishes once per project, checks every member got it.
async fn wave(server: &Server) -> Vec<Vec<Ws>> {
    let mut projects = Vec::new();
    for p in 0..PROJECTS {
        let members = futures_util::stream::iter(0..PER_PROJECT)
            .map(|i| {
                let project = format!("proj-{p}");
                async move { join(server, &project, &format!("user-{p}-{i}")).await.0 }
            })
            .buffer_unordered(40)
            .collect::<Vec<_>>()
            .await;
        projects.push(members);
    }
    for (p, members) in projects.iter_mut().enumerate() {
        publish(&mut members[0], json!({"project": p})).await;
    }
    for (p, members) in projects.iter_mut().enumerate() {
        for ws in members.iter_mut() {
            let msg = recv_message(ws).await;
            assert_eq!(
                msg["data"]["project"], p,
                "a message of another project arrived"
            );
        }
    }
    projects
}

#[tokio::test]
async fn two_thousand_connections_across_fifty_projects() {
    // jemalloc returns freed pages after a decay of 10 s; without it they go back at once,
    // so the test sees what is freed without waiting for the decay curve.
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n\
         [auth]\nhs256_secrets = [\"{SECRET}\"]\napi_keys = [\"{API_KEY}\"]\n"
    );
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_wshub"));
    command.env("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0");
    let server = Server::start_in_command(TempDir::new(), &toml, command);
    let start = server.rss_kib();
    // A first wave grows what stays once it is gone: the hub's maps, the histories of the
    // fifty projects, the runtime's and the allocator's own structures. The second wave,
    // on that baseline, shows that connections give back what they took.
    let first = wave(&server).await;
    let first_peak = server.rss_kib();
    drop(first);
    wait_for_connections(&server, 0).await;
    let baseline = settle(&server).await;
    let projects = wave(&server).await;
    assert_eq!(connections(&server).await, (PROJECTS * PER_PROJECT) as u64);
    let peak = server.rss_kib();
    drop(projects);
    wait_for_connections(&server, 0).await;
    let after = settle(&server).await;
    eprintln!(
        "RSS KiB: start {start}, first wave {first_peak}, after it {baseline}, \
         second wave {peak}, after it {after}"
    );
    assert!(
        peak > baseline + 2000 * 2,
        "2000 connections should take some memory: {baseline} KiB -> {peak} KiB"
    );
    let target = baseline + peak.saturating_sub(baseline) / 4;
    assert!(
        after <= target,
        "memory not released: baseline {baseline} KiB, peak {peak} KiB, after {after} KiB"
    );
}

/// RSS once the connections' tasks have ended and their memory went back: the lowest
/// reading once it stopped falling for a second (at most 15 s).
async fn settle(server: &Server) -> u64 {
    let started = std::time::Instant::now();
    let mut lowest = server.rss_kib();
    let mut lowest_at = started;
    while lowest_at.elapsed() < std::time::Duration::from_secs(1)
        && started.elapsed() < std::time::Duration::from_secs(15)
    {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = server.rss_kib();
        if now < lowest {
            lowest = now;
            lowest_at = std::time::Instant::now();
        }
    }
    lowest
}
