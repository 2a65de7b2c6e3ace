//! The benchmark cases of `cargo xtask bench`: the metrics a case reports, the full profile
//! (the cases of `docs/benchmarks.md`, in table order, and the scaling series) and the quick
//! profile of `cargo xtask test`.

/// One metric of a case's results.
#[derive(Debug, Clone, Copy)]
pub(super) struct Metric {
    /// The key in the generator's JSON.
    pub(super) key: &'static str,
    pub(super) label: &'static str,
    pub(super) higher_is_better: bool,
}

const fn metric(key: &'static str, label: &'static str, higher_is_better: bool) -> Metric {
    Metric {
        key,
        label,
        higher_is_better,
    }
}

/// One benchmark case: the generator's arguments and what to report.
#[derive(Debug, Clone)]
pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) what: &'static str,
    pub(super) args: Vec<String>,
    pub(super) metrics: Vec<Metric>,
}

fn case(name: &'static str, what: &'static str, args: &str, metrics: &[Metric]) -> Case {
    Case {
        name,
        what,
        args: args.split_whitespace().map(str::to_owned).collect(),
        metrics: metrics.to_vec(),
    }
}

const KIB_PER_CONN: Metric = metric("kib_per_conn", "RSS per connection (KiB)", false);
const CONNECTS: Metric = metric("connects_per_s", "connections opened/s (setup)", true);
pub(super) const DELIVERIES: Metric = metric("deliveries_per_s", "deliveries/s", true);
const P50: Metric = metric("p50_ms", "p50 latency (ms)", false);
const P99: Metric = metric("p99_ms", "p99 latency (ms)", false);
const P999: Metric = metric("p999_ms", "p999 latency (ms)", false);
const LOST: Metric = metric("lost", "lost (undelivered)", false);
const SERVER_CPU: Metric = metric("server_cpu_pct", "server CPU (% of its core)", false);
const GENERATOR_CPU: Metric = metric("generator_cpu_pct", "generator CPU (% of its core)", false);
const HANDSHAKES: Metric = metric("handshakes_per_s", "handshakes/s (open + close)", true);
const CLOSE_SHARE: Metric = metric(
    "close_frame_share",
    "closes answered with a close frame",
    true,
);
pub(super) const DELIVERIES_PER_CPU: Metric = metric(
    "deliveries_per_server_cpu_s",
    "deliveries per server CPU-second",
    true,
);
const HANDSHAKES_PER_CPU: Metric = metric(
    "handshakes_per_server_cpu_s",
    "handshakes per server CPU-second",
    true,
);
const CPU0_BUSY: Metric = metric("cpu0_busy_pct", "CPU 0 busy, all processes (%)", false);
const OPEN_P50: Metric = metric("open_p50_ms", "open: connect to welcome, p50 (ms)", false);
const CLOSE_P50: Metric = metric("close_p50_ms", "close: close frame to end, p50 (ms)", false);

/// The max-rate fan-out cases of one project, by subscribers: the scaling series.
pub(super) const SCALING: [(&str, u32); 4] = [
    ("fanout-1k", 1_000),
    ("fanout-5k", 5_000),
    ("fanout-10k", 10_000),
    ("fanout-19k", 19_000),
];

pub(super) fn full_cases() -> Vec<Case> {
    let fan = [
        DELIVERIES,
        P50,
        P99,
        P999,
        LOST,
        DELIVERIES_PER_CPU,
        SERVER_CPU,
        CPU0_BUSY,
        GENERATOR_CPU,
    ];
    vec![
        case(
            "idle-10k",
            "10 000 idle connections over 100 projects",
            "idle --connections 10000 --projects 100",
            &[KIB_PER_CONN, CONNECTS],
        ),
        case(
            "idle-19k",
            "19 000 idle connections over 100 projects (10 source addresses)",
            "idle --connections 19000 --projects 100",
            &[KIB_PER_CONN, CONNECTS],
        ),
        case(
            "fanout-1k",
            "1 000 subscribers in one project, 100-byte payloads, max rate (64 messages in flight), 5 s",
            "fanout --subscribers 1000 --duration 5s --window 64",
            &fan,
        ),
        case(
            "fanout-5k",
            "5 000 subscribers in one project, max rate (64 messages in flight), 5 s",
            "fanout --subscribers 5000 --duration 5s --window 64",
            &fan,
        ),
        case(
            "fanout-10k",
            "10 000 subscribers in one project, max rate (64 messages in flight), 5 s",
            "fanout --subscribers 10000 --duration 5s --window 64",
            &fan,
        ),
        case(
            "fanout-19k",
            "19 000 subscribers in one project, max rate (64 messages in flight), 5 s (10 source addresses)",
            "fanout --subscribers 19000 --duration 5s --window 64",
            &fan,
        ),
        case(
            "fanout-10k-2hz",
            "10 000 subscribers in one project, 2 msg/s for 10 s: the time to write one message to 10 000 sockets, with the server's core mostly idle (no queueing)",
            "fanout --subscribers 10000 --rate 2 --duration 10s --drain 10s",
            &fan,
        ),
        case(
            "fanout-10k-20hz",
            "10 000 subscribers in one project, 20 msg/s for 10 s (200 000 deliveries/s)",
            "fanout --subscribers 10000 --rate 20 --duration 10s --drain 10s",
            &fan,
        ),
        case(
            "handshake",
            "open (token checked, welcome read) and close with a close frame, 32 in flight, 5 s",
            "handshake --concurrency 32 --duration 5s",
            &[
                HANDSHAKES,
                CLOSE_SHARE,
                OPEN_P50,
                CLOSE_P50,
                HANDSHAKES_PER_CPU,
                SERVER_CPU,
                CPU0_BUSY,
                GENERATOR_CPU,
            ],
        ),
        case(
            "fanout-many",
            "1 000 projects x 10 subscribers, publishes round-robin over the projects, max rate (1 000 in flight), 5 s",
            "fanout --projects 1000 --subscribers 10 --duration 5s --window 1000",
            &fan,
        ),
    ]
}

pub(super) fn quick_cases() -> Vec<Case> {
    vec![
        case(
            "idle",
            "200 idle connections over 10 projects",
            "idle --connections 200 --projects 10 --settle 500ms",
            &[KIB_PER_CONN],
        ),
        case(
            "fanout",
            "50 subscribers x 200 messages",
            "fanout --subscribers 50 --messages 200 --duration 20s --drain 5s",
            &[DELIVERIES, P99, LOST],
        ),
        case(
            "handshake",
            "100 handshakes",
            "handshake --concurrency 8 --cycles 100 --duration 20s",
            &[HANDSHAKES, CLOSE_SHARE],
        ),
        case(
            "fanout-many",
            "20 projects x 5 subscribers x 200 messages",
            "fanout --projects 20 --subscribers 5 --messages 200 --window 40 --duration 20s --drain 5s",
            &[DELIVERIES, P99, LOST],
        ),
    ]
}
