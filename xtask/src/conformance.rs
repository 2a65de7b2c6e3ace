//! `cargo xtask conformance [--full]`: the Autobahn TestSuite's fuzzing client against
//! ws-transport's echo example (`crates/ws-transport/examples/echo.rs`), which runs on the
//! same upgrade, core and pumps as wshub.
//!
//! Autobahn's `wstest` runs on CPython 2.7 only. The machine's pyenv has one; a Python 3
//! virtualenv under `target/autobahn/tools` provides a `virtualenv` old enough (< 20.22) to
//! create the 2.7 environment `target/autobahn/venv`, into which [`PINS`] are installed.
//! Both steps are skipped when already done with the same pins.
//!
//! The run writes `target/autobahn/spec.json`, the suite's reports under
//! `target/autobahn/reports/`, and the summary section of `docs/conformance.md`; it fails
//! when any case is FAILED.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::tools::{apt_install, succeeds, target_dir};
use crate::{cargo, exec, project_root, replace_between, show, wait_or_kill};

/// The Python 2.7 packages `wstest` runs on: a set known to install and work together
/// (the last releases that support 2.7, resolved once by pip and frozen here).
const PINS: &[&str] = &[
    "autobahntestsuite==25.10.1",
    "autobahn==0.10.9",
    "Twisted==19.10.0",
    "txaio==2.1.0",
    "wsaccel==0.6.6",
    "ujson==2.0.3",
    "zope.interface==4.6.0",
    "PyHamcrest==1.10.1",
    "incremental==16.10.1",
    "idna==2.10",
    "typing==3.10.0.0",
    "hyperlink==21.0.0",
    "attrs==21.4.0",
    "constantly==15.1.0",
    "Automat==22.10.0",
    "six==1.16.0",
    "setuptools==44.0.0",
    "MarkupSafe==1.1.1",
    "Jinja2==2.11.3",
    "ipaddress==1.0.23",
    "pycparser==2.21",
    "cffi==1.15.1",
    "enum34==1.1.10",
    "cryptography==3.3.2",
    "pyOpenSSL==19.1.0",
    "Werkzeug==1.0.1",
    "klein==17.10.0",
    "pyasn1==0.5.1",
    "pyasn1-modules==0.3.0",
    "service-identity==18.1.0",
    "linecache2==1.0.0",
    "traceback2==1.4.0",
    "argparse==1.4.0",
    "unittest2==1.1.0",
];

/// `virtualenv` 20.22 dropped creating Python 2 environments.
const VIRTUALENV: &str = "virtualenv<20.22";

/// The cases of the default run: framing, pings, reserved bits and opcodes, fragmentation,
/// UTF-8, the close handshake, automatic fragmentation.
const DEFAULT_CASES: &[&str] = &["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"];

/// Added by `--full`: big messages (9.*, up to 16 MiB) and permessage-deflate (12.*, 13.*),
/// which the echo does not negotiate, so the suite reports those UNIMPLEMENTED.
const FULL_CASES: &[&str] = &["9.*", "12.*", "13.*"];

/// The agent name in the reports.
const AGENT: &str = "wshub-echo";

/// How long `wstest` may run before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(30 * 60);

const BEGIN: &str = "<!-- conformance:begin (cargo xtask conformance writes this section) -->";
const END: &str = "<!-- conformance:end -->";

/// The behaviours Autobahn reports, in the order they are printed.
const BEHAVIOURS: &[&str] = &[
    "OK",
    "NON-STRICT",
    "INFORMATIONAL",
    "UNIMPLEMENTED",
    "FAILED",
];

/// How `cargo xtask conformance` runs, and how `cargo xtask test` runs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Add [`FULL_CASES`].
    pub(crate) full: bool,
    /// Rewrite the summary in `docs/conformance.md`.
    pub(crate) write_doc: bool,
    /// Build the echo with the `release` profile; the `dev` one (dependencies optimised,
    /// shared with the test suite's build) is fast enough for the default cases.
    pub(crate) release: bool,
}

/// Runs the suite against the echo example.
pub(crate) fn run(options: Options) -> anyhow::Result<()> {
    let Options {
        full,
        write_doc,
        release,
    } = options;
    let root = project_root();
    let dir = root.join("target/autobahn");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    println!("\n==> Autobahn TestSuite (wstest on CPython 2.7)");
    let wstest = install(&dir)?;

    let profile = if release { "release" } else { "debug" };
    println!("\n==> the echo example ({profile})");
    let mut build = cargo();
    build.args(["build", "-p", "ws-transport", "--example", "echo"]);
    if release {
        build.arg("--release");
    }
    exec(&mut build)?;
    let echo_bin = target_dir().join(profile).join("examples/echo");
    let (echo, addr) = start_echo(&echo_bin)?;

    let mut cases: Vec<&str> = DEFAULT_CASES.to_vec();
    if full {
        cases.extend_from_slice(FULL_CASES);
        cases.sort_by_key(|c| case_key(c.trim_end_matches(".*")));
    }
    let reports = dir.join("reports");
    if reports.exists() {
        std::fs::remove_dir_all(&reports)
            .with_context(|| format!("removing the old {}", reports.display()))?;
    }
    let spec = json!({
        "outdir": reports.to_string_lossy(),
        "servers": [{ "agent": AGENT, "url": format!("ws://{addr}") }],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    });
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_string_pretty(&spec)?)?;

    println!(
        "\n==> wstest -m fuzzingclient against ws://{addr} ({})",
        cases.join(" ")
    );
    let started = Instant::now();
    let mut cmd = Command::new(&wstest);
    cmd.current_dir(&dir)
        .args(["-m", "fuzzingclient", "-s"])
        .arg(&spec_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let ran = run_limited(&mut cmd, RUN_LIMIT);
    let elapsed = started.elapsed();
    // Stop the echo (by its PID, through `Child`) before reading the results.
    drop(echo);
    ran?;

    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join("index.json"))
            .context("reading the suite's reports/index.json")?,
    )
    .context("parsing reports/index.json")?;
    let results = results(&index)?;
    let summary = Summary::new(&results);
    println!(
        "\n{} cases in {:.0} s",
        results.len(),
        elapsed.as_secs_f64()
    );
    for (behaviour, count) in summary.counts() {
        println!("  {behaviour:<14} {count}");
    }
    for line in not_ok(&results) {
        println!("  {line}");
    }

    if write_doc {
        let doc = root.join("docs/conformance.md");
        let text = std::fs::read_to_string(&doc).unwrap_or_default();
        let section = summary.render(full, &cases, elapsed, &results);
        std::fs::write(&doc, splice(&text, &section))
            .with_context(|| format!("writing {}", doc.display()))?;
        println!("summary written to {}", doc.display());
    }

    let failed = summary.count("FAILED");
    if failed > 0 {
        bail!(
            "{failed} Autobahn case(s) FAILED; see {}",
            reports.join("index.html").display()
        );
    }
    Ok(())
}

/// Installs `wstest` under `dir` unless the stamp says it is there with [`PINS`];
/// returns its path.
fn install(dir: &Path) -> anyhow::Result<PathBuf> {
    let venv = dir.join("venv");
    let wstest = venv.join("bin/wstest");
    let stamp = dir.join("installed.txt");
    let wanted = PINS.join("\n");
    // Run, not just present: a virtualenv's scripts name its interpreter by absolute path,
    // so a target directory that moved leaves them broken.
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted)
        && succeeds(Command::new(&wstest).arg("--help"))
    {
        println!("already installed: {}", wstest.display());
        return Ok(wstest);
    }
    ensure_debian_packages()?;
    let python2 = find_python2()?;
    println!("CPython 2.7: {}", python2.display());

    let tools = dir.join("tools");
    let virtualenv = tools.join("bin/virtualenv");
    if !succeeds(Command::new(&virtualenv).arg("--version")) {
        if tools.exists() {
            std::fs::remove_dir_all(&tools)?;
        }
        exec(Command::new("python3").args(["-m", "venv"]).arg(&tools))?;
        exec(Command::new(tools.join("bin/pip")).args([
            "install",
            "--disable-pip-version-check",
            "-q",
            VIRTUALENV,
        ]))?;
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv)?;
    }
    exec(Command::new(&virtualenv).arg("-p").arg(&python2).arg(&venv))?;
    exec(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--disable-pip-version-check",
                "--no-python-version-warning",
            ])
            .args(PINS),
    )?;
    if !wstest.exists() {
        bail!("{} is missing after pip install", wstest.display());
    }
    std::fs::write(&stamp, wanted)?;
    Ok(wstest)
}

/// What building the suite needs from Debian: a C compiler for wsaccel and ujson, and
/// Python 3's venv for the `virtualenv` tool. Installed when missing (CI runs as root).
fn ensure_debian_packages() -> anyhow::Result<()> {
    let has_venv = succeeds(Command::new("python3").args(["-c", "import venv, ensurepip"]));
    let has_cc = succeeds(Command::new("cc").arg("--version"));
    let mut packages = Vec::new();
    if !has_venv {
        packages.extend(["python3", "python3-venv", "python3-pip"]);
    }
    if !has_cc {
        packages.extend(["build-essential", "libffi-dev", "libssl-dev"]);
    }
    if packages.is_empty() {
        return Ok(());
    }
    println!("installing Debian package(s): {}", packages.join(", "));
    apt_install(&packages)
}

/// pyenv's CPython 2.7 (`$(pyenv root)/versions/2.7.*`), else `python2.7` on `PATH`, else
/// one `pyenv install` builds.
fn find_python2() -> anyhow::Result<PathBuf> {
    find_python2_after(false)
}

/// Whether Autobahn can run here at all: a CPython 2.7 is found or can be installed.
pub(crate) fn python2_available() -> bool {
    find_python2().is_ok()
}

fn find_python2_after(tried_install: bool) -> anyhow::Result<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(out) = Command::new("pyenv").arg("root").output()
        && out.status.success()
    {
        roots.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if let Some(root) = std::env::var_os("PYENV_ROOT") {
        roots.push(PathBuf::from(root));
    }
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(Path::new(&home).join(".pyenv"));
    }
    for root in roots {
        let Ok(entries) = std::fs::read_dir(root.join("versions")) else {
            continue;
        };
        let mut versions: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("2.7"))
            .map(|e| e.path().join("bin/python2.7"))
            .filter(|p| p.exists())
            .collect();
        versions.sort();
        if let Some(python) = versions.pop() {
            return Ok(python);
        }
    }
    if succeeds(Command::new("python2.7").arg("--version")) {
        return Ok(PathBuf::from("python2.7"));
    }
    if !tried_install {
        // A machine without one: pyenv can build it (a few minutes, needs python.org).
        println!("no CPython 2.7 found; trying `pyenv install --skip-existing 2.7.18`");
        let installed = Command::new("pyenv")
            .args(["install", "--skip-existing", "2.7.18"])
            .status()
            .is_ok_and(|s| s.success());
        if installed {
            return find_python2_after(true);
        }
    }
    bail!(
        "no CPython 2.7 found (pyenv versions 2.7.*, or python2.7 on PATH); Autobahn's wstest \
         runs on Python 2.7 only"
    )
}

/// The echo example, killed (by its PID, through `Child`) when dropped.
struct Echo(Child);

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the echo on an ephemeral loopback port and reads the address it prints.
fn start_echo(binary: &Path) -> anyhow::Result<(Echo, String)> {
    let mut child = Command::new(binary)
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let echo = Echo(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .context("the echo example printed no address within 10 s")?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line from the echo example: {line:?}"))?
        .to_owned();
    println!("echo example (pid {}) on {addr}", echo.0.id());
    Ok((echo, addr))
}

/// Runs `cmd`, killing it (by its PID, through `Child`) after `limit`.
fn run_limited(cmd: &mut Command, limit: Duration) -> anyhow::Result<()> {
    println!("$ {}", show(cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    let Some(status) = wait_or_kill(&mut child, limit)? else {
        bail!("`{}` ran over {limit:?} and was killed", show(cmd));
    };
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// One case's result from `reports/index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CaseResult {
    id: String,
    behavior: String,
    behavior_close: String,
}

/// The agent's cases, in the suite's numeric order (1.1.2 before 1.1.10).
fn results(index: &Value) -> anyhow::Result<Vec<CaseResult>> {
    let cases = index
        .get(AGENT)
        .and_then(Value::as_object)
        .with_context(|| format!("no results for agent {AGENT} in index.json"))?;
    let mut results: Vec<CaseResult> = cases
        .iter()
        .map(|(id, case)| {
            let field = |key: &str| {
                case.get(key)
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            };
            CaseResult {
                id: id.clone(),
                behavior: field("behavior"),
                behavior_close: field("behaviorClose"),
            }
        })
        .collect();
    results.sort_by_key(|c| case_key(&c.id));
    Ok(results)
}

fn case_key(id: &str) -> Vec<u32> {
    id.split('.')
        .map(|n| n.parse().unwrap_or(u32::MAX))
        .collect()
}

/// Counts per behaviour.
struct Summary {
    counts: BTreeMap<String, usize>,
}

impl Summary {
    fn new(results: &[CaseResult]) -> Self {
        let mut counts = BTreeMap::new();
        for case in results {
            *counts.entry(case.behavior.clone()).or_insert(0) += 1;
        }
        Self { counts }
    }

    fn count(&self, behaviour: &str) -> usize {
        self.counts.get(behaviour).copied().unwrap_or(0)
    }

    /// Every known behaviour, zeros included, then any other the suite reported.
    fn counts(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = BEHAVIOURS
            .iter()
            .map(|b| ((*b).to_owned(), self.count(b)))
            .collect();
        for (behaviour, count) in &self.counts {
            if !BEHAVIOURS.contains(&behaviour.as_str()) {
                out.push((behaviour.clone(), *count));
            }
        }
        out
    }

    fn render(
        &self,
        full: bool,
        cases: &[&str],
        elapsed: Duration,
        results: &[CaseResult],
    ) -> String {
        let mut s = String::new();
        let run = if full {
            "cargo xtask conformance --full"
        } else {
            "cargo xtask conformance"
        };
        let _ = writeln!(
            s,
            "Last run: `{run}`, cases {}, {} cases in {:.0} s.\n",
            cases.join(" "),
            results.len(),
            elapsed.as_secs_f64()
        );
        s.push_str("| behaviour | cases |\n| --- | ---: |\n");
        for (behaviour, count) in self.counts() {
            let _ = writeln!(s, "| {behaviour} | {count} |");
        }
        let others = not_ok(results);
        if !others.is_empty() {
            s.push_str("\nCases not OK (the reasons are below):\n\n");
            for line in others {
                let _ = writeln!(s, "- {line}");
            }
        }
        s
    }
}

/// The cases that are not OK, one line per behaviour and section: runs of one behaviour
/// in one section (all of 12.* UNIMPLEMENTED) read as one line.
fn not_ok(results: &[CaseResult]) -> Vec<String> {
    let mut groups: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for case in results.iter().filter(|c| c.behavior != "OK") {
        let section = case.id.split('.').next().unwrap_or("");
        match groups.last_mut() {
            Some((sec, behaviour, ids)) if *sec == section && *behaviour == case.behavior => {
                ids.push(&case.id);
            }
            _ => groups.push((section, &case.behavior, vec![&case.id])),
        }
    }
    groups
        .into_iter()
        .map(|(section, behaviour, ids)| {
            if ids.len() > 4 {
                format!(
                    "{behaviour}: {} cases of {section}.* ({} … {})",
                    ids.len(),
                    ids[0],
                    ids[ids.len() - 1]
                )
            } else {
                format!("{behaviour}: {}", ids.join(", "))
            }
        })
        .collect()
}

/// `text` with the section between the markers replaced; the markers and the section are
/// appended when missing.
fn splice(text: &str, section: &str) -> String {
    replace_between(text, BEGIN, END, section)
        .unwrap_or_else(|| format!("{text}\n{BEGIN}\n{section}{END}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str, behavior: &str) -> CaseResult {
        CaseResult {
            id: id.to_owned(),
            behavior: behavior.to_owned(),
            behavior_close: "OK".to_owned(),
        }
    }

    #[test]
    fn reads_and_sorts_the_index() {
        let index = json!({ AGENT: {
            "1.1.10": { "behavior": "OK", "behaviorClose": "OK" },
            "1.1.2": { "behavior": "NON-STRICT", "behaviorClose": "OK" },
            "10.1.1": { "behavior": "FAILED", "behaviorClose": "FAILED" },
        }});
        let results = results(&index).unwrap();
        let ids: Vec<&str> = results.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["1.1.2", "1.1.10", "10.1.1"]);
        let summary = Summary::new(&results);
        assert_eq!((summary.count("OK"), summary.count("FAILED")), (1, 1));
        assert!(super::results(&json!({})).is_err());
    }

    #[test]
    fn renders_counts_and_groups() {
        let mut results = vec![case("1.1.1", "OK"), case("6.4.3", "NON-STRICT")];
        results.extend((1..=6).map(|n| case(&format!("12.1.{n}"), "UNIMPLEMENTED")));
        let text = Summary::new(&results).render(true, &["1.*"], Duration::from_secs(3), &results);
        assert!(text.contains("| OK | 1 |"), "{text}");
        assert!(text.contains("| FAILED | 0 |"), "{text}");
        assert!(text.contains("- NON-STRICT: 6.4.3\n"), "{text}");
        assert!(
            text.contains("- UNIMPLEMENTED: 6 cases of 12.* (12.1.1 … 12.1.6)"),
            "{text}"
        );
    }

    #[test]
    fn splices_between_markers() {
        let doc = format!("# T\n\n{BEGIN}\nold\n{END}\n\nrest\n");
        assert_eq!(
            splice(&doc, "new\n"),
            format!("# T\n\n{BEGIN}\nnew\n{END}\n\nrest\n")
        );
        assert_eq!(
            splice("# T\n", "new\n"),
            format!("# T\n\n{BEGIN}\nnew\n{END}\n")
        );
    }
}
