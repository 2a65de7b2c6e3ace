use proptest::prelude::*;
use serde_json::value::RawValue;

use super::*;
use crate::envelope::code;
use crate::history::LostReason;

/// What parsing one frame must give: the request, summarised by [`describe`], or the
/// exact `error` frame that answers it, as a fault or as a refusal.
#[derive(Debug)]
enum Want<'a> {
    Ok(&'a str),
    Fault(&'a str),
    Refusal(&'a str),
}

fn describe(request: &Request) -> String {
    let id = request
        .id()
        .map_or_else(|| "-".to_owned(), |id| format!("#{id}"));
    let target = request.target().map_or("-", Target::as_str);
    let rest = match request {
        Request::Subscribe { recovery, .. } => format!("subscribe {recovery:?}"),
        Request::Unsubscribe { .. } => "unsubscribe".to_owned(),
        Request::Publish {
            data,
            key,
            ephemeral,
            echo,
            ..
        } => format!(
            "publish {} key={key:?} ephemeral={ephemeral} echo={echo}",
            data.get()
        ),
        Request::Presence { .. } => "presence".to_owned(),
        Request::History {
            since,
            limit,
            reverse,
            ..
        } => format!("history since={since:?} limit={limit} reverse={reverse}"),
        Request::Refresh { token, .. } => format!("refresh {token}"),
        Request::Ping { .. } => "ping".to_owned(),
    };
    format!("{id} {target} {rest}")
}

fn check(input: &str, want: Want<'_>) {
    match (Request::parse(input), want) {
        (Ok(request), Want::Ok(want)) => assert_eq!(describe(&request), want, "{input}"),
        (Err(e), Want::Fault(want)) if e.is_fault() => {
            assert_eq!(e.to_frame().to_json(), want, "{input}")
        }
        (Err(e), Want::Refusal(want)) if !e.is_fault() => {
            assert_eq!(e.to_frame().to_json(), want, "{input}")
        }
        (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn parses_every_request() {
    let cases = [
        (
            r#"{"type":"subscribe","id":"1","project":"chat"}"#,
            "#1 chat subscribe Latest",
        ),
        (
            r#"{"type":"subscribe","project":"~user","since":7,"epoch":"e1"}"#,
            r#"- ~user subscribe Since { offset: 7, epoch: "e1" }"#,
        ),
        (
            r#"{"type":"subscribe","id":"","project":"a","last":100}"#,
            "# a subscribe Last(100)",
        ),
        (
            r#"{"type":"subscribe","project":"a","last":0,"since":null}"#,
            "- a subscribe Last(0)",
        ),
        (
            r#"{"type":"unsubscribe","id":"2","project":"a.b"}"#,
            "#2 a.b unsubscribe",
        ),
        (
            r#"{"type":"publish","id":"3","project":"p","data":{"x":[1, 2]}}"#,
            r#"#3 p publish {"x":[1, 2]} key=None ephemeral=false echo=true"#,
        ),
        (
            r#"{"type":"publish","project":"p","data":"s","key":"k1","ephemeral":true,"echo":false}"#,
            r#"- p publish "s" key=Some("k1") ephemeral=true echo=false"#,
        ),
        (
            r#"{"type":"presence","id":"4","project":"~user"}"#,
            "#4 ~user presence",
        ),
        (
            r#"{"type":"history","project":"p"}"#,
            "- p history since=None limit=100 reverse=false",
        ),
        (
            r#"{"type":"history","id":"5","project":"p","since":9,"limit":1000,"reverse":true}"#,
            "#5 p history since=Some(9) limit=1000 reverse=true",
        ),
        (
            r#"{"type":"refresh","id":"6","token":"a.b.c"}"#,
            "#6 - refresh a.b.c",
        ),
        (r#"{"type":"ping"}"#, "- - ping"),
        (
            r#"{"type":"ping","id":"7","project":"ignored","x":1}"#,
            "#7 - ping",
        ),
        // The longest id, counted in characters.
        (
            &format!(r#"{{"type":"ping","id":"{}"}}"#, "é".repeat(64)),
            &format!("#{} - ping", "é".repeat(64)),
        ),
        // The longest key, counted in bytes.
        (
            &format!(
                r#"{{"type":"publish","project":"p","data":1,"key":"{}"}}"#,
                "k".repeat(128)
            ),
            &format!(
                r#"- p publish 1 key=Some("{}") ephemeral=false echo=true"#,
                "k".repeat(128)
            ),
        ),
        // The longest project id.
        (
            &format!(r#"{{"type":"presence","project":"{}"}}"#, "p".repeat(128)),
            &format!("- {} presence", "p".repeat(128)),
        ),
    ];
    for (input, want) in cases {
        check(input, Want::Ok(want));
    }
}

#[test]
fn faults_are_malformed_frames() {
    let cases = [
        (
            "",
            r#"{"type":"error","code":"invalid_json","message":"invalid JSON: EOF while parsing a value at line 1 column 0"}"#,
        ),
        (
            "[1]",
            r#"{"type":"error","code":"invalid_frame","message":"a frame must be a JSON object"}"#,
        ),
        (
            r#"{"type":"ping","id":7}"#,
            r#"{"type":"error","code":"invalid_json","message":"field `id` must be a string"}"#,
        ),
        (
            r#"{"id":"1"}"#,
            r#"{"type":"error","id":"1","code":"invalid_frame","message":"missing field `type`"}"#,
        ),
        (
            r#"{"type":5,"id":"1"}"#,
            r#"{"type":"error","id":"1","code":"invalid_json","message":"field `type` must be a string"}"#,
        ),
        (
            r#"{"type":"dance","id":"1"}"#,
            r#"{"type":"error","id":"1","code":"unknown_type","message":"unknown type `dance`"}"#,
        ),
        (
            r#"{"type":"subscribe","id":"1"}"#,
            r#"{"type":"error","id":"1","code":"invalid_frame","message":"missing field `project` for type `subscribe`"}"#,
        ),
        (
            r#"{"type":"unsubscribe","project":7}"#,
            r#"{"type":"error","code":"invalid_json","message":"field `project` must be a string"}"#,
        ),
        (
            r#"{"type":"publish","id":"1","project":"p"}"#,
            r#"{"type":"error","id":"1","project":"p","code":"invalid_frame","message":"missing field `data` for type `publish`"}"#,
        ),
        (
            r#"{"type":"publish","project":"p","data":null}"#,
            r#"{"type":"error","project":"p","code":"invalid_frame","message":"missing field `data` for type `publish`"}"#,
        ),
        (
            r#"{"type":"publish","project":"p","data":1,"echo":"no"}"#,
            r#"{"type":"error","project":"p","code":"invalid_json","message":"field `echo` must be a boolean"}"#,
        ),
        (
            r#"{"type":"publish","project":"p","data":1,"key":5}"#,
            r#"{"type":"error","project":"p","code":"invalid_json","message":"field `key` must be a string"}"#,
        ),
        (
            r#"{"type":"subscribe","project":"p","since":"3","epoch":"e"}"#,
            r#"{"type":"error","project":"p","code":"invalid_json","message":"field `since` must be a non-negative integer"}"#,
        ),
        (
            r#"{"type":"subscribe","project":"p","last":-1}"#,
            r#"{"type":"error","project":"p","code":"invalid_json","message":"field `last` must be a non-negative integer"}"#,
        ),
        (
            r#"{"type":"history","project":"p","limit":1.5}"#,
            r#"{"type":"error","project":"p","code":"invalid_json","message":"field `limit` must be a non-negative integer"}"#,
        ),
        (
            r#"{"type":"refresh","id":"9"}"#,
            r#"{"type":"error","id":"9","code":"invalid_frame","message":"missing field `token` for type `refresh`"}"#,
        ),
        // Every field is type-checked before any value is: the invalid project is not
        // reported, the fault is.
        (
            r#"{"type":"history","id":"1","project":"a b","reverse":1}"#,
            r#"{"type":"error","id":"1","code":"invalid_json","message":"field `reverse` must be a boolean"}"#,
        ),
    ];
    for (input, want) in cases {
        check(input, Want::Fault(want));
    }
    // An id over 64 characters is a fault, and is not repeated.
    check(
        &format!(r#"{{"type":"ping","id":"{}"}}"#, "i".repeat(65)),
        Want::Fault(
            r#"{"type":"error","code":"invalid_frame","message":"`id` must be at most 64 characters"}"#,
        ),
    );
    // A long unknown type is quoted cut short.
    let e = Request::parse(&format!(r#"{{"type":"{}"}}"#, "t".repeat(500))).unwrap_err();
    assert_eq!(e.message(), format!("unknown type `{}`", "t".repeat(64)));
    assert!(e.is_fault());
}

#[test]
fn refusals_are_values_out_of_range() {
    let long_project = "p".repeat(129);
    let cases = [
        (
            format!(r#"{{"type":"subscribe","id":"1","project":"{long_project}"}}"#),
            r#"{"type":"error","id":"1","code":"invalid_project","message":"`project` must be `~user` or a project id: project id must be 1 to 128 characters long, got 129"}"#,
        ),
        (
            r#"{"type":"publish","id":"1","project":"a/b","data":1}"#.to_owned(),
            r#"{"type":"error","id":"1","code":"invalid_project","message":"`project` must be `~user` or a project id: project id may only contain A-Z a-z 0-9 . _ : -"}"#,
        ),
        (
            r#"{"type":"presence","project":"~alice"}"#.to_owned(),
            r#"{"type":"error","code":"invalid_project","message":"`project` must be `~user` or a project id: project id may only contain A-Z a-z 0-9 . _ : -"}"#,
        ),
        (
            r#"{"type":"unsubscribe","id":"2","project":""}"#.to_owned(),
            r#"{"type":"error","id":"2","code":"invalid_project","message":"`project` must be `~user` or a project id: project id must be 1 to 128 characters long, got 0"}"#,
        ),
        (
            r#"{"type":"subscribe","id":"1","project":"~user","last":10000}"#.to_owned(),
            r#"{"type":"error","id":"1","project":"~user","code":"invalid_frame","message":"`last` must be at most 100, got 10000"}"#,
        ),
        (
            r#"{"type":"subscribe","project":"p","last":101}"#.to_owned(),
            r#"{"type":"error","project":"p","code":"invalid_frame","message":"`last` must be at most 100, got 101"}"#,
        ),
        (
            r#"{"type":"subscribe","project":"p","last":5,"since":3,"epoch":"e"}"#.to_owned(),
            r#"{"type":"error","project":"p","code":"invalid_frame","message":"`last` replaces `since` and `epoch`: send one or the other"}"#,
        ),
        (
            r#"{"type":"subscribe","project":"p","last":5,"epoch":"e"}"#.to_owned(),
            r#"{"type":"error","project":"p","code":"invalid_frame","message":"`last` replaces `since` and `epoch`: send one or the other"}"#,
        ),
        (
            r#"{"type":"subscribe","project":"p","since":3}"#.to_owned(),
            r#"{"type":"error","project":"p","code":"invalid_frame","message":"`since` needs the `epoch` it was read in"}"#,
        ),
        (
            r#"{"type":"subscribe","project":"p","epoch":"e"}"#.to_owned(),
            r#"{"type":"error","project":"p","code":"invalid_frame","message":"`epoch` needs `since`"}"#,
        ),
        (
            r#"{"type":"history","id":"h","project":"p","limit":5000}"#.to_owned(),
            r#"{"type":"error","id":"h","project":"p","code":"invalid_frame","message":"`limit` must be 1 to 1000, got 5000"}"#,
        ),
        (
            r#"{"type":"history","project":"p","limit":0}"#.to_owned(),
            r#"{"type":"error","project":"p","code":"invalid_frame","message":"`limit` must be 1 to 1000, got 0"}"#,
        ),
        (
            r#"{"type":"history","project":"p","limit":18446744073709551615}"#.to_owned(),
            r#"{"type":"error","project":"p","code":"invalid_frame","message":"`limit` must be 1 to 1000, got 18446744073709551615"}"#,
        ),
        (
            format!(
                r#"{{"type":"publish","id":"k","project":"~user","data":1,"key":"{}"}}"#,
                "k".repeat(129)
            ),
            r#"{"type":"error","id":"k","project":"~user","code":"invalid_key","message":"`key` must be 1 to 128 bytes long, got 129"}"#,
        ),
        (
            // 43 three-byte characters: 129 bytes.
            format!(
                r#"{{"type":"publish","project":"p","data":1,"key":"{}"}}"#,
                "€".repeat(43)
            ),
            r#"{"type":"error","project":"p","code":"invalid_key","message":"`key` must be 1 to 128 bytes long, got 129"}"#,
        ),
        (
            r#"{"type":"publish","project":"p","data":1,"key":""}"#.to_owned(),
            r#"{"type":"error","project":"p","code":"invalid_key","message":"`key` must be 1 to 128 bytes long, got 0"}"#,
        ),
        (
            format!(
                r#"{{"type":"refresh","id":"r","token":"{}"}}"#,
                "t".repeat(8193)
            ),
            r#"{"type":"error","id":"r","code":"invalid_frame","message":"`token` must be at most 8192 bytes"}"#,
        ),
    ];
    for (input, want) in cases {
        check(&input, Want::Refusal(want));
    }
}

#[test]
fn errors_expose_what_the_answer_needs() {
    let e = Request::parse(r#"{"type":"history","id":"q","project":"~user","limit":5000}"#)
        .unwrap_err();
    assert_eq!(e.id(), Some("q"));
    assert_eq!(e.target(), Some(&Target::Personal));
    assert_eq!(e.code(), code::INVALID_FRAME);
    assert_eq!(e.to_string(), e.message());
    assert!(!e.is_fault());
}

#[test]
fn targets_are_projects_or_the_personal_stream() {
    assert_eq!(Target::parse(PERSONAL), Ok(Target::Personal));
    assert_eq!(Target::Personal.to_string(), "~user");
    let project = Target::parse("acme:web-1").unwrap();
    assert_eq!(
        project,
        Target::Project(ProjectId::parse("acme:web-1").unwrap())
    );
    for bad in ["~USER", "~user ", "~", "~alice", "", "a b"] {
        assert!(Target::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn serialises_every_server_frame() {
    let data = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
    let stored = [
        RawValue::from_string(r#"{"type":"message","project":"p","offset":1}"#.into()).unwrap(),
        RawValue::from_string(r#"{"type":"message","project":"p","offset":2}"#.into()).unwrap(),
    ];
    let cases = [
        (
            ServerFrame::welcome(1, "u", 25_000),
            r#"{"type":"welcome","conn":1,"user":"u","ping_interval_ms":25000,"protocol":2}"#,
        ),
        (
            ServerFrame::Subscribed {
                id: Some("1"),
                project: "p",
                epoch: "e1",
                offset: 7,
                recovered: true,
                missed: 2,
                lost_reason: None,
            },
            r#"{"type":"subscribed","id":"1","project":"p","epoch":"e1","offset":7,"recovered":true,"missed":2}"#,
        ),
        (
            ServerFrame::Subscribed {
                id: None,
                project: PERSONAL,
                epoch: "e2",
                offset: 0,
                recovered: false,
                missed: 0,
                lost_reason: Some(LostReason::EpochChanged),
            },
            r#"{"type":"subscribed","project":"~user","epoch":"e2","offset":0,"recovered":false,"missed":0,"lost_reason":"epoch_changed"}"#,
        ),
        (
            ServerFrame::Unsubscribed {
                id: Some("2"),
                project: "p",
                reason: None,
            },
            r#"{"type":"unsubscribed","id":"2","project":"p"}"#,
        ),
        (
            ServerFrame::Unsubscribed {
                id: None,
                project: "p",
                reason: Some(UnsubscribeReason::Forbidden),
            },
            r#"{"type":"unsubscribed","project":"p","reason":"forbidden"}"#,
        ),
        (
            ServerFrame::Message {
                project: "p",
                offset: Some(3),
                from: "u1",
                data: &data,
                ts: 5,
                ephemeral: false,
            },
            r#"{"type":"message","project":"p","offset":3,"from":"u1","data":{"a":1},"ts":5}"#,
        ),
        (
            ServerFrame::Message {
                project: PERSONAL,
                offset: None,
                from: "u1",
                data: &data,
                ts: 5,
                ephemeral: true,
            },
            r#"{"type":"message","project":"~user","from":"u1","data":{"a":1},"ts":5,"ephemeral":true}"#,
        ),
        (
            ServerFrame::Ack {
                id: Some("3"),
                project: "p",
                offset: Some(9),
                duplicate: false,
            },
            r#"{"type":"ack","id":"3","project":"p","offset":9}"#,
        ),
        (
            ServerFrame::Ack {
                id: None,
                project: "p",
                offset: Some(9),
                duplicate: true,
            },
            r#"{"type":"ack","project":"p","offset":9,"duplicate":true}"#,
        ),
        (
            ServerFrame::Ack {
                id: Some("4"),
                project: "p",
                offset: None,
                duplicate: false,
            },
            r#"{"type":"ack","id":"4","project":"p"}"#,
        ),
        (
            ServerFrame::presence_sync(Some("5"), "p", vec!["a", "b"]),
            r#"{"type":"presence","id":"5","project":"p","event":"sync","users":["a","b"]}"#,
        ),
        (
            ServerFrame::presence_sync(None, "p", vec![]),
            r#"{"type":"presence","project":"p","event":"sync","users":[]}"#,
        ),
        (
            ServerFrame::presence_change("p", PresenceEvent::Join, "a"),
            r#"{"type":"presence","project":"p","event":"join","user":"a"}"#,
        ),
        (
            ServerFrame::presence_change("p", PresenceEvent::Leave, "a"),
            r#"{"type":"presence","project":"p","event":"leave","user":"a"}"#,
        ),
        (
            ServerFrame::History {
                id: Some("6"),
                project: "p",
                epoch: "e1",
                offset: 2,
                complete: true,
                messages: stored.iter().map(|m| &**m).collect(),
            },
            r#"{"type":"history","id":"6","project":"p","epoch":"e1","offset":2,"complete":true,"messages":[{"type":"message","project":"p","offset":1},{"type":"message","project":"p","offset":2}]}"#,
        ),
        (
            ServerFrame::History {
                id: None,
                project: "p",
                epoch: "e1",
                offset: 0,
                complete: false,
                messages: vec![],
            },
            r#"{"type":"history","project":"p","epoch":"e1","offset":0,"complete":false,"messages":[]}"#,
        ),
        (
            ServerFrame::Refreshed {
                id: Some("7"),
                exp: 1_700_000_000,
            },
            r#"{"type":"refreshed","id":"7","exp":1700000000}"#,
        ),
        (ServerFrame::Pong { id: None }, r#"{"type":"pong"}"#),
        (
            ServerFrame::Pong { id: Some("8") },
            r#"{"type":"pong","id":"8"}"#,
        ),
        (
            ServerFrame::Error {
                id: Some("9"),
                project: Some("p"),
                code: code::FORBIDDEN,
                message: "no grant for this project",
            },
            r#"{"type":"error","id":"9","project":"p","code":"forbidden","message":"no grant for this project"}"#,
        ),
        (
            ServerFrame::Error {
                id: None,
                project: None,
                code: code::RATE_LIMITED,
                message: "slow down",
            },
            r#"{"type":"error","code":"rate_limited","message":"slow down"}"#,
        ),
    ];
    for (frame, want) in cases {
        assert_eq!(frame.to_json(), want);
    }
    for (reason, want) in [
        (LostReason::OutOfRange, "out_of_range"),
        (LostReason::FromTheFuture, "from_the_future"),
    ] {
        assert_eq!(serde_json::to_value(reason).unwrap(), want);
    }
}

fn v1_message(offset: u64, from: &str, data: &RawValue, ts: u64) -> String {
    super::super::ServerFrame::Message {
        offset,
        from,
        data,
        ts,
    }
    .to_json()
}

#[test]
fn v2_message_frames_are_v1_ones_with_the_project() {
    let data = RawValue::from_string(r#"{"text":"hi \"there\"","n":[1,2]}"#.into()).unwrap();
    let v1 = v1_message(42, "alice", &data, 1_700_000_000_123);
    for project in ["chat", PERSONAL, &"x".repeat(128)] {
        let v2 = message_frame_from_v1(project, &v1);
        let direct = ServerFrame::Message {
            project,
            offset: Some(42),
            from: "alice",
            data: &data,
            ts: 1_700_000_000_123,
            ephemeral: false,
        };
        assert_eq!(v2, direct.to_json());
        let mut want: serde_json::Value = serde_json::from_str(&v1).unwrap();
        want["project"] = project.into();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&v2).unwrap(),
            want
        );
    }
}

proptest! {
    #[test]
    fn parsing_never_panics(s in ".{0,256}") {
        let _ = Request::parse(&s);
    }

    /// Frames that look like requests, with fields of any type in any combination: never
    /// a panic, and every error can be answered.
    #[test]
    fn parsing_request_shapes_never_panics(
        kind in prop::sample::select(vec!["subscribe", "unsubscribe", "publish", "presence", "history", "refresh", "ping", "x"]),
        fields in prop::collection::vec(
            (
                prop::sample::select(vec!["id", "project", "since", "epoch", "last", "data", "key", "ephemeral", "echo", "limit", "reverse", "token"]),
                prop::sample::select(vec!["null", "true", "0", "-1", "1.5", "101", "5000", "18446744073709551616", "\"\"", "\"~user\"", "\"p\"", "\"a b\"", "[]", "{}"]),
            ),
            0..8,
        ),
    ) {
        let mut frame = format!(r#"{{"type":"{kind}""#);
        for (name, value) in &fields {
            frame.push_str(&format!(r#","{name}":{value}"#));
        }
        frame.push('}');
        match Request::parse(&frame) {
            Ok(request) => prop_assert!(kind != "x", "{request:?}"),
            Err(e) => {
                let answer: serde_json::Value = serde_json::from_str(&e.to_frame().to_json()).unwrap();
                prop_assert_eq!(&answer["code"], e.code());
            }
        }
    }

    #[test]
    fn message_frames_splice_the_project_in(
        offset in any::<u64>(),
        ts in any::<u64>(),
        from in "[a-zA-Z0-9|@.]{1,20}",
        text in "\\PC{0,40}",
        project in prop_oneof![Just(PERSONAL.to_owned()), "[A-Za-z0-9._:-]{1,128}"],
    ) {
        let data_json = serde_json::to_string(&serde_json::json!({ "text": text, "n": offset })).unwrap();
        let data = RawValue::from_string(data_json).unwrap();
        let v1 = v1_message(offset, &from, &data, ts);
        let v2 = message_frame_from_v1(&project, &v1);
        let mut want: serde_json::Value = serde_json::from_str(&v1).unwrap();
        want["project"] = project.into();
        prop_assert_eq!(serde_json::from_str::<serde_json::Value>(&v2).unwrap(), want);
    }
}
