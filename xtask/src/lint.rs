//! `cargo xtask lint`: formatting, clippy, rustdoc, tidy checks and cargo-deny, all with warnings as errors.

use crate::{Steps, cargo, has_cargo_subcommand, project_root, tidy};

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
    if has_cargo_subcommand("deny") {
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
    } else {
        println!(
            "\nnote: cargo-deny is not installed, skipping `cargo deny check bans licenses sources` \
             (install it with `cargo install --locked cargo-deny`)"
        );
    }
    steps.finish("lint")
}
