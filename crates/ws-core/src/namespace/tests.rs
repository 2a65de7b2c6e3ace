use std::time::Duration;

use super::*;

fn project(s: &str) -> ProjectId {
    ProjectId::parse(s).unwrap()
}

fn defaults() -> NamespacePolicy {
    NamespacePolicy::new(100, Duration::from_secs(60), true, 50, true)
}

fn overrides(
    history_size: Option<usize>,
    history_ttl: Option<u64>,
    presence_events: Option<bool>,
    max_members_for_events: Option<usize>,
    allow_client_publish: Option<bool>,
) -> NamespaceOverrides {
    NamespaceOverrides {
        history_size,
        history_ttl: history_ttl.map(Duration::from_secs),
        presence_events,
        max_members_for_events,
        allow_client_publish,
    }
}

/// The namespaces of these tests: `chat` overrides everything, `feed` only publishing,
/// `quiet` nothing.
fn namespaces() -> Namespaces {
    Namespaces::new(
        defaults(),
        [
            (
                "chat".to_owned(),
                overrides(Some(10), Some(5), Some(false), Some(7), Some(false)),
            ),
            (
                "feed".to_owned(),
                overrides(None, None, None, None, Some(false)),
            ),
            ("quiet".to_owned(), NamespaceOverrides::default()),
            (
                "a.b_c-1".to_owned(),
                overrides(Some(3), None, None, None, None),
            ),
        ],
    )
    .unwrap()
}

/// Checks each project's namespace and resolved policy.
fn check(cases: &[(&str, Option<&str>, NamespacePolicy)]) {
    let namespaces = namespaces();
    for (p, namespace, want) in cases {
        assert_eq!(namespace_of(&project(p)), *namespace, "{p}");
        assert_eq!(namespaces.policy(&project(p)), *want, "{p}");
    }
}

#[test]
fn projects_get_their_namespace_policy_or_the_defaults() {
    let chat = NamespacePolicy::new(10, Duration::from_secs(5), false, 7, false);
    let feed = NamespacePolicy {
        allow_client_publish: false,
        ..defaults()
    };
    let dotted = NamespacePolicy {
        history_size: 3,
        ..defaults()
    };
    check(&[
        ("chat:1", Some("chat"), chat),
        ("chat:", Some("chat"), chat),
        ("chat:a:b", Some("chat"), chat),
        ("feed:news", Some("feed"), feed),
        ("quiet:x", Some("quiet"), defaults()),
        ("a.b_c-1:x", Some("a.b_c-1"), dotted),
        // No namespace, an unknown one, or a look-alike: the defaults.
        ("chat", None, defaults()),
        ("lobby", None, defaults()),
        (":chat", None, defaults()),
        ("other:1", Some("other"), defaults()),
        ("Chat:1", Some("Chat"), defaults()),
        ("chats:1", Some("chats"), defaults()),
    ]);
}

#[test]
fn accessors() {
    let namespaces = namespaces();
    assert_eq!(namespaces.defaults(), defaults());
    assert_eq!(namespaces.get("quiet"), Some(defaults()));
    assert_eq!(namespaces.get("chat").map(|p| p.history_size), Some(10));
    assert_eq!(namespaces.get("nope"), None);
    let mut names: Vec<_> = namespaces.names().collect();
    names.sort_unstable();
    assert_eq!(names, ["a.b_c-1", "chat", "feed", "quiet"]);

    let only = Namespaces::defaults_only(defaults());
    assert_eq!(only.policy(&project("chat:1")), defaults());
    assert_eq!(only.names().count(), 0);
    assert_eq!(Namespaces::new(defaults(), []), Ok(only));
}

#[test]
fn overrides_replace_only_what_they_set() {
    let base = NamespacePolicy::default();
    assert_eq!(
        base,
        NamespacePolicy::new(1000, Duration::from_secs(600), true, 1000, true)
    );
    assert_eq!(base.with_overrides(&NamespaceOverrides::default()), base);
    let each = [
        (
            overrides(Some(1), None, None, None, None),
            NamespacePolicy {
                history_size: 1,
                ..base
            },
        ),
        (
            overrides(None, Some(1), None, None, None),
            NamespacePolicy {
                history_ttl: Duration::from_secs(1),
                ..base
            },
        ),
        (
            overrides(None, None, Some(false), None, None),
            NamespacePolicy {
                presence_events: false,
                ..base
            },
        ),
        (
            overrides(None, None, None, Some(0), None),
            NamespacePolicy {
                max_members_for_events: 0,
                ..base
            },
        ),
        (
            overrides(None, None, None, None, Some(false)),
            NamespacePolicy {
                allow_client_publish: false,
                ..base
            },
        ),
    ];
    for (overrides, want) in each {
        assert_eq!(base.with_overrides(&overrides), want, "{overrides:?}");
    }
}

/// Checks that these namespaces are refused with `expected`, at config key `key`.
fn check_err(given: Vec<(&str, NamespaceOverrides)>, expected: NamespaceError, key: &str) {
    let given = given.into_iter().map(|(n, o)| (n.to_owned(), o));
    let err = Namespaces::new(defaults(), given).unwrap_err();
    assert_eq!(err, expected);
    assert_eq!(err.key(), key);
}

#[test]
fn invalid_names_are_refused() {
    let long = "x".repeat(MAX_NAME_LEN + 1);
    for name in ["", "chat:", "a:b", "a b", "a/b", "é", "*", &long] {
        check_err(
            vec![(name, NamespaceOverrides::default())],
            NamespaceError::InvalidName { name: name.into() },
            &format!("namespaces.{name}"),
        );
    }
    let longest = "x".repeat(MAX_NAME_LEN);
    let namespaces = Namespaces::new(
        defaults(),
        [(longest.clone(), overrides(Some(1), None, None, None, None))],
    )
    .unwrap();
    assert_eq!(
        namespaces
            .policy(&project(&format!("{longest}:")))
            .history_size,
        1
    );
}

#[test]
fn zero_history_and_duplicates_are_refused() {
    let zero_size = overrides(Some(0), None, None, None, None);
    let zero_ttl = overrides(None, Some(0), None, None, None);
    let fine = NamespaceOverrides::default();
    let zero = |namespace: &str, field| NamespaceError::Zero {
        namespace: namespace.into(),
        field,
    };
    check_err(
        vec![("chat", zero_size)],
        zero("chat", "history_size"),
        "namespaces.chat.history_size",
    );
    check_err(
        vec![("feed", fine), ("chat", zero_ttl)],
        zero("chat", "history_ttl"),
        "namespaces.chat.history_ttl",
    );
    check_err(
        vec![("chat", fine), ("chat", fine)],
        NamespaceError::Duplicate {
            name: "chat".into(),
        },
        "namespaces.chat",
    );
}

#[test]
fn error_messages_say_what_to_do() {
    let messages = [
        (
            NamespaceError::InvalidName { name: "a:b".into() },
            "namespace name `a:b` is invalid: use 1 to 127 characters of A-Z a-z 0-9 . _ - (the part of a project id before its first `:`)",
        ),
        (
            NamespaceError::Duplicate {
                name: "chat".into(),
            },
            "namespaces.chat is configured twice: merge the two tables",
        ),
        (
            NamespaceError::Zero {
                namespace: "chat".into(),
                field: "history_size",
            },
            "namespaces.chat.history_size must be more than zero: leave it out to keep the global value",
        ),
    ];
    for (err, message) in messages {
        assert_eq!(err.to_string(), message);
    }
}
