//! The benchmark cases of `cargo xtask bench`: the metrics a case reports, the full profile
//! (the cases of `docs/benchmarks.md`, in table order, and the scaling series) and the quick
//! profile of `cargo xtask test`.
//!
//! Cases that speak wshub's v2 protocol (`fanout-1k-v2`, `fanout-1k-ephemeral`, `idle-subs`,
//! `sub-churn`) are wshub-only: the baselines speak plain room broadcast, so those cases run
//! against wshub alone and their rows have no baseline columns.

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
    /// Runs against wshub only (the case speaks v2, which the baselines do not).
    pub(super) wshub_only: bool,
}

impl Case {
    /// A fan-out case the baselines run too: at least [`BIMODAL_RUNS`] runs when `uws`, whose
    /// fan-out rate is bimodal between runs, is among the servers.
    pub(super) fn bimodal_with_uws(&self) -> bool {
        !self.wshub_only && self.args.first().is_some_and(|a| a == "fanout")
    }

    /// How many runs of this case a benchmark of `runs` runs makes against `servers`.
    pub(super) fn runs(&self, runs: u32, servers: &[&str]) -> u32 {
        if self.bimodal_with_uws() && servers.contains(&"uws") {
            runs.max(BIMODAL_RUNS)
        } else {
            runs
        }
    }
}

/// The fewest runs of a fan-out case when `uws` runs: its rate is bimodal between runs.
pub(super) const BIMODAL_RUNS: u32 = 5;

fn case(name: &'static str, what: &'static str, args: &str, metrics: &[Metric]) -> Case {
    Case {
        name,
        what,
        args: args.split_whitespace().map(str::to_owned).collect(),
        metrics: metrics.to_vec(),
        wshub_only: false,
    }
}

/// A case that speaks v2: wshub only.
fn v2_case(name: &'static str, what: &'static str, args: &str, metrics: &[Metric]) -> Case {
    Case {
        wshub_only: true,
        ..case(name, what, args, metrics)
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
const KIB_PER_V2_CONN: Metric = metric(
    "kib_per_conn",
    "RSS per idle v2 connection, no subscription (KiB)",
    false,
);
pub(super) const BYTES_PER_SUB: Metric = metric(
    "bytes_per_sub",
    "RSS per subscription on top of the connection (B)",
    false,
);
const SUBSCRIBES: Metric = metric("subscribes_per_s", "subscribes/s (setup, pipelined)", true);
pub(super) const SUBS_PER_S: Metric = metric("subs_per_s", "subscribe + unsubscribe pairs/s", true);
const SUBS_PER_CPU: Metric = metric("subs_per_server_cpu_s", "pairs per server CPU-second", true);
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
        v2_case(
            "fanout-1k-v2",
            "`fanout-1k` over protocol v2 (`GET /ws?subscribe=fan-0`, publishes naming their project; the publisher subscribed too, as it is in its room on v1): the cost of v2 framing and of a subscription against a v1 room",
            "fanout --subscribers 1000 --duration 5s --window 64 --protocol v2",
            &fan,
        ),
        v2_case(
            "fanout-1k-ephemeral",
            "`fanout-1k-v2` with `\"ephemeral\": true` publishes (no offset, not kept in the history); deliveries matched by the sequence in the payload, never by offset",
            "fanout --subscribers 1000 --duration 5s --window 64 --protocol v2 --ephemeral",
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
        v2_case(
            "idle-subs",
            "10 000 idle v2 connections (RSS read after 15 s), then 20 subscriptions each over 1 000 projects (RSS read after 15 s more): KiB per idle v2 connection, bytes per subscription on top of it",
            "idle-subs --connections 10000 --subscriptions 20 --pool 1000",
            &[BYTES_PER_SUB, KIB_PER_V2_CONN, SUBSCRIBES, CONNECTS],
        ),
        v2_case(
            "sub-churn",
            "1 000 v2 connections, each subscribing and unsubscribing in a loop over 1 000 projects, 8 requests in flight per connection, 5 s",
            "sub-churn --connections 1000 --window 8 --pool 1000 --duration 5s",
            &[
                SUBS_PER_S,
                P50,
                P99,
                SUBS_PER_CPU,
                SERVER_CPU,
                CPU0_BUSY,
                GENERATOR_CPU,
            ],
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
        v2_case(
            "fanout-v2",
            "50 subscribers x 200 messages over v2",
            "fanout --subscribers 50 --messages 200 --duration 20s --drain 5s --protocol v2",
            &[DELIVERIES, P99, LOST],
        ),
        v2_case(
            "fanout-eph",
            "50 subscribers x 200 ephemeral messages over v2",
            "fanout --subscribers 50 --messages 200 --duration 20s --drain 5s --protocol v2 --ephemeral",
            &[DELIVERIES, P99, LOST],
        ),
        v2_case(
            "idle-subs",
            "200 v2 connections, then 20 subscriptions each",
            "idle-subs --connections 200 --subscriptions 20 --pool 100 --settle 500ms",
            &[BYTES_PER_SUB, KIB_PER_V2_CONN],
        ),
        v2_case(
            "sub-churn",
            "50 v2 connections churning subscriptions for 2 s",
            "sub-churn --connections 50 --window 8 --pool 400 --duration 2s --drain 5s",
            &[SUBS_PER_S, P99],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::{BIMODAL_RUNS, full_cases, quick_cases};

    #[test]
    fn names_are_unique_and_v2_cases_are_wshub_only() {
        for cases in [full_cases(), quick_cases()] {
            let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), cases.len());
            for case in &cases {
                let v2 = case.args.iter().any(|a| a == "v2" || a == "--ephemeral")
                    || ["idle-subs", "sub-churn"].contains(&case.args[0].as_str());
                assert_eq!(case.wshub_only, v2, "{}", case.name);
            }
        }
    }

    #[test]
    fn fan_out_runs_at_least_five_times_when_uws_runs() {
        let cases = full_cases();
        let find = |name: &str| cases.iter().find(|c| c.name == name).unwrap();
        let with_uws = ["wshub", "node-ws", "uws"];
        assert_eq!(find("fanout-1k").runs(3, &with_uws), BIMODAL_RUNS);
        assert_eq!(find("fanout-1k").runs(7, &with_uws), 7);
        assert_eq!(find("fanout-1k").runs(3, &["wshub", "node-ws"]), 3);
        assert_eq!(find("fanout-1k-v2").runs(3, &with_uws), 3, "wshub only");
        assert_eq!(find("handshake").runs(3, &with_uws), 3);
    }
}
