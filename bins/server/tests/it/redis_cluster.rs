//! The Redis broker on a real Redis Cluster (3 primaries, 3 replicas, `redis-server
//! --cluster-enabled yes` on free loopback ports): projects spread over shards, sharded
//! pub/sub, recovery across nodes, and a replica promoted while messages are published.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::redis_server::*;

/// Projects whose keys live on at least two different primaries.
fn spread_projects(cluster: &RedisCluster, n: usize) -> Vec<String> {
    let projects: Vec<String> = (0..n).map(|i| format!("shard-{i}")).collect();
    let masters: std::collections::BTreeSet<u16> = projects
        .iter()
        .map(|p| cluster.master_of(&format!("wshub:{{{p}}}:meta")))
        .collect();
    assert!(masters.len() >= 2, "{projects:?} all on one primary");
    projects
}

/// A node whose cluster seeds come from `WSHUB__BROKER__REDIS_CLUSTER` (comma-separated).
fn node_from_env(cluster: &RedisCluster) -> Server {
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("redis://127.0.0.1:{}", n.port))
        .collect();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n\
         [auth]\nhs256_secrets = [\"{SECRET}\"]\napi_keys = [\"{API_KEY}\"]\nadmin_api_keys = [\"{API_KEY}\"]\n\n\
         [broker]\nkind = \"redis\"\npresence_ttl = \"2s\"\ncommand_timeout = \"1s\"\nconnect_timeout = \"1s\"\n"
    );
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_wshub"));
    command.env("WSHUB__BROKER__REDIS_CLUSTER", seeds.join(","));
    Server::start_in_command(TempDir::new(), &toml, command)
}

#[tokio::test]
async fn projects_on_different_shards_arrive_in_order_once_across_nodes() {
    const EACH: u64 = 15;
    let cluster = RedisCluster::start(3, &[]);
    // Node B reads its seeds from the environment (a comma-separated list).
    let (a, b) = (node_with(&cluster.broker_keys()), node_from_env(&cluster));
    wait_readyz(&a, 200, Duration::from_secs(15)).await;
    wait_readyz(&b, 200, Duration::from_secs(15)).await;
    let projects = spread_projects(&cluster, 6);

    // Subscribers on node A, publisher on node B, the projects' messages interleaved.
    let mut watchers = Vec::new();
    for p in &projects {
        watchers.push(Watcher::join(&a, p, "alice", "").await);
    }
    let started = Instant::now();
    for i in 1..=EACH {
        for p in &projects {
            let (status, body) = publish_via_api(&b, p, json!({"p": p, "i": i})).await;
            assert_eq!(status, 202, "{body}");
            assert_eq!(body["offset"], i, "{body}");
        }
    }
    for ((watcher, _), p) in watchers.iter().zip(&projects) {
        let messages = watcher
            .wait_messages(EACH as usize, Duration::from_secs(15))
            .await;
        assert_eq!(offsets_of(&messages), (1..=EACH).collect::<Vec<_>>(), "{p}");
        for (m, i) in messages.iter().zip(1..) {
            assert_eq!(m["data"], json!({"p": p, "i": i}), "{p}");
        }
    }
    let delivered = started.elapsed();

    // Sharded pub/sub: the channel is subscribed on its shard's primary only, and no
    // classic channel is.
    let p = &projects[0];
    let channel = format!("wshub:{{{p}}}:messages");
    let owner = cluster.node(cluster.master_of(&channel));
    let shard = owner.cli(&["PUBSUB", "SHARDNUMSUB", &channel]);
    assert!(shard.ends_with('1') || shard.ends_with('2'), "{shard}");
    for node in &cluster.nodes {
        assert_eq!(
            node.cli(&["PUBSUB", "NUMSUB", &channel]),
            format!("{channel}\n0")
        );
        if node.port != owner.port && !cluster.replica_of(owner.port).eq(&node.port) {
            assert!(
                node.cli(&["PUBSUB", "SHARDCHANNELS"])
                    .lines()
                    .all(|c| c != channel)
            );
        }
    }

    // Recovery across nodes: away from node A, back on node B.
    let (watcher, welcome) = watchers.remove(0);
    let epoch = welcome["epoch"].as_str().unwrap().to_owned();
    drop(watcher);
    for i in EACH + 1..=EACH + 5 {
        assert_eq!(publish_via_api(&a, p, json!({"p": p, "i": i})).await.0, 202);
    }
    let (back, welcome) =
        Watcher::join(&b, p, "alice", &format!("?since={EACH}&epoch={epoch}")).await;
    assert_eq!(
        (welcome["recovered"].as_bool(), welcome["missed"].as_u64()),
        (Some(true), Some(5)),
        "{welcome}"
    );
    let messages = back.wait_messages(5, Duration::from_secs(10)).await;
    assert_eq!(
        offsets_of(&messages),
        (EACH + 1..=EACH + 5).collect::<Vec<_>>()
    );

    // Presence is the cluster's, per project (its keys in the project's slot).
    let (_bob, _) = Watcher::join(&b, &projects[1], "bob", "").await;
    let want = json!([
        {"user": "alice", "connections": 1},
        {"user": "bob", "connections": 1}
    ]);
    for node in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, body) = api(
                node,
                "GET",
                &format!("/api/projects/{}/presence", projects[1]),
                "",
            )
            .await;
            assert_eq!(status, 200, "{body}");
            if body["users"] == want {
                break;
            }
            assert!(Instant::now() < deadline, "presence: {body}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    eprintln!(
        "redis cluster: {} projects on {} shards, {EACH} messages each published on node B, delivered on node A in order once within {delivered:?}; recovery on the other node replayed 5",
        projects.len(),
        3
    );
}

/// A primary is replaced by its replica (`CLUSTER FAILOVER`) while two nodes publish to a
/// project it serves: publishes are refused (503) or accepted, never lost silently; every
/// accepted message reaches every client once, in order; readiness ends at 200.
#[tokio::test]
async fn a_replica_promotion_during_a_publish_stream_loses_and_duplicates_nothing() {
    const BEFORE: usize = 40;
    const AFTER: usize = 40;
    let cluster = RedisCluster::start(3, &[]);
    let (a, b) = two_nodes(&cluster).await;
    let project = "failover";
    let mut watchers = Vec::new();
    for (n, node) in [&a, &b].into_iter().enumerate() {
        watchers.push(Watcher::join(node, project, &format!("u{n}"), "").await.0);
    }
    let master = cluster.master_of(&format!("wshub:{{{project}}}:meta"));
    let replica = cluster.replica_of(master);

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

    // The promotion runs while the stream goes on.
    let answer = cluster.node(replica).cli(&["CLUSTER", "FAILOVER"]);
    assert_eq!(answer, "OK");
    let asked = Instant::now();
    let before = accepted.len();
    while accepted.len() < before + AFTER {
        if !publish(i, &mut accepted).await {
            refused += 1;
        }
        i += 1;
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "publishing stalled"
        );
    }
    let promoted = cluster.master_of(&format!("wshub:{{{project}}}:meta"));
    assert_eq!(promoted, replica, "the replica serves the project now");
    cluster.wait_ok(Duration::from_secs(10));

    let top = *accepted.keys().last().unwrap();
    assert_eq!(
        accepted.keys().copied().collect::<Vec<_>>(),
        (1..=top).collect::<Vec<_>>(),
        "offsets have no holes"
    );
    for (k, watcher) in watchers.iter().enumerate() {
        let messages = watcher
            .wait_messages(top as usize, Duration::from_secs(20))
            .await;
        assert_eq!(
            offsets_of(&messages),
            (1..=top).collect::<Vec<_>>(),
            "client {k}: every accepted message once, in order"
        );
        for m in &messages {
            let offset = m["offset"].as_u64().unwrap();
            assert_eq!(m["data"]["i"].as_u64(), accepted.get(&offset).copied());
        }
        assert!(
            watcher.is_open(),
            "client {k}: nothing was lost, so no 1013"
        );
    }
    // The old primary dropped the nodes' sharded subscriptions when its slots moved: each
    // node subscribed again on the new one and filled the gap from the history.
    for node in [&a, &b] {
        assert!(
            node.warnings()
                .iter()
                .any(|l| l.contains("redis pub/sub connection lost")),
            "the subscriptions moved: {:#?}",
            node.warnings()
        );
    }
    let ready_a = wait_readyz(&a, 200, Duration::from_secs(10)).await;
    let ready_b = wait_readyz(&b, 200, Duration::from_secs(10)).await;
    eprintln!(
        "redis cluster failover: {} publishes accepted, {refused} refused with 503 during the promotion (took {:?} to publish {AFTER} after CLUSTER FAILOVER); \
         each of {} clients received {top} messages, 0 lost, 0 duplicated; readyz 200 (after {:?})",
        accepted.len(),
        asked.elapsed(),
        watchers.len(),
        ready_a.max(ready_b)
    );
}

/// The project's primary is killed (SIGKILL) during a publish stream and its replica takes
/// over: publishes to it answer 503 meanwhile, `/readyz` goes 503 and back to 200, and
/// every client ends with the stream Redis kept, once and in order. Should the replica have
/// missed writes a node had delivered, the stream gets a new epoch and clients reload.
#[tokio::test]
async fn a_primary_killed_during_a_publish_stream_is_replaced_and_clients_stay_exact() {
    const BEFORE: usize = 30;
    const AFTER: usize = 30;
    let mut cluster = RedisCluster::start(3, &[]);
    let (a, b) = two_nodes(&cluster).await;
    let project = "killed";
    let mut watchers = Vec::new();
    let mut epoch = String::new();
    for (n, node) in [&a, &b].into_iter().enumerate() {
        let (watcher, welcome) = Watcher::join(node, project, &format!("u{n}"), "").await;
        epoch = welcome["epoch"].as_str().unwrap().to_owned();
        watchers.push(watcher);
    }
    let master = cluster.master_of(&format!("wshub:{{{project}}}:meta"));
    let replica = cluster.replica_of(master);

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

    cluster
        .nodes
        .iter_mut()
        .find(|n| n.port == master)
        .unwrap()
        .kill();
    let killed = Instant::now();
    let not_ready = wait_readyz(&a, 503, Duration::from_secs(5)).await;
    // Apart from those before the kill: should the replica have missed writes (it may not
    // even have finished its first sync on a loaded machine), the stream forks and its
    // offsets start again from what the replica kept.
    let mut accepted_after: BTreeMap<u64, u64> = BTreeMap::new();
    while accepted_after.len() < AFTER {
        if !publish(i, &mut accepted_after).await {
            refused += 1;
        }
        i += 1;
        assert!(
            killed.elapsed() < Duration::from_secs(25),
            "publishing stalled"
        );
    }
    assert_eq!(
        cluster.master_of(&format!("wshub:{{{project}}}:meta")),
        replica,
        "the replica serves the project now"
    );
    cluster.wait_ok(Duration::from_secs(10));
    let ready_a = wait_readyz(&a, 200, Duration::from_secs(10)).await;
    wait_readyz(&b, 200, Duration::from_secs(10)).await;
    let back_after = killed.elapsed();

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
    let forked = page["epoch"] != epoch.as_str();
    if !forked {
        // Nothing was lost: every acknowledged publish is where its publisher was told,
        // each at an offset of its own.
        assert!(
            accepted
                .keys()
                .all(|offset| !accepted_after.contains_key(offset)),
            "an offset given before and after the failover, yet the stream kept its epoch"
        );
        for (offset, i) in accepted.iter().chain(&accepted_after) {
            assert_eq!(
                stored.get(offset),
                Some(i),
                "acknowledged publish {i} at {offset}"
            );
        }
    }
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
        } else {
            assert!(forked, "client {k} closed, yet the stream kept its epoch");
            let last = *got.last().unwrap();
            let node = if k == 0 { &a } else { &b };
            let query = format!("?since={last}&epoch={epoch}");
            let (_back, welcome) = Watcher::join(node, project, user, &query).await;
            assert_eq!(welcome["recovered"], false, "client {k}: {welcome}");
        }
    }
    eprintln!(
        "redis cluster primary SIGKILL: /readyz 503 after {not_ready:?}, 200 again {back_after:?} after the kill (last wait {ready_a:?}); \
         {} publishes accepted, {refused} refused with 503 while the replica took over; {top} stored; stream epoch {}; \
         each of {} clients received every stored message once in order",
        accepted.len() + accepted_after.len(),
        if forked {
            "forked (the replica had missed delivered writes)"
        } else {
            "kept (nothing lost)"
        },
        watchers.len()
    );
}

/// The project's slot moves to another primary (resharding: MIGRATE of its keys, then
/// SETSLOT NODE) while two nodes publish to it: every accepted publish is stored at its
/// offset and reaches every client once, in order; the nodes' subscriptions follow the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moving_during_a_publish_stream_loses_and_duplicates_nothing() {
    const BEFORE: usize = 30;
    const AFTER: usize = 30;
    let cluster = RedisCluster::start(3, &[]);
    let (a, b) = two_nodes(&cluster).await;
    let project = "moving";
    let key = format!("wshub:{{{project}}}:meta");
    let mut watchers = Vec::new();
    for (n, node) in [&a, &b].into_iter().enumerate() {
        watchers.push(Watcher::join(node, project, &format!("u{n}"), "").await.0);
    }
    let from = cluster.master_of(&key);
    let to = cluster
        .topology()
        .into_iter()
        .find(|n| n.master && !n.failed && n.port != from)
        .unwrap()
        .port;

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
    let moving = Instant::now();
    let plan = cluster.slot_move(&key, to);
    let mover = tokio::task::spawn_blocking(move || {
        plan.run();
        Instant::now()
    });
    let before = accepted.len();
    while accepted.len() < before + AFTER || !mover.is_finished() {
        if !publish(i, &mut accepted).await {
            refused += 1;
        }
        i += 1;
        assert!(
            moving.elapsed() < Duration::from_secs(20),
            "publishing stalled"
        );
    }
    let moved_in = mover.await.unwrap() - moving;
    assert_eq!(cluster.master_of(&key), to, "the slot moved");

    let top = *accepted.keys().last().unwrap();
    assert_eq!(
        accepted.keys().copied().collect::<Vec<_>>(),
        (1..=top).collect::<Vec<_>>(),
        "offsets have no holes"
    );
    for (k, watcher) in watchers.iter().enumerate() {
        let messages = watcher
            .wait_messages(top as usize, Duration::from_secs(20))
            .await;
        assert_eq!(
            offsets_of(&messages),
            (1..=top).collect::<Vec<_>>(),
            "client {k}: every accepted message once, in order"
        );
        for m in &messages {
            let offset = m["offset"].as_u64().unwrap();
            assert_eq!(m["data"]["i"].as_u64(), accepted.get(&offset).copied());
        }
        assert!(
            watcher.is_open(),
            "client {k}: nothing was lost, so no 1013"
        );
    }
    // The channel is subscribed on its new owner now.
    let channel = format!("wshub:{{{project}}}:messages");
    let subscribed = cluster.node(to).cli(&["PUBSUB", "SHARDNUMSUB", &channel]);
    assert_eq!(
        subscribed,
        format!("{channel}\n2"),
        "both nodes follow the slot"
    );
    wait_readyz(&a, 200, Duration::from_secs(10)).await;
    wait_readyz(&b, 200, Duration::from_secs(10)).await;
    eprintln!(
        "redis cluster slot move: moved in {moved_in:?} while publishing; {} publishes accepted, {refused} refused with 503; \
         each of {} clients received {top} messages, 0 lost, 0 duplicated",
        accepted.len(),
        watchers.len()
    );
}

/// Presence across nodes on a cluster: members on node A (v1, and v2 naming the project)
/// see a user of node B join and leave, once per user for the deployment, coalesced; the
/// membership scripts run on the project's shard.
#[tokio::test]
async fn members_on_one_node_see_joins_and_leaves_on_another_over_a_cluster() {
    let cluster = RedisCluster::start(3, &[]);
    let (a, b) = two_nodes(&cluster).await;
    crate::webhooks::joins_and_leaves_on_other_nodes_coalesced("redis cluster", &a, &b).await;
    // A script the cluster refused (CROSSSLOT, NOSCRIPT) would show here.
    for node in [&a, &b] {
        assert_eq!(node.warnings(), Vec::<String>::new());
    }
}

/// Every script of the broker (publish, read for recovery, presence, the membership
/// change, the budget) is sent by its SHA to whichever primary owns the slot. A primary
/// that does not know it (promoted, restarted, `SCRIPT FLUSH`ed: a cluster does not share
/// its script cache) answers NOSCRIPT, and the broker loads it there and runs it again:
/// with every node's cache flushed mid-run, publishes, recovery and presence go on.
#[tokio::test]
async fn scripts_flushed_on_every_cluster_node_are_loaded_again_where_needed() {
    let cluster = RedisCluster::start(3, &[]);
    let (a, b) = two_nodes(&cluster).await;
    let projects = spread_projects(&cluster, 6);
    let mut watchers = Vec::new();
    for p in &projects {
        let (watcher, welcome) = Watcher::join(&a, p, "alice", "").await;
        watchers.push((watcher, welcome["epoch"].as_str().unwrap().to_owned()));
    }
    for p in &projects {
        assert_eq!(publish_via_api(&b, p, json!({"i": 1})).await.0, 202);
    }
    for node in &cluster.nodes {
        assert_eq!(node.cli(&["SCRIPT", "FLUSH"]), "OK");
    }
    // Publishes (one pipeline per slot), on both nodes.
    for (i, node) in [(2, &b), (3, &a)] {
        for p in &projects {
            let (status, body) = publish_via_api(node, p, json!({"i": i})).await;
            assert_eq!(status, 202, "{p}: {body}");
            assert_eq!(body["offset"], i, "{p}: {body}");
        }
    }
    for ((watcher, _), p) in watchers.iter().zip(&projects) {
        let messages = watcher.wait_messages(3, Duration::from_secs(10)).await;
        assert_eq!(offsets_of(&messages), [1, 2, 3], "{p}");
    }
    for node in &cluster.nodes {
        assert_eq!(node.cli(&["SCRIPT", "FLUSH"]), "OK");
    }
    // Recovery (the read script) on the other node, and presence (the announcement and
    // the membership change) of a user joining there.
    let (watcher, epoch) = watchers.remove(0);
    drop(watcher);
    let p = &projects[0];
    let (_back, welcome) = Watcher::join(&b, p, "alice", &format!("?since=1&epoch={epoch}")).await;
    assert_eq!(
        (welcome["recovered"].as_bool(), welcome["missed"].as_u64()),
        (Some(true), Some(2)),
        "{welcome}"
    );
    let (_bob, _) = Watcher::join(&b, &projects[1], "bob", "").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = api(
            &a,
            "GET",
            &format!("/api/projects/{}/presence", projects[1]),
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if body["users"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["user"] == "bob"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "presence: {body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // No script error was logged (the watcher dropped above is a connection reset).
    for node in [&a, &b] {
        let warnings: Vec<String> = node
            .warnings()
            .into_iter()
            .filter(|l| !l.contains("connection closed abnormally"))
            .collect();
        assert_eq!(warnings, Vec::<String>::new());
    }
}

/// Two `wshub` nodes seeded with every node of `cluster`, once both are ready.
async fn two_nodes(cluster: &RedisCluster) -> (Server, Server) {
    let (a, b) = (
        node_with(&cluster.broker_keys()),
        node_with(&cluster.broker_keys()),
    );
    wait_readyz(&a, 200, Duration::from_secs(15)).await;
    wait_readyz(&b, 200, Duration::from_secs(15)).await;
    (a, b)
}
