//! Retained history has a budget: `history.max_bytes` per project and
//! `history.max_total_bytes` across projects, on the memory broker and on Redis.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;
use crate::redis_server::Redis;

/// Publishes a message of about `bytes` bytes to `project` over HTTP; returns its offset.
async fn publish_sized(server: &Server, project: &str, bytes: usize) -> u64 {
    let body = json!({ "data": { "pad": "x".repeat(bytes) } }).to_string();
    let (status, answer) = api(
        server,
        "POST",
        &format!("/api/projects/{project}/messages"),
        &body,
    )
    .await;
    assert!(
        status == 200 || status == 202,
        "publish to {project}: {status} {answer}"
    );
    answer["offset"].as_u64().unwrap()
}

async fn history(server: &Server, project: &str) -> Value {
    let (status, page) = api(
        server,
        "GET",
        &format!("/api/projects/{project}/messages?since=0"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page
}

/// The bytes of the retained frames of a history page (keys and values as the server
/// wrote them: compact JSON, so re-serialising gives the same length).
fn frame_bytes(page: &Value) -> usize {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.to_string().len())
        .sum()
}

fn offsets(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect()
}

/// The `wshub_history_bytes` gauge.
async fn history_bytes(server: &Server) -> u64 {
    let (status, _, body) = http("GET", &server.http("/metrics"), &[], "").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("wshub_history_bytes "))
        .unwrap_or_else(|| panic!("no wshub_history_bytes in\n{body}"))
        .parse()
        .unwrap()
}

/// Polls the gauge until `pred` holds; returns the last value.
async fn wait_history_bytes(server: &Server, what: &str, pred: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + STEP;
    loop {
        let bytes = history_bytes(server).await;
        if pred(bytes) {
            return bytes;
        }
        assert!(
            Instant::now() < deadline,
            "wshub_history_bytes = {bytes}: never {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_project_keeps_at_most_max_bytes_of_history() {
    let server = Server::start("[history]\nsize = 1000\nmax_bytes = 20000\n");
    let first = history(&server, "big").await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    for _ in 0..40 {
        publish_sized(&server, "big", 2000).await;
    }
    let page = history(&server, "big").await;
    let bytes = frame_bytes(&page);
    assert!(bytes <= 20_000, "{bytes} bytes retained");
    assert!(
        bytes > 15_000,
        "only {bytes} bytes retained: dropped too much"
    );
    assert_eq!(page["complete"], false, "messages were dropped: {page}");
    let kept = offsets(&page);
    assert_eq!(kept.last(), Some(&40));
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
    assert!(kept[0] > 1, "{kept:?}");
    assert_eq!(
        page["epoch"],
        epoch.as_str(),
        "the stream was not recreated"
    );

    // A client that saw offset 1 missed messages that are gone: it must reload.
    let url = format!("{}?since=1&epoch={epoch}", server.url("big"));
    let mut ws = try_connect(&url, Some(&token("u", &["big"])))
        .await
        .unwrap();
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["recovered"], false, "{welcome}");
    // One that saw the offset just before the oldest retained one recovers them all.
    let since = kept[0] - 1;
    let url = format!("{}?since={since}&epoch={epoch}", server.url("big"));
    let mut ws = try_connect(&url, Some(&token("u", &["big"])))
        .await
        .unwrap();
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let replayed = recv_message(&mut ws).await;
    assert_eq!(replayed["offset"], kept[0]);
}

#[tokio::test]
async fn the_node_budget_frees_the_oldest_idle_projects_first() {
    let budget = 200_000;
    let server = Server::start(&format!(
        "[history]\nmax_bytes = 50000\nmax_total_bytes = {budget}\n"
    ));
    // A member stays connected to "kept" throughout.
    let (_member, welcome) = join(&server, "kept", "alice").await;
    let kept_epoch = welcome["epoch"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        publish_sized(&server, "kept", 2000).await;
    }
    // "oldest" is idle and published to before the others.
    for _ in 0..10 {
        publish_sized(&server, "oldest", 2000).await;
    }
    let oldest_epoch = history(&server, "oldest").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    // 30 idle projects of 20 KB each: 600 KB against a budget of 200 KB; "kept" stays in
    // recent use.
    for p in 0..30 {
        for _ in 0..10 {
            publish_sized(&server, &format!("idle-{p}"), 2000).await;
        }
        if p % 5 == 0 {
            publish_sized(&server, "kept", 2000).await;
        }
    }
    let max_frame = 2200;
    let bytes = history_bytes(&server).await;
    assert!(
        bytes <= budget + max_frame,
        "{bytes} bytes retained over a budget of {budget}"
    );
    assert!(bytes > budget / 2, "{bytes}: freed far more than needed");

    let page = history(&server, "oldest").await;
    assert_ne!(
        page["epoch"], oldest_epoch,
        "the oldest idle project kept its stream: {page}"
    );
    assert_eq!(page["messages"].as_array().unwrap().len(), 0);

    let page = history(&server, "kept").await;
    assert_eq!(page["epoch"], kept_epoch.as_str());
    assert_eq!(page["complete"], true, "{page}");
    assert_eq!(offsets(&page), (1..=11).collect::<Vec<_>>());

    // The newest idle project is still whole.
    let page = history(&server, "idle-29").await;
    assert_eq!(offsets(&page), (1..=10).collect::<Vec<_>>());
    // And the gauge agrees with what the history reads return, project by project.
    let mut sum = 0;
    for p in ["kept", "oldest"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..30).map(|p| format!("idle-{p}")))
    {
        sum += history(&server, &p).await["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.to_string().len() as u64)
            .sum::<u64>();
    }
    wait_history_bytes(&server, &format!("equal to the {sum} bytes read"), |b| {
        b == sum
    })
    .await;
}

/// Redis with `maxmemory 24mb` and `noeviction`; 100 projects × 64 messages of 4 KB each
/// (26 MB, each project within its `max_bytes` of 300 KB) would not fit: with a budget of
/// 2 MiB every publish succeeds, the deployment's total comes back within the budget, the
/// oldest idle project is freed (new epoch) and the project with a member keeps its stream.
#[tokio::test]
async fn on_redis_the_budget_frees_idle_streams_and_publishes_keep_succeeding() {
    let redis = Redis::start_with(&["--maxmemory", "24mb", "--maxmemory-policy", "noeviction"]);
    let budget: u64 = 2 << 20;
    let server = Server::start(&format!(
        "[broker]\nkind = \"redis\"\nredis_url = \"redis://127.0.0.1:{}/0\"\n\n[history]\nmax_bytes = 300000\nmax_total_bytes = {budget}\n",
        redis.port
    ));
    let deadline = Instant::now() + STEP;
    while http("GET", &server.http("/readyz"), &[], "").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready: {:#?}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_member, welcome) = join(&server, "kept", "alice").await;
    let kept_epoch = welcome["epoch"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        publish_sized(&server, "kept", 4000).await;
    }
    for _ in 0..10 {
        publish_sized(&server, "oldest", 4000).await;
    }
    let oldest_epoch = history(&server, "oldest").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut kept_top = 3;
    for p in 0..100 {
        for _ in 0..64 {
            // publish_sized asserts 200/202: a publish refused by a full Redis fails here.
            publish_sized(&server, &format!("idle-{p}"), 4000).await;
        }
        if p % 10 == 0 {
            kept_top = publish_sized(&server, "kept", 4000).await;
        }
    }
    let total = wait_history_bytes(&server, "within the budget", |b| b <= budget).await;
    assert!(total > 0);
    let used: u64 = redis
        .cli(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(used < 24 << 20, "redis uses {used} bytes");

    let page = history(&server, "oldest").await;
    assert_ne!(
        page["epoch"], oldest_epoch,
        "oldest idle stream kept: {page}"
    );
    let page = history(&server, "kept").await;
    assert_eq!(page["epoch"], kept_epoch.as_str(), "{page}");
    assert_eq!(page["offset"], kept_top);
    assert_eq!(offsets(&page), (1..=kept_top).collect::<Vec<_>>());
    // What Redis holds agrees with the counter: the sum of the projects' `bytes`.
    let sum: u64 = (0..100)
        .map(|p| format!("wshub:{{idle-{p}}}:meta"))
        .chain(["wshub:{kept}:meta".to_owned()])
        .map(|k| {
            redis
                .cli(&["HGET", &k, "bytes"])
                .parse::<u64>()
                .unwrap_or(0)
        })
        .sum();
    assert!(sum <= budget, "redis holds {sum} bytes of history");
}
