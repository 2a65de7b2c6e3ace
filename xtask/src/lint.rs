//! `cargo xtask lint`: formatting, clippy, rustdoc, tidy checks and cargo-deny, all with warnings as errors.

use anyhow::Context;

use crate::tools::has_cargo_subcommand;
use crate::{Steps, cargo, exec, project_root, tidy};

/// The cargo-deny `cargo xtask lint` installs when it is missing (CI starts without it).
/// Pinned: cargo-deny's releases change how deny.toml is read and what the checks report,
/// so an unpinned `cargo install` could break CI on a day nothing of ours changed; and a
/// release may need a newer rustc than CI's. 0.20.2 declares rust-version 1.88 (our MSRV),
/// built with rustc 1.95 and passed against deny.toml; its install compiles for a few
/// minutes (4 min 19 s on one core here). Bump it on purpose, checking `cargo deny check`.
const CARGO_DENY_VERSION: &str = "0.20.2";

pub(crate) fn run() -> anyhow::Result<()> {
    let mut steps = Steps::default();
    steps.command(
        "formatting: cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    );
    for (title, check) in tidy::CHECKS {
        steps.step(title, || check(&project_root()));
    }
    steps.command(
        "clippy, warnings denied",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    );
    steps.command(
        "rustdoc, warnings denied",
        cargo()
            .env("RUSTDOCFLAGS", "-Dwarnings")
            .args(["doc", "--workspace", "--no-deps"]),
    );
    // `advisories` is left out: its database is fetched from GitHub, which these machines cannot reach.
    let installed = has_cargo_subcommand("deny");
    if !installed {
        steps.step(
            &format!(
                "installing cargo-deny {CARGO_DENY_VERSION} (missing; a few minutes of compile)"
            ),
            install_cargo_deny,
        );
    } else if let Some(other) = installed_cargo_deny_version().filter(|v| v != CARGO_DENY_VERSION) {
        println!(
            "\nnote: cargo-deny {other} is installed, not the pinned {CARGO_DENY_VERSION} that CI uses \
             (`cargo install --locked cargo-deny --version {CARGO_DENY_VERSION}`)"
        );
    }
    steps.command(
        "dependency policy (deny.toml): cargo deny check bans licenses sources",
        cargo().args([
            "deny",
            "check",
            "--hide-inclusion-graph",
            "bans",
            "licenses",
            "sources",
        ]),
    );
    steps.finish("lint")
}

fn install_cargo_deny() -> anyhow::Result<()> {
    exec(cargo().args([
        "install",
        "--locked",
        "cargo-deny",
        "--version",
        CARGO_DENY_VERSION,
    ]))
    .context("cargo-deny is needed by `cargo xtask lint` (deny.toml is the dependency policy)")
}

/// The installed cargo-deny's version, from `cargo deny --version` ("cargo-deny 0.20.2").
fn installed_cargo_deny_version() -> Option<String> {
    let output = cargo().args(["deny", "--version"]).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    text.split_whitespace().nth(1).map(str::to_owned)
}
