//! The demo page and the JS client it imports: served with `server.demo` on, 404 without.

use crate::harness::{Server, http};

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn demo_on_serves_the_page_and_the_client() {
    let server = Server::start_with_server_keys("127.0.0.1:0", "demo = true", "");

    let (status, headers, body) = http("GET", &server.http("/"), &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    assert!(body.contains("from '/client.js'"), "{body}");

    let (status, headers, body) = http("GET", &server.http("/client.js"), &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    assert!(body.contains("export function connect"));

    // The other routes are unchanged.
    let (status, _, _) = http("GET", &server.http("/healthz"), &[], "").await;
    assert_eq!(status, 200);
    let (status, _, _) = http("GET", &server.http("/index.html"), &[], "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn demo_off_answers_404() {
    let server = Server::start("");
    for path in ["/", "/client.js"] {
        let (status, headers, _) = http("GET", &server.http(path), &[], "").await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
    }
}
