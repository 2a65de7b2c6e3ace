//! `cargo xtask`: wshub's project automation, written as ordinary Rust (matklad's xtask convention).
//!
//! `cargo xtask` is an alias (in `.cargo/config.toml`) for `cargo run --package xtask --`.
//! `flags` parses the command line, and each task lives in a module of its own.
//! Tasks run cargo through the `CARGO` variable that cargo sets, from the workspace root.
//!
//! What several tasks share sits below the tasks: `servers` (the processes of a load run, for
//! `bench` and `soak`), `tools` (the programs on the machine, for `test`, `conformance`,
//! `lint`, ...) and the helpers of this file (`project_root`, `cargo`, `exec`, ...), which use
//! no module of the crate, so the imports between modules form no circle.

mod bench;
mod chaos;
mod conformance;
mod flags;
mod fuzz;
mod lint;
mod release;
mod servers;
mod soak;
mod test;
mod tidy;
mod tools;

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

fn main() -> ExitCode {
    let task = match flags::Task::parse(env::args().skip(1)) {
        Ok(task) => task,
        Err(err) => {
            eprintln!("error: {err}\n\n{}", flags::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match task {
        flags::Task::Help => {
            print!("{}", flags::USAGE);
            Ok(())
        }
        flags::Task::Test { runner_args } => test::run(&runner_args),
        flags::Task::Lint => lint::run(),
        flags::Task::Bench { runner_args } => bench::run(&runner_args),
        flags::Task::Fuzz { seconds, targets } => fuzz::run(seconds, &targets),
        flags::Task::Soak { seconds } => soak::run(seconds),
        flags::Task::Chaos {
            seconds,
            clients,
            release,
            cluster,
        } => chaos::run(&chaos::Options {
            duration: Duration::from_secs(seconds),
            clients,
            release,
            redis: if cluster {
                chaos::Topology::Cluster
            } else {
                chaos::Topology::Standalone
            },
            write_doc: true,
        }),
        flags::Task::Conformance { full } => conformance::run(conformance::Options {
            full,
            write_doc: true,
            release: true,
        }),
        flags::Task::Release { quick } => release::run(quick),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's directory.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A `cargo` command run from the workspace root, with the cargo that started xtask when known.
fn cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root());
    cmd
}

/// The command line of `cmd`, for logs: program, then arguments, with the environment it sets.
fn show(cmd: &Command) -> String {
    let mut words: Vec<String> = cmd
        .get_envs()
        .filter_map(|(key, value)| {
            Some(format!(
                "{}={}",
                key.to_string_lossy(),
                value?.to_string_lossy()
            ))
        })
        .collect();
    let program = Path::new(cmd.get_program());
    // `CARGO` is an absolute path into the toolchain; `cargo` reads better and means the same.
    let program = match program.file_name() {
        Some(name) if name == "cargo" => "cargo".to_owned(),
        _ => program.display().to_string(),
    };
    words.push(program);
    words.extend(cmd.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Runs `cmd` to completion, failing when it cannot start or exits unsuccessfully.
fn exec(cmd: &mut Command) -> anyhow::Result<()> {
    println!("$ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// Runs `cmd` to completion and returns its stdout; fails with its stderr when it exits
/// unsuccessfully. `what` names it in the errors.
fn stdout_of(cmd: &mut Command, what: &str) -> anyhow::Result<Vec<u8>> {
    println!("$ {}", show(cmd));
    let output = cmd
        .output()
        .with_context(|| format!("could not start {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output.stdout)
}

/// Waits for `child` at most `limit`; past it, kills it (by its PID, through `Child`) and
/// returns `None`.
fn wait_or_kill(child: &mut Child, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `text` with what lies between the markers `begin` and `end` replaced by `section` (which
/// ends with a newline); `None` unless both markers are there, in that order. The generated
/// sections of `docs/` (bench, soak, conformance) are rewritten through it.
fn replace_between(text: &str, begin: &str, end: &str, section: &str) -> Option<String> {
    match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if b < e => {
            Some(format!("{}{begin}\n{section}{}", &text[..b], &text[e..]))
        }
        _ => None,
    }
}

/// The steps of one task: each step runs even when an earlier one failed, and `finish` reports all failures.
#[derive(Debug, Default)]
struct Steps {
    failed: Vec<String>,
}

impl Steps {
    /// Announces a step, then runs it and records whether it failed.
    fn step(&mut self, title: &str, body: impl FnOnce() -> anyhow::Result<()>) {
        println!("\n==> {title}");
        if let Err(err) = body() {
            eprintln!("error: {err:#}");
            self.failed.push(title.to_owned());
        }
    }

    /// Announces a step that runs one command.
    fn command(&mut self, title: &str, cmd: &mut Command) {
        self.step(title, || exec(cmd));
    }

    /// Fails when any step failed. Success prints nothing more, so a test run's log ends with the
    /// runner's own summary line.
    fn finish(self, task: &str) -> anyhow::Result<()> {
        if self.failed.is_empty() {
            return Ok(());
        }
        bail!(
            "cargo xtask {task}: {} step(s) failed: {}",
            self.failed.len(),
            self.failed.join("; ")
        )
    }
}
