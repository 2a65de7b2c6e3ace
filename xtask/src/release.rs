//! `cargo xtask release`: the release build of the server, with its checksum, in `target/dist/`.

use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context, bail};

use crate::{cargo, exec, project_root, show};

/// The binary that `bins/server` (package `server`) builds.
const BINARY: &str = "wshub";

pub(crate) fn run() -> anyhow::Result<()> {
    println!("==> release build of the server");
    exec(cargo().args(["build", "--release", "--locked", "-p", "server"]))?;

    let target = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| project_root().join("target"), PathBuf::from);
    let dist = target.join("dist");
    fs::create_dir_all(&dist).with_context(|| format!("could not create {}", dist.display()))?;
    let built = target.join("release").join(BINARY);
    let shipped = dist.join(BINARY);
    fs::copy(&built, &shipped).with_context(|| {
        format!(
            "could not copy {} to {}",
            built.display(),
            shipped.display()
        )
    })?;

    // Run from `dist` so the checksum file names the binary relatively: `sha256sum -c wshub.sha256` works there.
    let mut sha256sum = Command::new("sha256sum");
    sha256sum.current_dir(&dist).arg(BINARY);
    println!("$ {}", show(&sha256sum));
    let output = sha256sum.output().context("could not start sha256sum")?;
    if !output.status.success() {
        bail!(
            "sha256sum failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let checksum = dist.join(format!("{BINARY}.sha256"));
    fs::write(&checksum, &output.stdout)
        .with_context(|| format!("could not write {}", checksum.display()))?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    println!("==> {} and {}", shipped.display(), checksum.display());
    Ok(())
}
