//! The operator's page (`GET /admin`, `server.admin_page`) and the admin routes it reads:
//! `GET /api/admin/stats`, `GET /api/admin/projects?cursor=&limit=`,
//! `GET /api/admin/projects/{p}/tail`.

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::*;

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn get(server: &Server, path: &str, key: Option<&str>) -> (u16, Value) {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    let (status, _, body) = http("GET", &server.http(path), &headers, "").await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test]
async fn admin_page_on_serves_the_page_and_its_assets_under_a_strict_csp() {
    let server = Server::start_with_server_keys("127.0.0.1:0", "admin_page = true", "");
    for (path, content_type, needle) in [
        ("/admin", "text/html; charset=utf-8", "/admin/admin.js"),
        (
            "/admin/admin.js",
            "text/javascript; charset=utf-8",
            "sessionStorage",
        ),
        ("/admin/admin.css", "text/css; charset=utf-8", ".totals"),
    ] {
        let (status, headers, body) = http("GET", &server.http(path), &[], "").await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(header(&headers, "content-type"), Some(content_type));
        assert!(body.contains(needle), "{path}");
        let csp = header(&headers, "content-security-policy").unwrap();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(header(&headers, "x-frame-options"), Some("DENY"));
        assert_eq!(header(&headers, "referrer-policy"), Some("no-referrer"));
        assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    }
    // Nothing the page loads comes from elsewhere, and there is no inline script to allow.
    let (_, _, html) = http("GET", &server.http("/admin"), &[], "").await;
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script>") && !html.contains("<style>"));
    // The page holds no key: it asks for one.
    assert!(!html.contains(API_KEY));
    let (status, _, _) = http("GET", &server.http("/admin/secrets.txt"), &[], "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn admin_page_off_answers_404_but_the_admin_api_stays() {
    let server = Server::start("");
    for path in ["/admin", "/admin/admin.js", "/admin/admin.css"] {
        let (status, headers, _) = http("GET", &server.http(path), &[], "").await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
    }
    assert_eq!(get(&server, "/api/admin/stats", Some(API_KEY)).await.0, 200);
}

#[tokio::test]
async fn admin_routes_refuse_a_missing_or_wrong_key_and_bad_paging() {
    let server = Server::start("");
    for path in [
        "/api/admin/stats",
        "/api/admin/projects",
        "/api/admin/projects/p/tail",
    ] {
        let (status, body) = get(&server, path, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("missing_api_key"))
        );
        let (status, body) = get(&server, path, Some("wrong-key")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_api_key"))
        );
    }
    for query in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "limit=-3",
        "cursor=%zz",
        "page=2",
    ] {
        let (status, body) = get(
            &server,
            &format!("/api/admin/projects?{query}"),
            Some(API_KEY),
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "invalid_query", "{query}");
        assert!(body["message"].as_str().unwrap().len() > 10);
    }
    let (status, body) = get(&server, "/api/admin/projects/bad%20id/tail", Some(API_KEY)).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn admin_stats_count_projects_and_traffic_and_name_the_busiest() {
    let server = Server::start("");
    let (status, before) = get(&server, "/api/admin/stats", Some(API_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(before["connections"], 0);
    assert_eq!(before["projects"], 0);
    assert_eq!(before["busiest"], json!([]));

    let mut sockets = Vec::new();
    for (project, members) in [("a", 1), ("b", 3), ("c", 2)] {
        for i in 0..members {
            sockets.push(join(&server, project, &format!("u{i}")).await.0);
        }
    }
    let ws = &mut sockets[0];
    publish(ws, json!("hello")).await;
    recv_message(ws).await;

    let (status, stats) = get(&server, "/api/admin/stats", Some(API_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(stats["connections"], 6);
    assert_eq!(stats["projects"], 3);
    assert_eq!(
        stats["busiest"],
        json!([
            {"project": "b", "members": 3},
            {"project": "c", "members": 2},
            {"project": "a", "members": 1},
        ])
    );
    assert!(stats["published_total"].as_u64().unwrap() >= 1);
    assert!(stats["messages_in_total"].as_u64().unwrap() >= 1);
    assert!(stats["messages_out_total"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn admin_projects_page_through_every_project_once_in_order() {
    let server = Server::start("");
    let ids = ["k", "chat:2", "a", "z", "chat:10", "m"];
    let mut sockets = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for n in 0..=i % 2 {
            sockets.push(join(&server, id, &format!("u{n}")).await.0);
        }
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (status, page) = get(
            &server,
            &format!("/api/admin/projects?limit=4&cursor={cursor}"),
            Some(API_KEY),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let list = page["projects"].as_array().unwrap();
        assert!(list.len() <= 4);
        for p in list {
            let id = p["project"].as_str().unwrap().to_owned();
            let i = ids.iter().position(|x| *x == id).unwrap();
            assert_eq!(p["members"], i % 2 + 1, "{id}");
            seen.push(id);
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.replace(':', "%3A"),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    let mut sorted: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    sorted.sort();
    assert_eq!(seen, sorted);
    // Without a limit: the default (100), one page.
    let (_, page) = get(&server, "/api/admin/projects", Some(API_KEY)).await;
    assert_eq!(page["projects"].as_array().unwrap().len(), ids.len());
    assert_eq!(page["next_cursor"], Value::Null);
}

/// The tail, read as the page reads it: the key in a header, events in a chunked body.
#[tokio::test]
async fn admin_tail_streams_the_projects_messages_with_the_key_in_a_header() {
    let server = Server::start("");
    let (mut member, _) = join(&server, "p", "alice").await;

    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut reader = BufReader::new(stream);
    let request = format!(
        "GET /api/admin/projects/p/tail HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {API_KEY}\r\naccept: text/event-stream\r\n\r\n",
        server.addr
    );
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    // Reads lines until `needle` shows in the body (chunk sizes and all).
    async fn until(reader: &mut BufReader<TcpStream>, body: &mut String, needle: &str) {
        tokio::time::timeout(STEP, async {
            while !body.contains(needle) {
                let mut line = String::new();
                assert!(reader.read_line(&mut line).await.unwrap() > 0, "ended");
                body.push_str(&line);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in {body}"));
    }
    until(&mut reader, &mut body, "event: welcome").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("content-type: text/event-stream"), "{body}");

    // The tail is a member of the project: listed with the connections, under ~admin.
    let (_, list) = get(&server, "/api/admin/projects/p/connections", Some(API_KEY)).await;
    let users: Vec<&str> = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user"].as_str().unwrap())
        .collect();
    assert!(
        users.contains(&"~admin") && users.contains(&"alice"),
        "{users:?}"
    );

    let (status, _) = api(
        &server,
        "POST",
        "/api/projects/p/messages",
        r#"{"data":{"n":1}}"#,
    )
    .await;
    assert_eq!(status, 202);
    until(&mut reader, &mut body, r#""data":{"n":1}"#).await;
    let event = body.rsplit("event: message").next().unwrap();
    assert!(event.contains(r#""offset":1"#), "{body}");
    assert_eq!(recv_message(&mut member).await["data"]["n"], 1);
}

#[tokio::test]
async fn admin_presence_lists_users_with_their_connection_counts() {
    let server = Server::start("");
    let _a = join(&server, "p", "alice").await;
    let _b = join(&server, "p", "bob").await;
    let _b2 = join(&server, "p", "bob").await;
    let (status, body) = get(&server, "/api/admin/projects/p/presence", Some(API_KEY)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"users": [
            {"user": "alice", "connections": 1},
            {"user": "bob", "connections": 2},
        ]})
    );
    let (status, body) = get(&server, "/api/admin/projects/empty/presence", Some(API_KEY)).await;
    assert_eq!((status, body), (200, json!({"users": []})));
    let (status, _) = get(&server, "/api/admin/projects/p/presence", None).await;
    assert_eq!(status, 401);
    let (status, _) = get(&server, "/api/admin/projects/a%20b/presence", Some(API_KEY)).await;
    assert_eq!(status, 404);
}
