//! The Redis broker through Redis Sentinel, with real processes: a master (AOF,
//! `appendfsync always`, a password), a replica and two sentinels; `SENTINEL FAILOVER` while
//! two nodes publish.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::redis_server::*;

/// Waits until `what` holds, polling.
fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_sentinel_failover_during_a_publish_stream_loses_and_duplicates_nothing() {
    const BEFORE: usize = 40;
    const AFTER: usize = 40;
    const PASSWORD: &str = "sentinel-master-pw-Q7";
    let secured = [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--requirepass",
        PASSWORD,
        "--masterauth",
        PASSWORD,
    ];
    let master = Redis::start_with(&secured);
    let replica_of = format!("127.0.0.1 {}", master.port);
    let mut replica_args = secured.to_vec();
    replica_args.extend(["--replicaof", &replica_of]);
    let replica = Redis::start_with(&replica_args);
    wait_until("the replica in sync", Duration::from_secs(10), || {
        replica
            .cli(&["-a", PASSWORD, "--no-auth-warning", "INFO", "replication"])
            .contains("master_link_status:up")
    });
    let sentinels = [
        Sentinel::start(master.port, Some(PASSWORD)),
        Sentinel::start(master.port, Some(PASSWORD)),
    ];
    for s in &sentinels {
        wait_until(
            "the sentinel knows the replica",
            Duration::from_secs(15),
            || {
                s.cli(&["SENTINEL", "replicas", "main"])
                    .contains(&replica.port.to_string())
            },
        );
    }
    let keys = format!(
        "redis_sentinels = [\"{}\", \"{}\"]\nredis_sentinel_master = \"main\"\nredis_sentinel_master_password = \"{PASSWORD}\"",
        sentinels[0].url(),
        sentinels[1].url()
    );
    let (a, b) = (node_with(&keys), node_with(&keys));
    wait_readyz(&a, 200, Duration::from_secs(10)).await;
    wait_readyz(&b, 200, Duration::from_secs(10)).await;
    let project = "sentinel";
    let mut watchers = Vec::new();
    let mut epoch = String::new();
    for (n, node) in [&a, &b].into_iter().enumerate() {
        let (watcher, welcome) = Watcher::join(node, project, &format!("u{n}"), "").await;
        epoch = welcome["epoch"].as_str().unwrap().to_owned();
        watchers.push(watcher);
    }

    // Readiness is watched all along, so that a short 503 shows.
    let saw_503 = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let watch_url = a.http("/readyz");
    let watcher = tokio::spawn({
        let (saw_503, done) = (Arc::clone(&saw_503), Arc::clone(&done));
        async move {
            while !done.load(Ordering::SeqCst) {
                if http("GET", &watch_url, &[], "").await.0 == 503 {
                    saw_503.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    let mut accepted: BTreeMap<u64, u64> = BTreeMap::new();
    let mut refused = 0;
    let mut i = 0u64;
    let publish = async |i: u64, accepted: &mut BTreeMap<u64, u64>| {
        publish_alternating([&a, &b], project, i, accepted).await
    };
    while accepted.len() < BEFORE {
        assert!(publish(i, &mut accepted).await);
        i += 1;
    }

    // A sentinel refuses (NOGOODSLAVE) until it has checked the replica recently: ask
    // again until it starts.
    let asked = Instant::now();
    loop {
        let answer = sentinels[0].cli(&["SENTINEL", "FAILOVER", "main"]);
        if answer == "OK" {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "SENTINEL FAILOVER: {answer}"
        );
        if !publish(i, &mut accepted).await {
            refused += 1;
        }
        i += 1;
    }
    let before = accepted.len();
    while accepted.len() < before + AFTER || sentinels[0].master_port() != Some(replica.port) {
        if !publish(i, &mut accepted).await {
            refused += 1;
        }
        i += 1;
        assert!(
            asked.elapsed() < Duration::from_secs(25),
            "publishing stalled"
        );
    }
    // A few more on the new master for sure.
    let settled = accepted.len();
    while accepted.len() < settled + 10 {
        if !publish(i, &mut accepted).await {
            refused += 1;
        }
        i += 1;
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "publishing stalled"
        );
    }
    assert_eq!(
        sentinels[0].master_port(),
        Some(replica.port),
        "the replica is the master"
    );
    let took = asked.elapsed();
    let ready_a = wait_readyz(&a, 200, Duration::from_secs(10)).await;
    wait_readyz(&b, 200, Duration::from_secs(10)).await;
    done.store(true, Ordering::SeqCst);
    watcher.await.unwrap();
    assert!(
        saw_503.load(Ordering::SeqCst),
        "/readyz went 503 during the failover"
    );

    // Nothing acknowledged is lost: the new master's history holds every acknowledged
    // publish at the offset it was given. It may hold more: a publish refused with 503
    // because no replica confirmed it in time may still have reached one (as a refused
    // publish may have gone through on a single Redis).
    let (status, page) = api(
        &b,
        "GET",
        &format!("/api/projects/{project}/messages?since=0"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let stored: BTreeMap<u64, u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                m["data"]["i"].as_u64().unwrap(),
            )
        })
        .collect();
    let top = *stored.keys().last().unwrap();
    assert_eq!(
        stored.keys().copied().collect::<Vec<_>>(),
        (1..=top).collect::<Vec<_>>()
    );
    for (offset, i) in &accepted {
        assert_eq!(
            stored.get(offset),
            Some(i),
            "acknowledged publish {i} at {offset}"
        );
    }

    // Each client got every message once, in order; or, if a node had delivered a message
    // the old master took but never passed on (refused to its publisher: no replica had
    // it), the stream got a new epoch, the client was closed with 1013 and learns
    // `recovered: false` on its return.
    let mut reloaded = 0;
    for (k, (watcher, user)) in watchers.iter().zip(["u0", "u1"]).enumerate() {
        let deadline = Instant::now() + Duration::from_secs(20);
        while watcher.is_open() && watcher.messages().len() < top as usize {
            assert!(
                Instant::now() < deadline,
                "client {k}: {} of {top}",
                watcher.messages().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let messages = watcher.messages();
        let got = offsets_of(&messages);
        assert!(
            got.windows(2).all(|w| w[1] == w[0] + 1),
            "client {k}: once, in order: {got:?}"
        );
        if watcher.is_open() {
            assert_eq!(got, (1..=top).collect::<Vec<_>>(), "client {k}");
            for m in &messages {
                let offset = m["offset"].as_u64().unwrap();
                assert_eq!(m["data"]["i"].as_u64(), stored.get(&offset).copied());
            }
            continue;
        }
        let frames = watcher.frames.lock().unwrap().clone();
        assert_eq!(
            frames.last().unwrap()["code"],
            1013,
            "client {k}: {:?}",
            frames.last()
        );
        // Closed only because a node had delivered messages the failover dropped: it gave
        // the stream a new epoch.
        assert_ne!(
            page["epoch"],
            epoch.as_str(),
            "client {k} closed, yet the stream kept its epoch"
        );
        let last = *got.last().unwrap();
        let (_back, welcome) = Watcher::join(
            if k == 0 { &a } else { &b },
            project,
            user,
            &format!("?since={last}&epoch={epoch}"),
        )
        .await;
        assert_eq!(welcome["recovered"], false, "client {k}: {welcome}");
        reloaded += 1;
    }
    for node in [&a, &b] {
        assert!(
            node.logs().iter().all(|l| !l.contains(PASSWORD)),
            "the master's password is logged"
        );
    }
    eprintln!(
        "redis sentinel failover: {} publishes acknowledged, {refused} refused with 503; SENTINEL FAILOVER to 10 publishes on the new master took {took:?}; \
         history holds all of them ({top} stored), 0 lost, 0 duplicated; {reloaded} of {} clients had seen unacknowledged messages the failover dropped and were told recovered:false; readyz 503 during, 200 again (after {ready_a:?})",
        accepted.len(),
        watchers.len(),
    );
}
