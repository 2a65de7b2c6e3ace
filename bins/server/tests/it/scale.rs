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
    let server = Server::start("");
    let start = server.rss_kib();
    let projects = wave(&server).await;
    assert_eq!(connections(&server).await, (PROJECTS * PER_PROJECT) as u64);
    let peak = server.rss_kib();
    drop(projects);
    wait_for_connections(&server, 0).await;
    // The allocator hands freed pages back gradually (jemalloc's decay): wait for RSS to
    // come back near where it started, or fail after a generous deadline.
    let closed = std::time::Instant::now();
    let target = start + peak.saturating_sub(start) / 4;
    let mut after = server.rss_kib();
    while after > target && closed.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        after = server.rss_kib();
    }
    eprintln!(
        "RSS KiB: start {start}, with 2000 open {peak}, after close {after} ({:?} later)",
        closed.elapsed()
    );
    assert!(
        after <= target,
        "memory not released: start {start} KiB, peak {peak} KiB, after {after} KiB"
    );
}
