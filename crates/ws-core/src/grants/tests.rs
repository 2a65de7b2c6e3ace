use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn project(s: &str) -> ProjectId {
    ProjectId::parse(s).unwrap()
}

/// `"subscribe history"` → those operations; `""` → none; `"all"` → all four.
fn ops(names: &str) -> Ops {
    match names {
        "all" => Ops::ALL,
        _ => names
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect(),
    }
}

fn grants(projects: &[&str], caps: Option<Value>) -> Grants {
    let projects: Vec<String> = projects.iter().map(|p| (*p).to_owned()).collect();
    Grants::from_claims(&projects, caps.as_ref(), true).unwrap()
}

/// Checks the operations granted on each project of `expected`.
fn check(projects: &[&str], caps: Option<Value>, expected: &[(&str, &str)]) {
    let grants = grants(projects, caps);
    for (p, want) in expected {
        let got = grants.ops(&project(p));
        assert_eq!(got, ops(want), "{p} with {grants:?}");
        for op in Operation::ALL {
            assert_eq!(grants.allows(&project(p), op), got.contains(op), "{p} {op}");
        }
    }
}

/// Checks that `caps` is refused with `expected`, whose message mentions `mentions`.
fn check_err(caps: Value, expected: GrantsError, mentions: &[&str]) {
    let err = Grants::from_claims(&[], Some(&caps), true).unwrap_err();
    assert_eq!(err, expected, "{caps}");
    let message = err.to_string();
    for m in mentions {
        assert!(message.contains(m), "{message:?} should mention {m:?}");
    }
}

#[test]
fn v1_projects_grant_everything_on_listed_projects() {
    let everything = ["a", "b", "chat:1", "x"].map(|p| (p, "all"));
    check(&["*"], None, &everything);
    check(&[], None, &[("a", ""), ("chat:1", "")]);
    check(
        &["a", "chat:1"],
        None,
        &[("a", "all"), ("chat:1", "all"), ("b", ""), ("chat:2", "")],
    );
}

#[test]
fn v1_entries_are_not_patterns() {
    // v1 compared strings: `chat:*` named no project, and still does.
    check(
        &["chat:*", "a b", "", "~user"],
        None,
        &[("chat:1", ""), ("chat:", ""), ("a", "")],
    );
    assert!(!grants(&["~user"], None).allows(&project("a"), Operation::Subscribe));
}

#[test]
fn caps_decide_alone() {
    let caps = json!({"feed:*": ["subscribe"]});
    check(
        &["*", "a"],
        Some(caps),
        &[("a", ""), ("feed:x", "subscribe")],
    );
    check(&["*"], Some(json!({})), &[("a", "")]);
    check(&[], Some(json!({"a": []})), &[("a", "")]);
}

#[test]
fn patterns_match_exactly_by_prefix_or_all() {
    let caps = json!({
        "lobby": ["subscribe", "presence"],
        "chat:*": ["subscribe", "publish", "presence", "history"],
        "feed:*": ["subscribe"],
    });
    check(
        &[],
        Some(caps),
        &[
            ("lobby", "subscribe presence"),
            ("lobby2", ""),
            ("lobb", ""),
            ("chat:", "all"),
            ("chat:room-1", "all"),
            ("chat", ""),
            ("chats:1", ""),
            ("feed:news", "subscribe"),
            ("a", ""),
        ],
    );
    check(
        &[],
        Some(json!({"*": ["history"]})),
        &[("a", "history"), ("chat:1", "history")],
    );
}

#[test]
fn matching_patterns_add_up() {
    let caps = json!({
        "*": ["subscribe"],
        "c*": ["presence"],
        "chat:*": ["history"],
        "chat:a": ["publish"],
        "chat:a*": ["history"],
        "d": [],
    });
    check(
        &[],
        Some(caps),
        &[
            ("chat:a", "all"),
            ("chat:ab", "subscribe presence history"),
            ("chat:b", "subscribe presence history"),
            ("cat", "subscribe presence"),
            ("b", "subscribe"),
            ("d", "subscribe"),
            ("dd", "subscribe"),
        ],
    );
}

#[test]
fn repeated_operations_and_exact_and_prefix_of_the_same_text() {
    let caps = json!({"a": ["publish", "publish"], "a*": ["subscribe"]});
    check(
        &[],
        Some(caps),
        &[("a", "subscribe publish"), ("ab", "subscribe")],
    );
}

#[test]
fn caps_of_the_wrong_shape_are_refused_naming_the_pattern() {
    check_err(
        json!(["chat:*"]),
        GrantsError::NotAnObject { found: "an array" },
        &["`caps`", "object", "an array"],
    );
    check_err(
        json!(null),
        GrantsError::NotAnObject { found: "null" },
        &["null"],
    );
    check_err(
        json!({"chat:*": "subscribe"}),
        GrantsError::NotAList {
            pattern: "chat:*".into(),
            found: "a string",
        },
        &["`chat:*`", "array", "a string"],
    );
    check_err(
        json!({"a": ["subscribe", 1]}),
        GrantsError::NotAName {
            pattern: "a".into(),
            found: "a number",
        },
        &["`a`", "a number"],
    );
    check_err(
        json!({"a": ["subscribe"], "b": ["Subscribe"]}),
        GrantsError::UnknownOperation {
            pattern: "b".into(),
            operation: "Subscribe".into(),
        },
        &[
            "`b`",
            "`Subscribe`",
            "subscribe, publish, presence or history",
        ],
    );
}

#[test]
fn invalid_patterns_are_refused() {
    let cases = [
        ("", InvalidProjectId::Length(0)),
        ("**", InvalidProjectId::Character),
        ("a**", InvalidProjectId::Character),
        ("*a", InvalidProjectId::Character),
        ("a*b", InvalidProjectId::Character),
        ("chat/*", InvalidProjectId::Character),
        ("~user", InvalidProjectId::Character),
        ("a b", InvalidProjectId::Character),
        (&"x".repeat(129), InvalidProjectId::Length(129)),
    ];
    for (pattern, reason) in cases {
        check_err(
            json!({ pattern: ["subscribe"] }),
            GrantsError::InvalidPattern {
                pattern: pattern.to_owned(),
                reason,
            },
            &[
                &format!("`{pattern}`"),
                "a project-id prefix followed by one `*`",
            ],
        );
    }
    // The longest prefix: a project id of 128 characters, then `*`.
    let long = format!("{}*", "x".repeat(128));
    check(
        &[],
        Some(json!({ long: ["subscribe"] })),
        &[(&"x".repeat(128), "subscribe")],
    );
}

#[test]
fn patterns_are_bounded() {
    let caps = |n: usize| -> Value {
        (0..n)
            .map(|i| (format!("p{i}*"), json!(["subscribe"])))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let grants = Grants::from_claims(&[], Some(&caps(MAX_PATTERNS)), true).unwrap();
    assert!(grants.allows(&project("p255:x"), Operation::Subscribe));
    check_err(
        caps(MAX_PATTERNS + 1),
        GrantsError::TooManyPatterns {
            count: 257,
            max: 256,
        },
        &["257", "256"],
    );
}

#[test]
fn the_personal_stream_is_read_only_and_can_be_turned_off() {
    let cases = [
        (
            Grants::from_claims(&[], None, true),
            "subscribe presence history",
        ),
        (Grants::from_claims(&[], None, false), ""),
        (Grants::from_claims(&["*".into()], None, false), ""),
        (
            Grants::from_claims(&[], Some(&json!({"*": ["publish"]})), true),
            "subscribe presence history",
        ),
        (Ok(Grants::all()), "subscribe presence history"),
        (Ok(Grants::none()), ""),
    ];
    for (grants, want) in cases {
        let grants = grants.unwrap();
        assert_eq!(grants.personal_ops(), ops(want), "{grants:?}");
        for op in Operation::ALL {
            assert_eq!(grants.allows_personal(op), ops(want).contains(op));
        }
        assert!(!grants.allows_personal(Operation::Publish));
    }
}

#[test]
fn all_and_none() {
    for p in ["a", "chat:1", &"z".repeat(128)] {
        assert_eq!(Grants::all().ops(&project(p)), Ops::ALL);
        assert_eq!(Grants::none().ops(&project(p)), Ops::NONE);
    }
}

#[test]
fn debug_lists_patterns_in_order() {
    let caps = json!({"b": ["history"], "a": ["subscribe"], "chat:*": ["publish", "subscribe"], "*": ["presence"]});
    let grants = Grants::from_claims(&[], Some(&caps), false).unwrap();
    assert_eq!(
        format!("{grants:?}"),
        r#"{"*": {presence}, "a": {subscribe}, "b": {history}, "chat:*": {subscribe, publish}, "~user": {}}"#
    );
    assert_eq!(
        format!("{:?}", Grants::all()),
        r#"{"*": {subscribe, publish, presence, history}, "~user": {subscribe, presence, history}}"#
    );
}

#[test]
fn operations_have_wire_names() {
    for op in Operation::ALL {
        assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
        assert_eq!(op.to_string(), op.as_str());
        assert_eq!(Ops::of(op).iter().collect::<Vec<_>>(), [op]);
    }
    let err = "read".parse::<Operation>().unwrap_err();
    assert_eq!(err, UnknownOperation("read".into()));
    assert_eq!(
        err.to_string(),
        "unknown operation `read`: use subscribe, publish, presence or history"
    );
    assert!("SUBSCRIBE".parse::<Operation>().is_err());
}

#[test]
fn ops_is_a_set() {
    assert_eq!(Ops::default(), Ops::NONE);
    assert!(Ops::NONE.is_empty() && !Ops::ALL.is_empty());
    assert_eq!((Ops::NONE.len(), Ops::ALL.len()), (0, 4));
    assert_eq!(Operation::ALL.into_iter().collect::<Ops>(), Ops::ALL);
    let sp = Ops::from(Operation::Subscribe) | Operation::Publish;
    assert_eq!(sp, ops("publish subscribe"));
    assert_eq!(
        sp.without(Operation::Publish),
        Ops::of(Operation::Subscribe)
    );
    assert_eq!(sp.union(Ops::of(Operation::History)).len(), 3);
    assert_eq!(format!("{:?}", Ops::NONE), "{}");
}

/// Project ids over a small alphabet, so that patterns and queries often meet.
fn small_id() -> impl Strategy<Value = String> {
    "[ab:]{1,4}"
}

proptest! {
    /// `projects: [p]` grants exactly what `caps: {p: all four}` grants, on every project.
    #[test]
    fn v1_projects_equal_caps_with_all_four(
        p in prop_oneof![1 => Just("*".to_owned()), 4 => small_id()],
        queries in prop::collection::vec(small_id(), 1..20),
    ) {
        let all = json!(["subscribe", "publish", "presence", "history"]);
        let v1 = Grants::from_claims(std::slice::from_ref(&p), None, true).unwrap();
        let v2 = Grants::from_claims(&[], Some(&json!({ p.clone(): all })), true).unwrap();
        prop_assert_eq!(&v1, &v2);
        for q in queries {
            let q = project(&q);
            prop_assert_eq!(v1.ops(&q), v2.ops(&q));
            prop_assert_eq!(v1.ops(&q), if p == "*" || p == q.as_str() { Ops::ALL } else { Ops::NONE });
        }
    }

    /// `x*` grants its operations on exactly the projects starting with `x`.
    #[test]
    fn a_prefix_allows_exactly_the_projects_it_starts(
        x in small_id(),
        granted in 0u8..16,
        queries in prop::collection::vec(small_id(), 1..20),
    ) {
        let granted: Ops = Operation::ALL.into_iter().filter(|op| granted & (1 << *op as u8) != 0).collect();
        let names: Vec<_> = granted.iter().map(Operation::as_str).collect();
        let grants = Grants::from_claims(&[], Some(&json!({ format!("{x}*"): names })), true).unwrap();
        for q in queries.into_iter().chain([x.clone()]) {
            let want = if q.starts_with(&x) { granted } else { Ops::NONE };
            prop_assert_eq!(grants.ops(&project(&q)), want, "{} against {}*", q, x);
        }
    }

    /// A claim's grants are the union of each pattern's grants alone.
    #[test]
    fn grants_are_the_union_of_each_pattern(
        patterns in prop::collection::btree_map(
            prop_oneof![1 => Just("*".to_owned()), 3 => small_id(), 3 => small_id().prop_map(|p| p + "*")],
            0u8..16,
            0..8,
        ),
        queries in prop::collection::vec(small_id(), 1..20),
    ) {
        let to_json = |bits: u8| -> Value {
            Operation::ALL.into_iter().filter(|op| bits & (1 << *op as u8) != 0).map(Operation::as_str).collect::<Vec<_>>().into()
        };
        let caps: serde_json::Map<_, _> = patterns.iter().map(|(p, b)| (p.clone(), to_json(*b))).collect();
        let whole = Grants::from_claims(&[], Some(&caps.into()), true).unwrap();
        let alone: Vec<Grants> = patterns.iter().map(|(p, b)| {
            Grants::from_claims(&[], Some(&json!({ p.clone(): to_json(*b) })), true).unwrap()
        }).collect();
        for q in queries {
            let q = project(&q);
            let union = alone.iter().fold(Ops::NONE, |ops, g| ops | g.ops(&q));
            prop_assert_eq!(whole.ops(&q), union);
        }
    }
}
