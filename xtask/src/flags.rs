//! Command-line flags of `cargo xtask`, parsed by hand to keep xtask dependency-free.

pub(crate) const USAGE: &str = "\
Usage: cargo xtask <TASK> [ARGS]

Tasks:
  test [-- ARGS]       install the tools tests need, then run doctests and the whole
                       test suite (nextest if installed, else cargo test); ARGS go to the runner
  lint                 rustfmt --check, clippy -D warnings, rustdoc -D warnings,
                       tidy checks, cargo deny check bans licenses sources
  bench [-- ARGS]      cargo bench -p ws-core (when ws-core has benchmarks)
  fuzz [--seconds N] [TARGET...]
                       run each cargo-fuzz target of fuzz/ (default: all) for N seconds
                       (default 60); installs cargo-fuzz when missing
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
            "bench" => Ok(Self::Bench {
                runner_args: runner_args(rest),
            }),
            "fuzz" => fuzz_args(rest),
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
            &["bench", "fanout"],
            Ok(Task::Bench {
                runner_args: strings(&["fanout"]),
            }),
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
