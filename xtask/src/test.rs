//! `cargo xtask test`: install what the tests need, then run every test of the workspace.

use std::process::Command;

use anyhow::bail;

use crate::tools::{apt_install, find_on_path, has_cargo_subcommand, target_dir};
use crate::{Steps, cargo, exec};

/// Programs the tests need, as (command looked up on `PATH`, Debian package that provides it).
/// Anything missing is installed with `apt-get`: CI runs on a fresh machine as root.
/// Add an entry here, with a comment naming the tests that use it, when tests start needing a program
/// (e.g. `("chromium", "chromium")`, `("redis-server", "redis-server")`); npm packages get a step of their own.
const TOOLS: &[(&str, &str)] = &[
    // The JS client's unit tests (`clients/js/test`, node's built-in runner; no npm packages).
    ("node", "nodejs"),
    // The Redis broker's integration tests (`bins/server/tests/it/redis.rs`) start their own
    // `redis-server` on a free loopback port and use `redis-cli`; both come with this package.
    ("redis-server", "redis-server"),
    // The TLS case of the Redis tests makes a private CA and a certificate with the CLI.
    ("openssl", "openssl"),
    // The JS end-to-end tests (`clients/js/e2e`): the demo page in Debian's Chromium, driven by
    // `playwright-core` (never a downloaded browser), installed with npm from the committed lock.
    ("chromium", "chromium"),
    ("npm", "npm"),
    // `cargo xtask chaos --redis cluster` finds a node's connections to Redis with `ss` to
    // cut them (CLIENT KILL ADDR).
    ("ss", "iproute2"),
];

pub(crate) fn run(runner_args: &[String]) -> anyhow::Result<()> {
    let mut steps = Steps::default();
    steps.step(
        "tools the tests need (apt-get install when missing)",
        ensure_tools,
    );

    // RFC 6455 conformance of the pumps: the Autobahn TestSuite's default cases against
    // ws-transport's echo example (a debug build, shared with the suite's). It installs its
    // own CPython 2.7 environment under target/autobahn the first time (about a minute),
    // then runs in about 15 s. docs/conformance.md is left alone here;
    // `cargo xtask conformance` rewrites its summary.
    // A machine without any CPython 2.7 (none in pyenv, none installable) skips it loudly
    // rather than failing everything else: the suite cannot run there, whatever the code.
    steps.step("Autobahn conformance: cargo xtask conformance", || {
        if !crate::conformance::python2_available() {
            eprintln!(
                "warning: SKIPPED the Autobahn TestSuite: no CPython 2.7 on this machine \
                 (pyenv versions 2.7.*, python2.7, or `pyenv install 2.7.18`); \
                 `cargo xtask conformance` fails here for the same reason"
            );
            return Ok(());
        }
        crate::conformance::run(crate::conformance::Options {
            full: false,
            write_doc: false,
            release: false,
        })
    });

    // Doctests first: nextest does not run them, and ending on the full suite's summary keeps
    // the last line of the log the one that counts the tests.
    steps.command(
        "doctests: cargo test --doc",
        cargo()
            .env("RUST_BACKTRACE", "1")
            .args(["test", "--workspace", "--doc"])
            .args(with_separator(runner_args)),
    );

    // The JS client (`clients/js`): node's built-in test runner, a fake clock and a fake WebSocket;
    // its devDependencies (typescript for the declarations fixture, esbuild for the builds, react
    // and ws) come from the committed lockfile when `node_modules` is missing.
    steps.step("JS client unit tests: node --test (clients/js)", || {
        for tool in ["node", "npm"] {
            if find_on_path(tool).is_none() {
                bail!(
                    "`{tool}` is not on PATH (the tools step installs Debian's `nodejs` and `npm`)"
                );
            }
        }
        let dir = crate::project_root().join("clients/js");
        if !dir.join("node_modules/typescript").is_dir() {
            exec(
                Command::new("npm")
                    .current_dir(&dir)
                    .args(["ci", "--no-audit", "--no-fund"]),
            )?;
        }
        exec(Command::new("node").current_dir(&dir).arg("build.mjs"))?;
        exec(Command::new("node").current_dir(&dir).arg("--test"))
    });

    // The demo page and the JS client in Chromium against the real `wshub` (debug build).
    steps.step(
        "JS end-to-end tests: Chromium against wshub (clients/js/e2e)",
        js_e2e,
    );

    // The load benchmark's smoke profile: it ran and lost nothing (never a speed), so
    // `cargo xtask bench` cannot rot. Small, wshub only, under half a minute.
    steps.step("load benchmark smoke: cargo xtask bench --quick", || {
        crate::bench::quick(1)
    });

    // Fault injection: 3 nodes on one redis-server under node kills, Redis restarts, pauses
    // and link cuts, judged by the chaos checker (about 70 s of run on a debug build); the
    // counts go to target/chaos/result.json, docs/reliability.md is left alone here.
    steps.step("fault injection: cargo xtask chaos (short profile)", || {
        crate::chaos::run(&crate::chaos::Options {
            write_doc: false,
            ..crate::chaos::Options::short()
        })
    });
    // The same checker on a Redis Cluster (3 primaries, 3 replicas): node kills, a node's
    // connections killed, a primary paused briefly, killed, and paused into a failover
    // (45 s of publishing, under 2 minutes in all). The longer run is
    // `cargo xtask chaos --redis cluster --duration 5m`.
    steps.step(
        "fault injection on a Redis Cluster: cargo xtask chaos --redis cluster (short profile)",
        || {
            crate::chaos::run(&crate::chaos::Options {
                write_doc: false,
                ..crate::chaos::Options::short_cluster()
            })
        },
    );

    if has_cargo_subcommand("nextest") {
        steps.command(
            "unit and integration tests: cargo nextest",
            cargo()
                .env("RUST_BACKTRACE", "1")
                .args(["nextest", "run", "--workspace", "--no-fail-fast"])
                .args(with_separator(runner_args)),
        );
    } else {
        println!("\nnote: cargo-nextest is not installed, falling back to cargo test");
        steps.command(
            "unit and integration tests: cargo test",
            cargo()
                .env("RUST_BACKTRACE", "1")
                .args(["test", "--workspace", "--no-fail-fast"])
                .args(with_separator(runner_args)),
        );
    }
    steps.finish("test")
}

/// `clients/js/e2e`: `npm ci` (there and in `clients/js`) when `node_modules` is missing, a debug build of `wshub`, then
/// node's test runner on every `*.e2e.js` file (named so that the unit-test run in `clients/js`,
/// which finds `*.test.js` files, does not pick them up).
fn js_e2e() -> anyhow::Result<()> {
    for tool in ["node", "npm", "chromium"] {
        if find_on_path(tool).is_none() {
            bail!("`{tool}` is not on PATH (the tools step installs it)");
        }
    }
    // react.e2e.js bundles its page with the client's own devDependencies (esbuild, react).
    let client = crate::project_root().join("clients/js");
    if !client.join("node_modules/esbuild").is_dir() || !client.join("node_modules/react").is_dir()
    {
        exec(
            Command::new("npm")
                .current_dir(&client)
                .args(["ci", "--no-audit", "--no-fund"]),
        )?;
    }
    let dir = crate::project_root().join("clients/js/e2e");
    if !dir.join("node_modules/playwright-core").is_dir() {
        exec(
            Command::new("npm")
                .current_dir(&dir)
                .args(["ci", "--no-audit", "--no-fund"]),
        )?;
    }
    exec(cargo().args(["build", "-p", "server", "--bin", "wshub"]))?;
    let mut files: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.ends_with(".e2e.js"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.e2e.js file in {}", dir.display());
    }
    exec(
        Command::new("node")
            .current_dir(&dir)
            .env("WSHUB_BIN", target_dir().join("debug/wshub"))
            .arg("--test")
            .args(&files),
    )
}

/// `-- ARGS` for a runner, or nothing when there are no arguments.
fn with_separator(runner_args: &[String]) -> Vec<String> {
    if runner_args.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["--".to_owned()];
    args.extend_from_slice(runner_args);
    args
}

/// Installs the Debian package of every program in [`TOOLS`] that is not on `PATH`.
fn ensure_tools() -> anyhow::Result<()> {
    let missing: Vec<(&str, &str)> = TOOLS
        .iter()
        .copied()
        .filter(|(command, _)| find_on_path(command).is_none())
        .collect();
    if missing.is_empty() {
        println!("all {} listed tool(s) are on PATH", TOOLS.len());
        return Ok(());
    }
    let commands: Vec<&str> = missing.iter().map(|(command, _)| *command).collect();
    let mut packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    packages.dedup();
    println!(
        "missing: {}; installing Debian package(s): {}",
        commands.join(", "),
        packages.join(", ")
    );

    apt_install(&packages)?;

    let still_missing: Vec<&str> = commands
        .into_iter()
        .filter(|command| find_on_path(command).is_none())
        .collect();
    if !still_missing.is_empty() {
        bail!(
            "still not on PATH after apt-get install: {}",
            still_missing.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{TOOLS, with_separator};

    #[test]
    fn tools_name_command_and_package() {
        for (command, package) in TOOLS {
            assert!(
                !command.is_empty() && !package.is_empty(),
                "{command:?} -> {package:?}"
            );
        }
    }

    #[test]
    fn runner_args_follow_separator() {
        assert!(with_separator(&[]).is_empty());
        assert_eq!(with_separator(&["hub".to_owned()]), ["--", "hub"]);
    }
}
