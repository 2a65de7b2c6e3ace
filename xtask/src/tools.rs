//! The programs on this machine, for every task: whether one runs, where one is on `PATH`,
//! whether a cargo subcommand is installed, installing Debian packages, and cargo's target
//! directory. A leaf: it uses only the crate root's helpers.

use std::{
    env,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::{cargo, exec, project_root};

/// Whether `cmd` starts and exits with success; its output is dropped.
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether `cargo <subcommand>` is installed (`cargo nextest`, `cargo deny`, ...).
pub(crate) fn has_cargo_subcommand(subcommand: &str) -> bool {
    succeeds(cargo().args([subcommand, "--version"]))
}

/// The first executable file called `command` in a `PATH` directory, like `which`.
pub(crate) fn find_on_path(command: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// `apt-get update`, then `apt-get install -y` the packages, without prompts.
pub(crate) fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    exec(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .arg("update"),
    )?;
    exec(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(packages),
    )
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `target` in the workspace.
pub(crate) fn target_dir() -> PathBuf {
    let root = project_root();
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::{find_on_path, succeeds};

    #[test]
    fn finds_programs_on_path() {
        assert!(find_on_path("sh").is_some());
        assert_eq!(find_on_path("wshub-no-such-program"), None);
    }

    #[test]
    fn succeeds_only_when_the_program_runs_and_exits_with_success() {
        assert!(succeeds(Command::new("sh").args(["-c", "exit 0"])));
        assert!(!succeeds(Command::new("sh").args(["-c", "exit 3"])));
        assert!(!succeeds(&mut Command::new("wshub-no-such-program")));
    }
}
