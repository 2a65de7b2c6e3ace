//! One run of a case: a fresh server, the generator pinned beside it, the generator's JSON
//! result, and what that result says went missing.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::bail;
use serde_json::{Value, json};

use super::cases::Case;
use crate::servers::{Pinning, SECRET, Server, generator_result, run_generator, start_server_with};

/// How long one generator run may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// One run of `case` against a fresh `server`: the generator's JSON result.
pub(super) fn run_once(
    server: &Server,
    case: &Case,
    run: u32,
    generator: &Path,
    work: &Path,
    pinning: Pinning,
) -> anyhow::Result<Value> {
    run_configured(
        server,
        server.name(),
        "",
        case,
        run,
        generator,
        work,
        pinning,
    )
}

/// [`run_once`] with `extra` in wshub's configuration (a `[broker]` section, say); `label`
/// names the server in the log file's name.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_configured(
    server: &Server,
    label: &str,
    extra: &str,
    case: &Case,
    run: u32,
    generator: &Path,
    work: &Path,
    pinning: Pinning,
) -> anyhow::Result<Value> {
    let log = work.join(format!("logs/{}-{label}-{run}.log", case.name));
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir)?;
    }
    let running = start_server_with(server, work, &log, pinning, extra)?;
    let pid = running.child.id();
    let mut cmd = pinning.command(1, generator);
    cmd.args(["--addr", &running.addr.to_string()])
        .args(["--target", server.target()])
        .args(["--server-pid", &pid.to_string()])
        .args(&case.args)
        .env("WSHUB_BENCH_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    println!(
        "$ WSHUB_BENCH_SECRET=… {}{} {}",
        if pinning.pinned() {
            "taskset -c 1 "
        } else {
            ""
        },
        generator.display(),
        cmd.get_args()
            .skip(3)
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (status, out) = run_generator(&mut cmd, RUN_LIMIT)?;
    let server_alive = running.stop()?;
    if !status.success() {
        bail!(
            "the generator failed ({status}); server {}; server log: {}",
            if server_alive {
                "still running"
            } else {
                "had exited"
            },
            log.display()
        );
    }
    let mut value = generator_result(&out)?;
    if let Value::Object(map) = &mut value {
        map.insert("server_survived".to_owned(), json!(server_alive));
    }
    if !server_alive {
        bail!(
            "{} exited during the run; its log: {}",
            server.name(),
            log.display()
        );
    }
    Ok(value)
}

/// What a run's result says went missing: failed connections, lost, duplicated or reordered
/// messages, failed handshakes, refused or unanswered requests. Never a speed.
pub(super) fn losses(result: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for key in [
        "connect_failed",
        "lost",
        "duplicates",
        "reordered",
        "failed",
        "subscribers_ended",
        "errors",
        "unanswered",
        "connections_ended",
    ] {
        if let Some(n) = result.get(key).and_then(Value::as_u64).filter(|n| *n > 0) {
            problems.push(format!("{key} = {n}"));
        }
    }
    if result.get("stalled").and_then(Value::as_bool) == Some(true) {
        problems.push("the publisher stalled".to_owned());
    }
    problems
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::losses;

    #[test]
    fn losses_are_named() {
        assert!(losses(&json!({"lost": 0, "duplicates": 0, "connect_failed": 0})).is_empty());
        assert_eq!(
            losses(&json!({"lost": 3, "stalled": true})),
            ["lost = 3", "the publisher stalled"]
        );
    }
}
