//! `[namespaces.<name>]` (SPEC §12): a namespace's table overrides history, presence events
//! and client publishing for its projects only, on both endpoints.

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_table_applies_to_its_projects_only() {
    let server = Server::start(
        "[namespaces.chat]\nhistory_size = 2\npresence = false\nallow_client_publish = false\n",
    );
    // History: two kept in `chat:1`, every one in `lobby` (and in `chat`, no namespace).
    for project in ["chat:1", "lobby", "chat"] {
        for i in 0..3 {
            let path = format!("/api/projects/{project}/messages");
            assert_eq!(
                api(&server, "POST", &path, &json!({"data": i}).to_string())
                    .await
                    .0,
                202
            );
        }
    }
    for (project, kept) in [("chat:1", 2), ("lobby", 3), ("chat", 3)] {
        let path = format!("/api/projects/{project}/messages?since=0");
        let (status, body) = api(&server, "GET", &path, "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["messages"].as_array().unwrap().len(),
            kept,
            "{project}: {body}"
        );
    }

    // Presence events: none in `chat:1`, as usual in `lobby`. What a arrives first after b
    // joined tells: b's join, or the message published after it.
    for (project, join_expected) in [("chat:1", false), ("lobby", true)] {
        let (mut a, _) = join(&server, project, "a").await;
        let (_b, _) = join(&server, project, "b").await;
        let path = format!("/api/projects/{project}/messages");
        api(
            &server,
            "POST",
            &path,
            &json!({"data": "after b"}).to_string(),
        )
        .await;
        let first = recv_json(&mut a).await;
        assert_eq!(
            first["type"] == "presence",
            join_expected,
            "{project}: {first}"
        );
    }

    // Client publishing: refused in `chat:1` (the connection carries on), allowed in `lobby`.
    let (mut ws, _) = join(&server, "chat:1", "c").await;
    publish(&mut ws, json!("no")).await;
    let refused = recv_json(&mut ws).await;
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&json!("error"), &json!("publish_not_allowed")),
        "{refused}"
    );
    let (mut ws, _) = join(&server, "lobby", "c").await;
    ws.send(Message::text(r#"{"type":"publish","id":"1","data":"yes"}"#))
        .await
        .unwrap();
    assert_eq!(recv_message(&mut ws).await["data"], "yes");
}
