//! `wshub check-config`: the shipped example passes, and each kind of mistake exits with 64
//! and names the key to fix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::TempDir;

/// `wshub.example.toml` at the repository root: documented, shipped in the release tarball.
fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wshub.example.toml")
}

/// Runs `wshub check-config file` with no `WSHUB__*` variable that could mask the file.
fn check_config(file: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wshub"));
    cmd.arg("check-config").arg(file);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WSHUB") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("running wshub check-config")
}

#[test]
fn example_config_is_valid() {
    let output = check_config(&example());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.trim_end().ends_with(": ok"), "{stdout}");
}

/// The example with `line` replaced by `broken` must fail with 64, naming `key` on stderr.
fn check_broken(line: &str, broken: &str, key: &str) {
    let example = std::fs::read_to_string(example()).unwrap();
    assert_eq!(
        example.lines().filter(|l| l.starts_with(line)).count(),
        1,
        "the example has no line starting with {line:?} (or several)"
    );
    let text: String = example
        .lines()
        .map(|l| if l.starts_with(line) { broken } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = TempDir::new();
    let file = dir.0.join("wshub.toml");
    std::fs::write(&file, text).unwrap();

    let output = check_config(&file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{broken:?}: {stderr}");
    assert!(
        stderr.contains(key),
        "{broken:?}: the error does not name {key:?}: {stderr}"
    );
    assert!(output.stdout.is_empty(), "{broken:?}: printed on stdout");
}

#[test]
fn unknown_key_is_named() {
    check_broken(
        "max_connections =",
        "max_conections = 100000",
        "max_conections",
    );
    check_broken("[log]", "[logging]", "logging");
}

#[test]
fn wrong_type_is_named() {
    check_broken(
        "max_connections =",
        "max_connections = \"many\"",
        "limits.max_connections",
    );
    check_broken("shards =", "shards = \"four\"", "server.shards");
    check_broken(
        "allowed_origins =",
        "allowed_origins = 5",
        "auth.allowed_origins",
    );
    check_broken("format =", "format = \"xml\"", "log.format");
    check_broken("listen =", "listen = \"localhost\"", "server.listen");
}

#[test]
fn bad_duration_is_named() {
    check_broken(
        "ping_interval =",
        "ping_interval = \"soon\"",
        "timeouts.ping_interval",
    );
    // A bare number has no unit.
    check_broken("drain =", "drain = \"10\"", "shutdown.drain");
}

#[test]
fn zero_limit_is_named() {
    check_broken(
        "send_queue_frames =",
        "send_queue_frames = 0",
        "limits.send_queue_frames",
    );
    check_broken(
        "pong_timeout =",
        "pong_timeout = \"0s\"",
        "timeouts.pong_timeout",
    );
}

#[test]
fn short_secret_is_named() {
    check_broken(
        "hs256_secrets =",
        "hs256_secrets = [\"fifteen-bytes!!\"]",
        "auth.hs256_secrets",
    );
}

#[test]
fn missing_file_is_a_config_error() {
    let dir = TempDir::new();
    let output = check_config(&dir.0.join("nope.toml"));
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
}

#[test]
fn namespace_tables_are_checked_like_the_rest() {
    check_broken("history_size =", "history_sise = 50", "history_sise");
    check_broken(
        "history_size =",
        "history_size = 0",
        "namespaces.notify.history_size",
    );
    check_broken(
        "[namespaces.notify]",
        "[namespaces.\"no tify\"]",
        "namespaces.no tify",
    );
}
