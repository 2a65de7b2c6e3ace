//! SIGTERM drains every client with 1001; clients reconnect to the next process.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn sigterm_sends_1001_to_every_client_and_exits_0_within_the_drain() {
    let mut server = Server::start("[shutdown]\ndrain = \"2s\"\n");
    let mut clients = Vec::new();
    for i in 0..200 {
        clients.push(
            join(&server, &format!("p{}", i % 4), &format!("u{i}"))
                .await
                .0,
        );
    }
    let waiting: Vec<_> = clients
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { recv_close(&mut ws).await }))
        .collect();
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (status, server)
    });
    for w in waiting {
        let (code, reason, _) = w.await.unwrap();
        assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    }
    let (status, _server) = status.await.unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(4),
        "exit after {took:?}, drain is 2 s"
    );
}

#[tokio::test]
async fn after_a_restart_clients_reconnect_and_receive_new_messages() {
    let mut first = Server::start("[shutdown]\ndrain = \"500ms\"\n");
    let addr = first.addr;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(join(&first, "p", &format!("u{i}")).await.0);
    }
    let terminated = tokio::task::spawn_blocking(move || first.terminate());
    for ws in &mut clients {
        assert_eq!(recv_close(ws).await.0, 1001);
    }
    assert!(terminated.await.unwrap().success());

    let second = Server::start_on(&addr.to_string(), "");
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(join(&second, "p", &format!("u{i}")).await.0);
    }
    publish(&mut clients[0], json!("after restart")).await;
    for ws in &mut clients {
        assert_eq!(recv_message(ws).await["data"], "after restart");
    }
}

/// `server.worker_threads = 1` runs everything on tokio's single-threaded runtime: it
/// serves, fans out and drains like the multi-threaded one.
#[tokio::test]
async fn a_single_threaded_runtime_serves_fans_out_and_drains() {
    let mut server = Server::start_with_server_keys(
        "127.0.0.1:0",
        "worker_threads = 1",
        "[shutdown]\ndrain = \"1s\"\n",
    );
    server
        .wait_for_log("the runtime's start", |l| {
            l.contains("runtime started") && l.contains("single-threaded")
        })
        .await;
    let mut clients = Vec::new();
    for i in 0..50 {
        clients.push(join(&server, "p", &format!("u{i}")).await.0);
    }
    for n in 0..20 {
        publish(&mut clients[n % 50], json!({ "n": n })).await;
    }
    for ws in &mut clients {
        for n in 0..20 {
            let msg = recv_message(ws).await;
            assert_eq!(msg["data"], json!({ "n": n }), "in order, nothing lost");
        }
    }
    let waiting: Vec<_> = clients
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { recv_close(&mut ws).await }))
        .collect();
    let status = tokio::task::spawn_blocking(move || server.terminate());
    for w in waiting {
        let (code, _, _) = w.await.unwrap();
        assert_eq!(code, 1001);
    }
    assert!(status.await.unwrap().success());
}
