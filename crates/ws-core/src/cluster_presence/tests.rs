use std::time::{Duration, Instant};

use super::*;

#[expect(
    clippy::disallowed_methods,
    reason = "an arbitrary origin for the fake clock"
)]
fn origin() -> Instant {
    Instant::now()
}

const ON: EventsPolicy = EventsPolicy {
    events: true,
    max_members: 1000,
};

fn p() -> ProjectId {
    ProjectId::parse("room").unwrap()
}

fn u(s: &str) -> UserId {
    UserId::new(s)
}

fn remote(users: &[(&str, u32)]) -> Vec<(UserId, u32)> {
    users.iter().map(|(s, n)| (u(s), *n)).collect()
}

fn users(list: &[&str]) -> Vec<UserId> {
    list.iter().map(|s| u(s)).collect()
}

/// A node with alice connected here and bob on another node, primed.
fn primed(t0: Instant) -> ClusterPresence {
    let mut cp = ClusterPresence::default();
    assert!(cp.handle_local(&p(), &u("alice"), Local::Joined, 1, ON));
    cp.handle_remote(t0, &p(), remote(&[("bob", 1)]));
    assert_eq!(cp.poll_diff(t0), None, "the first snapshot only primes");
    cp
}

#[test]
fn remote_joins_and_leaves_arrive_as_one_diff_a_second() {
    let t0 = origin();
    let mut cp = primed(t0);
    // Carol comes at once elsewhere; dave comes and goes within the second.
    let t1 = t0 + Duration::from_millis(300);
    cp.handle_remote(t1, &p(), remote(&[("bob", 1), ("carol", 2), ("dave", 1)]));
    assert_eq!(
        cp.poll_diff(t1),
        None,
        "one diff per second: the primer counts"
    );
    assert_eq!(cp.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    let t2 = t0 + Duration::from_millis(800);
    cp.handle_remote(t2, &p(), remote(&[("carol", 2)]));
    let t3 = t0 + Duration::from_secs(1);
    let diff = cp.poll_diff(t3).unwrap();
    assert_eq!(diff.joined, users(&["carol"]));
    assert_eq!(diff.left, users(&["bob"]), "dave came and went unseen");
    assert!(diff.announces(ON, 1));
    assert_eq!(cp.poll_diff(t3), None);
    // Nothing changed since: no diff, no timer.
    cp.handle_remote(t3 + Duration::from_secs(5), &p(), remote(&[("carol", 1)]));
    assert_eq!(cp.poll_diff(t3 + Duration::from_secs(5)), None);
    assert_eq!(cp.poll_timeout(), None);
}

#[test]
fn local_changes_are_announced_at_once_unless_the_cluster_already_knows() {
    let t0 = origin();
    let mut cp = primed(t0);
    // Bob, already present on another node, connects here too: no second join.
    assert!(!cp.handle_local(&p(), &u("bob"), Local::Joined, 2, ON));
    // ... and leaves here while still there: no leave.
    assert!(!cp.handle_local(&p(), &u("bob"), Local::Left, 1, ON));
    // Erin is new to the cluster: a join now.
    assert!(cp.handle_local(&p(), &u("erin"), Local::Joined, 2, ON));
    // The next snapshot lists her elsewhere too (she opened a tab there): no diff for her.
    cp.handle_remote(
        t0 + Duration::from_secs(2),
        &p(),
        remote(&[("bob", 1), ("erin", 1)]),
    );
    assert_eq!(cp.poll_diff(t0 + Duration::from_secs(2)), None);
    // She closes the tab here; still on the other node: no leave.
    assert!(!cp.handle_local(&p(), &u("erin"), Local::Left, 1, ON));
    // Bob leaves the other node: a diff. Erin still counts as there.
    cp.handle_remote(t0 + Duration::from_secs(3), &p(), remote(&[("erin", 1)]));
    let diff = cp.poll_diff(t0 + Duration::from_secs(3)).unwrap();
    assert_eq!((diff.joined, diff.left), (vec![], users(&["bob"])));
    // Alice, only here, leaves and was the last member here: announced, project dropped.
    assert!(cp.handle_local(&p(), &u("alice"), Local::Left, 0, ON));
    assert_eq!(cp.projects().count(), 0);
    cp.handle_remote(t0 + Duration::from_secs(9), &p(), remote(&[("zed", 1)]));
    assert_eq!(
        cp.poll_diff(t0 + Duration::from_secs(9)),
        None,
        "no member here to tell"
    );
}

#[test]
fn the_limits_count_the_whole_cluster() {
    let t0 = origin();
    let two = EventsPolicy {
        events: true,
        max_members: 2,
    };
    let mut cp = ClusterPresence::default();
    assert!(cp.handle_local(&p(), &u("alice"), Local::Joined, 1, two));
    cp.handle_remote(t0, &p(), remote(&[("bob", 1)]));
    // Carol makes three members in the cluster, though two here.
    assert!(!cp.handle_local(&p(), &u("carol"), Local::Joined, 2, two));
    // Her leave, counted with her, is over the limit too.
    assert!(!cp.handle_local(&p(), &u("carol"), Local::Left, 1, two));
    // A remote diff in a project over the limit says so.
    cp.handle_remote(
        t0 + Duration::from_secs(1),
        &p(),
        remote(&[("bob", 1), ("dan", 1)]),
    );
    let diff = cp.poll_diff(t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(diff.joined, users(&["dan"]));
    assert!(!diff.announces(two, 1), "alice + bob + dan");
    assert!(diff.announces(ON, 1));
    let off = EventsPolicy {
        events: false,
        max_members: 1000,
    };
    assert!(!diff.announces(off, 1));
    assert!(!cp.handle_local(&p(), &u("eve"), Local::Joined, 2, off));
}

#[test]
fn many_projects_each_get_their_own_second() {
    let t0 = origin();
    let mut cp = ClusterPresence::default();
    let projects: Vec<ProjectId> = (0..5)
        .map(|i| ProjectId::parse(&format!("p{i}")).unwrap())
        .collect();
    for project in &projects {
        assert!(cp.handle_local(project, &u("me"), Local::Joined, 1, ON));
        cp.handle_remote(t0, project, remote(&[]));
    }
    let t1 = t0 + Duration::from_millis(1500);
    for (i, project) in projects.iter().enumerate() {
        cp.handle_remote(t1, project, remote(&[(&format!("u{i}"), 1)]));
    }
    let mut seen: Vec<ProjectId> = std::iter::from_fn(|| cp.poll_diff(t1))
        .map(|d| {
            assert_eq!(d.joined.len(), 1);
            d.project
        })
        .collect();
    seen.sort();
    assert_eq!(seen, projects);
}
