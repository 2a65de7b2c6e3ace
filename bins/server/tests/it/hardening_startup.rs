//! Start-up hardening: secrets stay out of the logs, and development mode (invented secrets,
//! demo on) starts only when nothing at all is configured, or with `--dev`.
//!
//! Every run here gets a clean environment (PATH only, plus what the test sets), so that a
//! developer's `WSHUB_*` or `RUST_LOG` cannot change the outcome.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use crate::harness::{API_KEY, SECRET, STEP, Server, TempDir};

/// `wshub` with nothing inherited but PATH.
fn clean_wshub() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wshub"));
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

/// Runs `command` to its exit, failing the test if that takes longer than [`STEP`] (a
/// server that started instead of refusing to): the process is killed then.
fn run_to_exit(mut command: Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting wshub");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(STEP) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // Only the process this test started, by its id.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let output = rx.recv().unwrap().unwrap();
            panic!(
                "wshub did not exit within {STEP:?}: it served instead of refusing to start\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// A running `wshub` whose stdout is read line by line; killed when dropped.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting wshub");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`; fails the test if the process exits first or
    /// [`STEP`] passes.
    fn wait_for(&mut self, needle: &str) {
        let deadline = std::time::Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no line containing {needle:?} (status {:?}): {:#?}",
                    self.child.try_wait(),
                    self.seen
                ),
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const DEV_BANNER: &str = "wshub development mode";

/// (a) A deployment configured through the environment that forgot its key must not get
/// invented secrets: exit 64, naming the keys to set.
#[test]
fn environment_without_a_key_is_a_config_error() {
    let mut command = clean_wshub();
    command.env("WSHUB__SERVER__LISTEN", "127.0.0.1:0");
    let output = run_to_exit(command);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stdout}\n{stderr}");
    for key in [
        "auth.hs256_secrets",
        "auth.public_key_files",
        "auth.jwks_file",
    ] {
        assert!(
            stderr.contains(key),
            "the error does not name {key}: {stderr}"
        );
    }
    assert!(!stdout.contains(DEV_BANNER), "{stdout}");
}

/// Any `WSHUB__` variable counts as configuration, whatever its case (the configuration
/// reads names case-insensitively).
#[test]
fn any_configuration_variable_rules_out_development_mode() {
    for (name, value) in [
        ("WSHUB__LOG__FORMAT", "json"),
        ("wshub__log__level", "info"),
    ] {
        let mut command = clean_wshub();
        command.env(name, value);
        let output = run_to_exit(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{name}: {stderr}");
        assert!(stderr.contains("auth.hs256_secrets"), "{name}: {stderr}");
    }
    // An empty WSHUB_CONFIG is a usage error of its own (clap: `--config` needs a value):
    // refused, not development mode.
    let mut command = clean_wshub();
    command.env("WSHUB_CONFIG", "");
    let output = run_to_exit(command);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(!stdout.contains(DEV_BANNER), "{stdout}");
}

/// A configuration file without a key is refused too (it was before; it stays so).
#[test]
fn config_file_without_a_key_is_a_config_error() {
    let dir = TempDir::new();
    let file = dir.0.join("wshub.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let mut command = clean_wshub();
    command.arg("--config").arg(&file);
    let output = run_to_exit(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("auth.jwks_file"), "{stderr}");
}

/// (b) `--dev` asks for development mode explicitly, whatever else is configured (here the
/// listen address, on loopback).
#[test]
fn dev_flag_starts_development_mode_with_variables() {
    let mut command = clean_wshub();
    command
        .arg("--dev")
        .env("WSHUB__SERVER__LISTEN", "127.0.0.1:0")
        .env("WSHUB__LOG__FORMAT", "json");
    let mut server = Running::spawn(command);
    server.wait_for(DEV_BANNER);
    server.wait_for("\"listening\"");
    let listening = server.seen.last().unwrap();
    assert!(listening.contains("127.0.0.1:"), "{listening}");
}

/// `--dev` invents its own secret: combined with configured keys it would silently replace
/// them, so it is refused.
#[test]
fn dev_flag_with_a_key_is_a_config_error() {
    let mut command = clean_wshub();
    command
        .arg("--dev")
        .env("WSHUB__SERVER__LISTEN", "127.0.0.1:0")
        .env("WSHUB__AUTH__HS256_SECRETS", SECRET);
    let output = run_to_exit(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("--dev"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
}

/// (c) No configuration at all: development mode, as the README promises for
/// `cargo run --release -p server`. Nothing can move the listen address without configuring
/// something, so this run uses the default 127.0.0.1:8080 (loopback): the banner is printed
/// before the port is bound, and the process is killed as soon as it appears, so a busy 8080
/// on this machine does not matter.
#[test]
fn no_configuration_at_all_starts_development_mode() {
    let mut server = Running::spawn(clean_wshub());
    server.wait_for(DEV_BANNER);
    server.wait_for("ws://127.0.0.1:8080/ws/projects/demo");
}

/// Password-bearing URLs of every form redis reads, each with its own password, and the
/// redacted form the start-up log must show instead.
const REDIS_URLS: [(&str, &str, &str); 6] = [
    (
        "redis://app:pw-userinfo-7Q2x@127.0.0.1:1/0",
        "pw-userinfo-7Q2x",
        "redis://app:<redacted>@127.0.0.1:1/0",
    ),
    (
        "redis://:pw-nouser-8R3y@127.0.0.1:1",
        "pw-nouser-8R3y",
        "redis://:<redacted>@127.0.0.1:1",
    ),
    (
        "rediss://app:pw-tls-9S4z@127.0.0.1:1/2",
        "pw-tls-9S4z",
        "rediss://app:<redacted>@127.0.0.1:1/2",
    ),
    (
        "redis+unix:///nonexistent/wshub-it.sock?pass=pw-unixq-1T5a",
        "pw-unixq-1T5a",
        "redis+unix:///nonexistent/wshub-it.sock?pass=<redacted>",
    ),
    (
        "redis+unix:///nonexistent/wshub-it.sock?db=1&pass=pw-unixamp-2U6b",
        "pw-unixamp-2U6b",
        "redis+unix:///nonexistent/wshub-it.sock?db=1&pass=<redacted>",
    ),
    (
        "unix:///nonexistent/wshub-it.sock?user=app&pass=pw-plainunix-3V7c",
        "pw-plainunix-3V7c",
        "unix:///nonexistent/wshub-it.sock?user=app&pass=<redacted>",
    ),
];

/// Item 1: at `log.level = "debug"` with the Redis broker on an unreachable Redis, the
/// server still starts, logs the redacted URL, and no line (stdout or stderr, its own or the
/// redis client's) carries the password, also once the broker's connection attempts failed.
#[tokio::test]
async fn redis_passwords_never_reach_the_startup_log() {
    for (url, password, redacted) in REDIS_URLS {
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n\
             [auth]\nhs256_secrets = [\"{SECRET}\"]\napi_keys = [\"{API_KEY}\"]\n\n\
             [broker]\nkind = \"redis\"\nredis_url = \"{url}\"\nconnect_timeout = \"200ms\"\n"
        );
        let server = Server::start_in(TempDir::new(), &toml);
        server
            .wait_for_log("the broker's start-up line", |l| {
                l.contains("redis broker starting")
            })
            .await;
        // The broker's failure to reach Redis is logged too, with its error: wait for it.
        server
            .wait_for_log("a failed connection to redis", |l| {
                l.contains("cannot connect to redis") || l.contains("timed out")
            })
            .await;
        // Still serving: liveness answers while the broker retries.
        let (status, _, body) =
            crate::harness::http("GET", &server.http("/healthz"), &[], "").await;
        assert_eq!(status, 200, "{url}: {body}");
        let logs = server.logs();
        let leaks: Vec<_> = logs.iter().filter(|l| l.contains(password)).collect();
        assert!(
            leaks.is_empty(),
            "{url}: the password is logged: {leaks:#?}"
        );
        assert!(
            logs.iter()
                .any(|l| l.contains("redis broker starting") && l.contains(redacted)),
            "{url}: no start-up line with {redacted}: {logs:#?}"
        );
    }
}

/// Item 1: a Redis URL that fails validation is a configuration error (exit 64) that names
/// `broker.redis_url` without echoing the password, from `check-config` and from a start.
#[test]
fn bad_redis_url_error_does_not_echo_the_password() {
    let bad = [
        // A wildcard address, refused by redis.
        ("redis://:pw-wild-4W8d@0.0.0.0:6379", "pw-wild-4W8d"),
        // Not a database number.
        ("redis://app:pw-db-5X9e@127.0.0.1:6379/zero", "pw-db-5X9e"),
        (
            "unix:///nonexistent/r.sock?pass=pw-unixdb-6Y0f&db=zero",
            "pw-unixdb-6Y0f",
        ),
        // Not a Redis scheme at all.
        ("http://:pw-scheme-7Z1g@127.0.0.1:6379", "pw-scheme-7Z1g"),
        // A fragment other than #insecure.
        (
            "rediss://:pw-frag-8A2h@127.0.0.1:6379/#bogus",
            "pw-frag-8A2h",
        ),
    ];
    for (url, password) in bad {
        let dir = TempDir::new();
        let file = dir.0.join("wshub.toml");
        std::fs::write(
            &file,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n\n[auth]\nhs256_secrets = [\"{SECRET}\"]\n\n\
                 [broker]\nkind = \"redis\"\nredis_url = \"{url}\"\n"
            ),
        )
        .unwrap();
        let mut check = clean_wshub();
        check.arg("check-config").arg(&file);
        let mut serve = clean_wshub();
        serve.arg("--config").arg(&file);
        // The same URL from the environment: the error names the variables then.
        let mut from_env = clean_wshub();
        from_env
            .env("WSHUB__SERVER__LISTEN", "127.0.0.1:0")
            .env("WSHUB__AUTH__HS256_SECRETS", SECRET)
            .env("WSHUB__BROKER__KIND", "redis")
            .env("WSHUB__BROKER__REDIS_URL", url);
        for (how, command) in [("check-config", check), ("serve", serve), ("env", from_env)] {
            let output = run_to_exit(command);
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(64), "{how} {url}: {stderr}");
            assert!(
                stderr.contains("broker.redis_url"),
                "{how} {url}: the error does not name the key: {stderr}"
            );
            assert!(
                !stderr.contains(password) && !stdout.contains(password),
                "{how} {url}: the password is echoed: {stdout}\n{stderr}"
            );
        }
    }
}

/// Item 1: configuration errors name the key and the place, never the value: a TOML syntax
/// error does not quote the broken line (a password in an unterminated URL), and a value of
/// the wrong type (one secret instead of a list) is not echoed.
#[test]
fn config_errors_do_not_echo_secrets() {
    let cases = [
        (
            "[auth]\nhs256_secrets = [\"integration-test-secret-0123456789\"]\n\n[broker]\nkind = \"redis\"\nredis_url = \"redis://:pw-unterminated-K3@127.0.0.1:1\n",
            "pw-unterminated-K3",
            "line 6",
        ),
        (
            "[auth]\nhs256_secrets = \"secret-not-a-list-L4abcdef\"\n",
            "secret-not-a-list-L4",
            "auth.hs256_secrets",
        ),
        (
            "[auth]\nhs256_secrets = [\"integration-test-secret-0123456789\"]\napi_keys = \"api-key-not-a-list-M5\"\n",
            "api-key-not-a-list-M5",
            "auth.api_keys",
        ),
    ];
    for (toml, secret, named) in cases {
        let dir = TempDir::new();
        let file = dir.0.join("wshub.toml");
        std::fs::write(&file, toml).unwrap();
        let mut command = clean_wshub();
        command.arg("check-config").arg(&file);
        let output = run_to_exit(command);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert!(
            stderr.contains(named),
            "{secret}: does not name {named}: {stderr}"
        );
        assert!(!stderr.contains(secret), "{secret} is echoed: {stderr}");
    }
}
