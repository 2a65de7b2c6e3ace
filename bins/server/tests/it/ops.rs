//! What operators see: /metrics after a scripted session, the admin API.

use std::collections::BTreeMap;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::*;

/// Scrapes `/metrics` and parses it as Prometheus does: `name{labels}` → value.
async fn scrape(url: &str) -> BTreeMap<String, f64> {
    let (status, headers, body) = http("GET", url, &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/plain; version=0.0.4"))
    );
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let mut out = BTreeMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            sample.metric.clone()
        } else {
            format!("{}{{{}}}", sample.metric, labels.join(","))
        };
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, value);
    }
    out
}

/// Scrapes until `pred` holds (the server counts a close when the connection's task
/// ends, a moment after the client read the close frame).
async fn scrape_until(
    url: &str,
    what: &str,
    pred: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let metrics = scrape(url).await;
        if pred(&metrics) {
            return metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never showed in {metrics:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_session_exactly() {
    let server = Server::start(
        "[limits]\nclient_publish_rate = 0\nsend_queue_frames = 64\nsend_queue_bytes = 262144\n",
    );
    let url = server.http("/metrics");

    // Two members; one publishes three messages, the other receives them.
    let (mut a, _) = join(&server, "p", "a").await;
    let (mut b, _) = join(&server, "p", "b").await;
    for i in 0..3 {
        publish(&mut a, json!(i)).await;
    }
    for _ in 0..3 {
        recv_message(&mut b).await;
    }
    // A handshake without a token.
    assert!(try_connect(&server.url("p"), None).await.is_err());
    // A message over the size limit: 1009.
    let (mut big, _) = join(&server, "p", "big").await;
    big.send(Message::text("x".repeat(70 * 1024)))
        .await
        .unwrap();
    assert_eq!(recv_close(&mut big).await.0, 1009);

    // A slow consumer alone in its project, flooded over HTTP until it is cut off.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let mut request = server.url("slow").into_client_request().unwrap();
    let bearer = format!("Bearer {}", token("slow", &["slow"]));
    request
        .headers_mut()
        .insert("authorization", HeaderValue::from_str(&bearer).unwrap());
    let (mut slow, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
            .await
            .unwrap();
    assert_eq!(recv_json(&mut slow).await["type"], "welcome");
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().last()?.parse().ok())
        .unwrap_or(4 << 20);
    let filler = "f".repeat(8000);
    let body = json!({"data": filler}).to_string();
    let floods = (wmem_max + (1 << 20)) / 8000 + 1;
    let key = format!("Bearer {API_KEY}");
    for _ in 0..floods {
        let (status, _, _) = http(
            "POST",
            &server.http("/api/projects/slow/messages"),
            &[("authorization", &key)],
            &body,
        )
        .await;
        assert_eq!(status, 202);
    }
    assert_eq!(recv_close(&mut slow).await.0, 4008);

    let m = scrape_until(&url, "the 4008 close", |m| {
        m.get(r#"wshub_closes_total{by="server",code="4008"}"#) == Some(&1.0)
    })
    .await;
    let expect = [
        (r#"wshub_handshakes_total{status="101"}"#, 4.0),
        (r#"wshub_handshakes_total{status="401"}"#, 1.0),
        (r#"wshub_handshakes_total{status="403"}"#, 0.0),
        ("wshub_connections", 2.0),
        (r#"wshub_projects{members="2-10"}"#, 1.0),
        (r#"wshub_closes_total{by="server",code="1009"}"#, 1.0),
        (r#"wshub_closes_total{by="server",code="4008"}"#, 1.0),
        ("wshub_slow_consumers_total", 1.0),
        ("wshub_messages_in_total", 3.0),
        ("wshub_published_total", 3.0 + floods as f64),
        ("wshub_broker_errors_total", 0.0),
        (r#"wshub_build_info{version="0.1.0"}"#, 1.0),
    ];
    for (key, value) in expect {
        assert_eq!(m.get(key), Some(&value), "{key} in {m:#?}");
    }
    // Each member got 3 messages (plus welcomes, a presence join and acks): counted out.
    assert!(m["wshub_messages_out_total"] >= 3.0 * 2.0 + 3.0);
    assert!(m["wshub_fanout_latency_seconds_count"] >= 1.0);
    assert!(m["wshub_send_queue_depth_count"] >= 1.0);
}

#[tokio::test]
async fn metrics_can_have_a_listener_of_their_own() {
    let server =
        Server::start_with_server_keys("127.0.0.1:0", "metrics_listen = \"127.0.0.1:0\"", "");
    server
        .wait_for_log("the metrics listener", |l| l.contains("metrics listening"))
        .await;
    let line = server
        .logs()
        .into_iter()
        .find(|l| l.contains("metrics listening"))
        .unwrap();
    let addr = serde_json::from_str::<Value>(&line).unwrap()["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(addr, server.addr.to_string());
    assert!(
        scrape(&format!("http://{addr}/metrics"))
            .await
            .contains_key("wshub_connections")
    );
    // ...and no longer on the main listener.
    let (status, _, _) = http("GET", &server.http("/metrics"), &[], "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_admin_api_lists_and_disconnects() {
    let server = Server::start("");
    let key = format!("Bearer {API_KEY}");
    let (mut a1, w1) = join(&server, "p", "alice").await;
    let (mut a2, _) = join(&server, "q", "alice").await;
    let (mut b, wb) = join(&server, "p", "bob").await;

    let (status, _, body) = http(
        "GET",
        &server.http("/api/admin/projects/p/connections"),
        &[("authorization", &key)],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let conns: Vec<(u64, &str)> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["conn"].as_u64().unwrap(), c["user"].as_str().unwrap()))
        .collect();
    assert_eq!(
        conns,
        [
            (w1["conn"].as_u64().unwrap(), "alice"),
            (wb["conn"].as_u64().unwrap(), "bob")
        ]
    );
    let first = &list["connections"][0];
    assert!(first["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["age_ms"].as_u64().is_some() && first["queue_frames"].as_u64().is_some());

    // One connection: 1000.
    let path = format!("/api/admin/connections/{}/disconnect", wb["conn"]);
    let (status, _, _) = http("POST", &server.http(&path), &[("authorization", &key)], "").await;
    assert_eq!(status, 200);
    assert_eq!(
        recv_close(&mut b).await,
        (1000, "disconnected by an operator".to_owned(), vec![])
    );
    let (status, _, _) = http("POST", &server.http(&path), &[("authorization", &key)], "").await;
    assert_eq!(status, 404, "already gone");

    // A user everywhere: 4003 on every project.
    let (status, _, body) = http(
        "POST",
        &server.http("/api/admin/users/alice/disconnect"),
        &[("authorization", &key)],
        "",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"closed":2}"#));
    for ws in [&mut a1, &mut a2] {
        let (code, reason, _) = recv_close(ws).await;
        assert_eq!((code, reason.as_str()), (4003, "access revoked"));
    }
    let (status, _, _) = http(
        "GET",
        &server.http("/api/admin/projects/p/connections"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_metrics_that_exist() {
    let server = Server::start("");
    let scraped = scrape(&server.http("/metrics")).await;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana-dashboard.json"
    );
    let dashboard = std::fs::read_to_string(path).unwrap();
    serde_json::from_str::<Value>(&dashboard).expect("the dashboard is valid JSON");
    let mut names = std::collections::BTreeSet::new();
    for (i, _) in dashboard.match_indices("wshub_") {
        let name: String = dashboard[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        // Histograms are parsed under their base name.
        names.insert(name.trim_end_matches("_bucket").to_owned());
    }
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        assert!(
            scraped.keys().any(|k| k == &name
                || k.starts_with(&format!("{name}{{"))
                || k.starts_with(&format!("{name}_"))),
            "the dashboard queries {name}, which /metrics does not expose"
        );
    }
}

/// The soft and hard "Max open files" of a process, from `/proc/{pid}/limits`
/// (`u64::MAX` for "unlimited").
fn open_file_limits(pid: &str) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut values = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(u64::MAX));
    (values.next().unwrap(), values.next().unwrap())
}

#[tokio::test]
async fn the_soft_open_file_limit_is_raised_to_the_hard_one_at_start_up() {
    const LOWERED: u64 = 256;
    let (_, hard) = open_file_limits("self");
    if hard <= LOWERED {
        eprintln!("skipped: the hard open-file limit is {hard}, nothing to raise");
        return;
    }
    let server = Server::start_with_soft_nofile(LOWERED, "");
    let (soft_now, hard_now) = open_file_limits(&server.pid().to_string());
    assert_eq!(hard_now, hard, "the hard limit is inherited unchanged");
    // An unlimited hard limit is capped at the kernel's per-process ceiling.
    let expected = if hard == u64::MAX {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    } else {
        hard
    };
    assert_eq!(
        soft_now, expected,
        "the soft limit was raised to the hard one"
    );
    // The line is written before `listening`, so it is already there.
    let raised: Vec<Value> = server
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "raised the open-file limit")
        .collect();
    assert_eq!(raised.len(), 1, "{:#?}", server.logs());
    assert_eq!(raised[0]["level"], "INFO");
    assert_eq!(raised[0]["from"], LOWERED);
    assert_eq!(raised[0]["to"], expected);
    assert_eq!(server.warnings(), Vec::<String>::new());
}
