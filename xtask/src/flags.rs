//! Command-line flags of `cargo xtask`, parsed by hand to keep xtask dependency-free.

pub(crate) const USAGE: &str = "\
Usage: cargo xtask <TASK> [ARGS]

Tasks:
  test [-- ARGS]       install the tools tests need, then run doctests and the whole
                       test suite (nextest if installed, else cargo test); ARGS go to the runner
  lint                 rustfmt --check, clippy -D warnings, rustdoc -D warnings,
                       tidy checks, cargo deny check bans licenses sources
  bench [--quick] [--runs N] [--case NAME]... [--peer NAME]... [--no-peers]
                       load benchmark: the release `wshub` (auth on) and the baseline servers
                       of ../shared/peers (node-ws, rust-naive, uws), server pinned to CPU 0
                       and load generator (bins/wshub-bench) to CPU 1, each case N times
                       (default 3, and 5 for fan-out cases when uws runs: it is bimodal);
                       medians and wshub/baseline ratios go to docs/benchmarks.md.
                       Cases: idle-10k idle-19k fanout-1k fanout-10k-20hz handshake fanout-many
                       redis-fanout (1, 2, 3 nodes on one redis-server; needs redis-server);
                       redis-cluster-fanout (1, 2, 3 nodes on a 3-master Redis Cluster;
                       needs redis-server and redis-cli); both report Redis CPU per delivery;
                       v2, wshub only: fanout-1k-v2 fanout-1k-ephemeral idle-subs sub-churn.
                       --quick: a small smoke profile against wshub only (release build if
                       fresh, else debug), asserting only that nothing was lost; no docs written
  bench --micro [-- ARGS]
                       the ws-core micro-benchmarks (cargo bench -p ws-core -- ARGS)
  fuzz [--seconds N] [TARGET...]
                       run each cargo-fuzz target of fuzz/ (default: all) for N seconds
                       (default 60); installs cargo-fuzz when missing
  soak [--seconds N]   churn against the release `wshub` (auth on) for N seconds (default
                       300): waves of 5 000 clients connect, publish and leave, 10% resetting
                       TCP; fails unless the server's RSS, descriptors and tasks end within 10%
                       of their post-warm-up baseline, nothing is lost and its log has no
                       panic or ERROR; the summary goes to docs/reliability.md
  chaos [--duration D] [--clients N] [--release] [--redis standalone|cluster]
                       fault injection: 3 `wshub` nodes on one redis-server, N clients (default
                       300, v1 and v2) reconnecting with recovery and publishers on every node
                       for D of publishing (default 60s; `90s`, `10m`), while nodes are
                       SIGKILLed and restarted, Redis restarted (keeping or losing its data),
                       paused and cut from a node; an independent checker of order, delivery,
                       duplicates and recovery must find no violation. Counts go to
                       target/chaos/result.json and docs/reliability.md (debug build unless
                       --release). `--redis cluster`: the nodes on a Redis Cluster (3 primaries,
                       3 replicas); the Redis faults become a primary paused (briefly, and into
                       a failover), a primary killed and back as the replica, and a node's
                       connections killed (CLIENT KILL)
  conformance [--full] the Autobahn TestSuite (fuzzing client, installed under target/autobahn
                       on pyenv's CPython 2.7) against ws-transport's echo example: cases
                       1-7 and 10; --full adds 9 (big messages) and 12-13 (permessage-deflate,
                       UNIMPLEMENTED); fails on any FAILED case; the summary goes to
                       docs/conformance.md
  release [--quick]    build the server with the `dist` profile (`--quick`: the `release`
                       profile) and pack target/dist/wshub-VERSION-ARCH-linux.tar.gz with
                       README, example config, licenses and an SBOM, plus its .sha256
  help                 print this message
";

/// One parsed invocation of `cargo xtask`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Task {
    Help,
    Test {
        runner_args: Vec<String>,
    },
    Lint,
    Bench {
        runner_args: Vec<String>,
    },
    Fuzz {
        seconds: u64,
        targets: Vec<String>,
    },
    Soak {
        seconds: u64,
    },
    Chaos {
        /// Seconds of publishing.
        seconds: u64,
        clients: usize,
        release: bool,
        /// `--redis cluster`: the nodes share a Redis Cluster.
        cluster: bool,
    },
    Conformance {
        /// Add the big-message and compression cases.
        full: bool,
    },
    Release {
        /// Build with the `release` profile instead of `dist` (no fat LTO): for CI's smoke test.
        quick: bool,
    },
}

impl Task {
    /// Parses the arguments after the program name.
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut args = args.into_iter();
        let Some(task) = args.next() else {
            return Err("no task given".to_owned());
        };
        let rest: Vec<String> = args.collect();
        match task.as_str() {
            "help" | "-h" | "--help" => no_args(&task, &rest).map(|()| Self::Help),
            "test" => Ok(Self::Test {
                runner_args: runner_args(rest),
            }),
            "lint" => no_args(&task, &rest).map(|()| Self::Lint),
            // `bench` re-reads its flags from the raw arguments (`BenchFlags::parse`).
            "bench" => BenchFlags::parse(&rest).map(|_| Self::Bench { runner_args: rest }),
            "fuzz" => fuzz_args(rest),
            "soak" => soak_args(rest),
            "chaos" => chaos_args(rest),
            "conformance" => match rest.as_slice() {
                [] => Ok(Self::Conformance { full: false }),
                [flag] if flag == "--full" => Ok(Self::Conformance { full: true }),
                [arg, ..] => Err(format!("`conformance` takes only `--full`, got `{arg}`")),
            },
            "release" => match rest.as_slice() {
                [] => Ok(Self::Release { quick: false }),
                [flag] if flag == "--quick" => Ok(Self::Release { quick: true }),
                [arg, ..] => Err(format!("`release` takes only `--quick`, got `{arg}`")),
            },
            _ => Err(format!("unknown task `{task}`")),
        }
    }
}

/// `fuzz [--seconds N] [TARGET...]`.
fn fuzz_args(rest: Vec<String>) -> Result<Task, String> {
    let mut seconds = 60;
    let mut targets = Vec::new();
    let mut args = rest.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            let value = args.next().ok_or("`--seconds` needs a number")?;
            seconds = value
                .parse()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| format!("`--seconds` needs a positive number, got `{value}`"))?;
        } else if arg.starts_with('-') {
            return Err(format!(
                "`fuzz` takes `--seconds N` and target names, got `{arg}`"
            ));
        } else {
            targets.push(arg);
        }
    }
    Ok(Task::Fuzz { seconds, targets })
}

/// `soak [--seconds N]`.
fn soak_args(rest: Vec<String>) -> Result<Task, String> {
    match rest.as_slice() {
        [] => Ok(Task::Soak { seconds: 300 }),
        [flag, value] if flag == "--seconds" => value
            .parse()
            .ok()
            .filter(|s| *s > 0)
            .map(|seconds| Task::Soak { seconds })
            .ok_or_else(|| format!("`--seconds` needs a positive number, got `{value}`")),
        [flag] if flag == "--seconds" => Err("`--seconds` needs a number".to_owned()),
        [arg, ..] => Err(format!("`soak` takes only `--seconds N`, got `{arg}`")),
    }
}

/// `chaos [--duration D] [--clients N] [--release] [--redis standalone|cluster]`.
fn chaos_args(rest: Vec<String>) -> Result<Task, String> {
    let (mut seconds, mut clients, mut release, mut cluster) = (60, 300, false, false);
    let mut args = rest.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("`{name}` needs a value"));
        match arg.as_str() {
            "--duration" => {
                let d = value("--duration")?;
                seconds = parse_seconds(&d).filter(|s| *s >= 20).ok_or_else(|| {
                    format!("`--duration` needs at least 20 s, like `90s` or `10m`, got `{d}`")
                })?;
            }
            "--clients" => {
                let n = value("--clients")?;
                clients = n
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("`--clients` needs a positive number, got `{n}`"))?;
            }
            "--release" => release = true,
            "--redis" => match value("--redis")?.as_str() {
                "standalone" => cluster = false,
                "cluster" => cluster = true,
                other => {
                    return Err(format!(
                        "`--redis` is `standalone` or `cluster`, got `{other}`"
                    ));
                }
            },
            other => {
                return Err(format!(
                    "`chaos` does not take `{other}` (see `cargo xtask help`)"
                ));
            }
        }
    }
    Ok(Task::Chaos {
        seconds,
        clients,
        release,
        cluster,
    })
}

/// `90`, `90s` or `10m` in seconds.
fn parse_seconds(text: &str) -> Option<u64> {
    if let Some(minutes) = text.strip_suffix('m') {
        return minutes.parse::<u64>().ok()?.checked_mul(60);
    }
    text.strip_suffix('s').unwrap_or(text).parse().ok()
}

/// The flags of `cargo xtask bench`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct BenchFlags {
    /// The smoke profile of `cargo xtask test`: small, wshub only, one run, no docs written.
    pub(crate) quick: bool,
    /// Run the ws-core micro-benchmarks instead of the load benchmark.
    pub(crate) micro: bool,
    /// Runs of each case (the median is reported); `None`: the profile's default.
    pub(crate) runs: Option<u32>,
    /// Only these cases; empty: all.
    pub(crate) cases: Vec<String>,
    /// Only these baseline servers; empty: all of them, unless `no_peers`.
    pub(crate) peers: Vec<String>,
    pub(crate) no_peers: bool,
    /// Arguments after `--`, for the micro-benchmark runner.
    pub(crate) runner_args: Vec<String>,
}

impl BenchFlags {
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut flags = Self::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("`{name}` needs a value"))
            };
            match arg.as_str() {
                "--quick" => flags.quick = true,
                "--micro" => flags.micro = true,
                "--no-peers" => flags.no_peers = true,
                "--runs" => {
                    let runs = value("--runs")?;
                    flags.runs = Some(runs.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("`--runs` needs a positive number, got `{runs}`")
                    })?);
                }
                "--case" => flags.cases.push(value("--case")?),
                "--peer" => flags.peers.push(value("--peer")?),
                "--" => flags.runner_args = args.by_ref().cloned().collect(),
                other => {
                    return Err(format!(
                        "`bench` does not take `{other}` (see `cargo xtask help`)"
                    ));
                }
            }
        }
        if !flags.runner_args.is_empty() && !flags.micro {
            return Err(
                "arguments after `--` go to the micro-benchmarks: add `--micro`".to_owned(),
            );
        }
        Ok(flags)
    }
}

fn no_args(task: &str, rest: &[String]) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => Err(format!("`{task}` takes no arguments, got `{arg}`")),
    }
}

/// Arguments for a test or bench runner: everything after the task, with one leading `--` dropped.
fn runner_args(mut rest: Vec<String>) -> Vec<String> {
    if rest.first().is_some_and(|arg| arg == "--") {
        rest.remove(0);
    }
    rest
}

#[cfg(test)]
mod tests {
    use super::Task;

    fn check(args: &[&str], expect: Result<Task, &str>) {
        let got = Task::parse(args.iter().map(|&arg| arg.to_owned()));
        assert_eq!(got, expect.map_err(str::to_owned), "args: {args:?}");
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|&arg| arg.to_owned()).collect()
    }

    #[test]
    fn parses_tasks() {
        check(&["lint"], Ok(Task::Lint));
        check(&["release"], Ok(Task::Release { quick: false }));
        check(&["release", "--quick"], Ok(Task::Release { quick: true }));
        check(&["--help"], Ok(Task::Help));
        check(
            &["fuzz"],
            Ok(Task::Fuzz {
                seconds: 60,
                targets: vec![],
            }),
        );
        check(
            &["fuzz", "--seconds", "5", "token"],
            Ok(Task::Fuzz {
                seconds: 5,
                targets: strings(&["token"]),
            }),
        );
        check(
            &["test"],
            Ok(Task::Test {
                runner_args: vec![],
            }),
        );
        check(
            &["test", "--", "hub::", "--exact"],
            Ok(Task::Test {
                runner_args: strings(&["hub::", "--exact"]),
            }),
        );
        check(
            &["bench", "--case", "fanout-1k"],
            Ok(Task::Bench {
                runner_args: strings(&["--case", "fanout-1k"]),
            }),
        );
    }

    #[test]
    fn parses_bench_flags() {
        use super::BenchFlags;
        let parse = |args: &[&str]| BenchFlags::parse(&strings(args));
        assert_eq!(parse(&[]), Ok(BenchFlags::default()));
        assert_eq!(
            parse(&[
                "--quick",
                "--runs",
                "5",
                "--case",
                "idle-10k",
                "--case",
                "handshake",
                "--peer",
                "node-ws"
            ]),
            Ok(BenchFlags {
                quick: true,
                runs: Some(5),
                cases: strings(&["idle-10k", "handshake"]),
                peers: strings(&["node-ws"]),
                ..BenchFlags::default()
            })
        );
        assert_eq!(
            parse(&["--micro", "--", "hub", "--sample-count", "10"]),
            Ok(BenchFlags {
                micro: true,
                runner_args: strings(&["hub", "--sample-count", "10"]),
                ..BenchFlags::default()
            })
        );
        assert_eq!(parse(&["--no-peers"]).map(|f| f.no_peers), Ok(true));
        assert_eq!(
            parse(&["--runs", "0"]),
            Err("`--runs` needs a positive number, got `0`".to_owned())
        );
        assert_eq!(parse(&["--case"]), Err("`--case` needs a value".to_owned()));
        assert!(parse(&["--", "hub"]).is_err());
        check(
            &["bench", "--fast"],
            Err("`bench` does not take `--fast` (see `cargo xtask help`)"),
        );
    }

    #[test]
    fn parses_soak() {
        check(&["soak"], Ok(Task::Soak { seconds: 300 }));
        check(&["soak", "--seconds", "60"], Ok(Task::Soak { seconds: 60 }));
        check(&["soak", "--seconds"], Err("`--seconds` needs a number"));
        check(
            &["soak", "--seconds", "0"],
            Err("`--seconds` needs a positive number, got `0`"),
        );
        check(
            &["soak", "--clients", "10"],
            Err("`soak` takes only `--seconds N`, got `--clients`"),
        );
    }

    #[test]
    fn parses_chaos() {
        let chaos = |seconds, clients, release, cluster| {
            Ok(Task::Chaos {
                seconds,
                clients,
                release,
                cluster,
            })
        };
        check(&["chaos"], chaos(60, 300, false, false));
        check(
            &[
                "chaos",
                "--duration",
                "10m",
                "--clients",
                "1000",
                "--release",
            ],
            chaos(600, 1000, true, false),
        );
        check(
            &["chaos", "--duration", "90s", "--redis", "cluster"],
            chaos(90, 300, false, true),
        );
        check(&["chaos", "--duration", "45"], chaos(45, 300, false, false));
        check(
            &["chaos", "--duration", "5s"],
            Err("`--duration` needs at least 20 s, like `90s` or `10m`, got `5s`"),
        );
        check(
            &["chaos", "--clients", "0"],
            Err("`--clients` needs a positive number, got `0`"),
        );
        check(
            &["chaos", "--redis", "sentinel"],
            Err("`--redis` is `standalone` or `cluster`, got `sentinel`"),
        );
        check(&["chaos", "--clients"], Err("`--clients` needs a value"));
        check(
            &["chaos", "--kill"],
            Err("`chaos` does not take `--kill` (see `cargo xtask help`)"),
        );
    }

    #[test]
    fn parses_conformance() {
        check(&["conformance"], Ok(Task::Conformance { full: false }));
        check(
            &["conformance", "--full"],
            Ok(Task::Conformance { full: true }),
        );
        check(
            &["conformance", "--quick"],
            Err("`conformance` takes only `--full`, got `--quick`"),
        );
    }

    #[test]
    fn rejects_bad_input() {
        check(&[], Err("no task given"));
        check(&["deploy"], Err("unknown task `deploy`"));
        check(&["fuzz", "--seconds"], Err("`--seconds` needs a number"));
        check(
            &["fuzz", "--seconds", "0"],
            Err("`--seconds` needs a positive number, got `0`"),
        );
        check(
            &["fuzz", "--jobs"],
            Err("`fuzz` takes `--seconds N` and target names, got `--jobs`"),
        );
        check(
            &["lint", "--fix"],
            Err("`lint` takes no arguments, got `--fix`"),
        );
        check(
            &["release", "--fast"],
            Err("`release` takes only `--quick`, got `--fast`"),
        );
    }
}
