//! Micro-benchmarks of ws-core: the hub's fan-out walk, membership churn, the envelope.
//!
//! `cargo bench -p ws-core` (or `cargo xtask bench --micro`); divan's own flags go after
//! `--`, e.g. `cargo bench -p ws-core -- hub --sample-count 50`.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use ws_core::envelope::{ClientFrame, Payload, ServerFrame};
use ws_core::hub::{Hub, HubConfig, QueueDepth};
use ws_core::{ConnId, ProjectId, UserId};

fn main() {
    divan::main();
}

/// A stand-in for the transport's per-connection send queue (a `VecDeque` behind a lock).
#[derive(Debug, Default)]
struct Queue {
    frames: Mutex<VecDeque<Bytes>>,
}

/// A hub with `members` members spread over `projects` projects, one user per member.
fn hub_with(members: usize, projects: usize) -> (Hub<Queue>, Vec<ProjectId>) {
    let ids: Vec<ProjectId> = (0..projects)
        .map(|p| ProjectId::parse(&format!("project-{p}")).expect("valid project id"))
        .collect();
    let mut hub = Hub::new(HubConfig::default());
    for m in 0..members {
        let _ = hub.register(
            ConnId(m as u64),
            ids[m % projects].clone(),
            UserId::new(format!("user-{m}")),
            Queue::default(),
        );
    }
    (hub, ids)
}

/// A 100-byte payload as a client would publish it.
const DATA: &str = r#""b:123456:98765432:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx""#;

mod hub {
    use super::*;

    /// One publish to a project of `members`: walk the recipients, push the shared frame into
    /// each queue and check the slow-consumer limit, as `SharedHub::deliver` does. Queues are
    /// emptied every 64 frames, as a write pump would.
    #[divan::bench(args = [100, 1_000, 10_000])]
    fn publish_to_members(bencher: Bencher<'_, '_>, members: usize) {
        let (hub, projects) = hub_with(members, 1);
        let config = HubConfig::default();
        let frame = Bytes::from(vec![b'x'; 170]);
        bencher.counter(ItemsCount::new(members)).bench_local(|| {
            let mut slow = 0_usize;
            for (_, queue) in hub.recipients(&projects[0]) {
                let mut frames = queue.frames.lock().expect("not poisoned");
                frames.push_back(frame.clone());
                let depth = QueueDepth {
                    frames: frames.len(),
                    bytes: frames.len() * frame.len(),
                };
                if config.is_over(depth) {
                    slow += 1;
                }
                if frames.len() >= 64 {
                    frames.clear();
                }
            }
            slow
        });
    }

    /// The bare walk over 10 000 recipients, without queues.
    #[divan::bench]
    fn recipients_walk_10k(bencher: Bencher<'_, '_>) {
        let (hub, projects) = hub_with(10_000, 1);
        bencher
            .counter(ItemsCount::new(10_000_usize))
            .bench_local(|| {
                let mut seen = 0_usize;
                for (conn, queue) in hub.recipients(&projects[0]) {
                    black_box((conn, queue));
                    seen += 1;
                }
                seen
            });
    }

    /// A connection arrives and leaves, in a hub of 10 000 members over 100 projects.
    #[divan::bench]
    fn register_unregister(bencher: Bencher<'_, '_>) {
        let (mut hub, projects) = hub_with(10_000, 100);
        let user = UserId::new("churn");
        let mut next = 1_000_000_u64;
        bencher.bench_local(|| {
            next += 1;
            let project = projects[(next % 100) as usize].clone();
            let registered = hub.register(ConnId(next), project, user.clone(), Queue::default());
            let gone = hub.unregister(ConnId(next));
            (registered, gone.map(|g| g.left))
        });
    }
}

mod envelope {
    use super::*;

    /// A client's publish with a 100-byte payload, parsed.
    #[divan::bench]
    fn parse_publish(bencher: Bencher<'_, '_>) {
        let text = format!(r#"{{"type":"publish","id":"c-42","data":{DATA}}}"#);
        bencher.bench_local(|| ClientFrame::parse(black_box(&text)));
    }

    #[divan::bench]
    fn parse_presence(bencher: Bencher<'_, '_>) {
        bencher.bench_local(|| ClientFrame::parse(black_box(r#"{"type":"presence"}"#)));
    }

    #[divan::bench]
    fn parse_invalid(bencher: Bencher<'_, '_>) {
        bencher.bench_local(|| ClientFrame::parse(black_box(r#"{"type":"publish","data":"#)));
    }

    /// The `message` frame every member receives, serialised once per publish.
    #[divan::bench]
    fn serialise_message(bencher: Bencher<'_, '_>) {
        let payload = Payload::from_json(DATA.to_owned()).expect("valid JSON");
        bencher.bench_local(|| {
            ServerFrame::Message {
                offset: black_box(123_456),
                from: "alice",
                data: payload.as_raw(),
                ts: 1_795_657_378_356,
            }
            .to_json()
        });
    }

    #[divan::bench]
    fn serialise_welcome(bencher: Bencher<'_, '_>) {
        bencher.bench_local(|| {
            ServerFrame::Welcome {
                conn: black_box(42),
                user: "alice",
                project: "chat",
                epoch: "18eb7612ea0f8ac72f85-1",
                offset: 0,
                recovered: false,
                missed: 0,
                ping_interval_ms: 25_000,
            }
            .to_json()
        });
    }
}
