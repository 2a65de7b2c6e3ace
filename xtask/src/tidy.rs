//! Repository invariants checked as code (rust-analyzer's `tidy`).
//!
//! `cargo xtask lint` runs every check, and the `#[test]`s below run them again so that
//! `cargo test` alone also guards them.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

use crate::{cargo, stdout_of};

/// Crates that make a library do IO: `ws-core` is sans-IO and must not depend on any of them,
/// nor on a crate named after them (`tokio-util`, `hyper-util`, ...).
const IO_CRATES: &[&str] = &["tokio", "hyper", "tungstenite", "mio", "socket2"];

/// Clock reads: `ws-core` takes time as `now` arguments instead.
const CLOCK_READS: &[&str] = &["Instant::now", "SystemTime::now"];

/// A tidy check of the repository at the given root.
pub(crate) type Check = fn(&Path) -> anyhow::Result<()>;

/// Each check with its title, in the order `cargo xtask lint` runs them.
pub(crate) const CHECKS: &[(&str, Check)] = &[
    (
        "tidy: ws-core has no IO dependencies",
        check_core_dependencies,
    ),
    (
        "tidy: ws-core reads no clock outside tests",
        check_core_clock_reads,
    ),
    (
        "tidy: every member uses the workspace lints",
        check_workspace_lints,
    ),
];

/// `cargo tree -p ws-core -e normal` lists none of [`IO_CRATES`], on any target, with any feature.
fn check_core_dependencies(root: &Path) -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.current_dir(root).args([
        "tree",
        "-p",
        "ws-core",
        "-e",
        "normal",
        "--prefix",
        "none",
        "--target",
        "all",
        "--all-features",
    ]);
    let tree = stdout_of(&mut cmd, "cargo tree")?;
    let tree = String::from_utf8(tree).context("cargo tree printed non-UTF-8")?;
    let found = io_crates_in_tree(&tree);
    if !found.is_empty() {
        bail!(
            "ws-core is sans-IO but depends on: {} (see `cargo tree -p ws-core -i <crate>`)",
            found.join(", ")
        );
    }
    Ok(())
}

/// The packages of a `cargo tree --prefix none` listing that do IO, each named once.
fn io_crates_in_tree(tree: &str) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| {
            IO_CRATES.iter().any(|io| {
                name == io
                    || name
                        .strip_prefix(io)
                        .is_some_and(|rest| rest.starts_with('-'))
            })
        })
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// No `.rs` file of `crates/ws-core/src` reads the clock outside test code.
fn check_core_clock_reads(root: &Path) -> anyhow::Result<()> {
    let src = root.join("crates/ws-core/src");
    let mut offences = Vec::new();
    for file in rust_files(&src)? {
        if is_test_file(file.strip_prefix(&src).unwrap_or(&file)) {
            continue;
        }
        let text = fs::read_to_string(&file)
            .with_context(|| format!("could not read {}", file.display()))?;
        for (line, pattern) in clock_reads(&text) {
            offences.push(format!(
                "{}:{line}: {pattern}",
                file.strip_prefix(root).unwrap_or(&file).display()
            ));
        }
    }
    if !offences.is_empty() {
        bail!(
            "ws-core is sans-IO: time enters as `now` arguments, but it reads the clock at\n  {}",
            offences.join("\n  ")
        );
    }
    Ok(())
}

/// Files that hold only test code: `tests.rs` modules and everything under a `tests/` directory.
fn is_test_file(relative: &Path) -> bool {
    relative.file_name().is_some_and(|name| name == "tests.rs")
        || relative
            .parent()
            .is_some_and(|dir| dir.components().any(|part| part.as_os_str() == "tests"))
}

/// Clock reads (1-based line, pattern) before the file's first `#[cfg(test)]`, ignoring comment lines.
fn clock_reads(text: &str) -> Vec<(usize, &'static str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, line)| !line.trim_start().starts_with("#[cfg(test)]"))
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .flat_map(|(index, line)| {
            CLOCK_READS
                .iter()
                .filter(|pattern| line.contains(*pattern))
                .map(move |&pattern| (index + 1, pattern))
        })
        .collect()
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            fs::read_dir(&dir).with_context(|| format!("could not list {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Every workspace member's `Cargo.toml` has `[lints]` with `workspace = true`.
fn check_workspace_lints(root: &Path) -> anyhow::Result<()> {
    let manifest = fs::read_to_string(root.join("Cargo.toml"))
        .context("could not read the root Cargo.toml")?;
    let mut offences = Vec::new();
    for member in members(root, &manifest)? {
        let path = member.join("Cargo.toml");
        let shown = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        match fs::read_to_string(&path) {
            Ok(text) if uses_workspace_lints(&text) => {}
            Ok(_) => offences.push(format!("{shown}: add `[lints]` with `workspace = true`")),
            Err(err) => offences.push(format!("{shown}: {err}")),
        }
    }
    if !offences.is_empty() {
        bail!(
            "workspace members must opt into the workspace lints:\n  {}",
            offences.join("\n  ")
        );
    }
    Ok(())
}

/// Member directories named by `members = [...]` of the root manifest; `dir/*` globs expand to subdirectories.
fn members(root: &Path, manifest: &str) -> anyhow::Result<Vec<PathBuf>> {
    let start = manifest
        .match_indices("members")
        .map(|(index, _)| index)
        .find(|&index| index == 0 || manifest[..index].ends_with('\n'))
        .context("the root Cargo.toml has no `members`")?;
    let list = &manifest[start..];
    let list = &list[list.find('[').context("`members` is not a list")? + 1..];
    let list = &list[..list.find(']').context("`members` is not a closed list")?];
    let mut dirs = Vec::new();
    for pattern in list
        .split(',')
        .map(|item| item.trim().trim_matches('"').trim_end_matches('/'))
        .filter(|item| !item.is_empty())
    {
        match pattern.strip_suffix("/*") {
            Some(parent) => {
                let mut found: Vec<PathBuf> = fs::read_dir(root.join(parent))
                    .with_context(|| format!("could not list member glob `{pattern}`"))?
                    .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                    .filter(|path| path.is_dir())
                    .collect();
                found.sort();
                dirs.extend(found);
            }
            None => dirs.push(root.join(pattern)),
        }
    }
    Ok(dirs)
}

/// Whether a manifest's `[lints]` table says `workspace = true`.
fn uses_workspace_lints(manifest: &str) -> bool {
    let mut in_lints = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_lints = line == "[lints]";
        } else if in_lints
            && line.split('#').next().unwrap_or_default().replace(' ', "") == "workspace=true"
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{CHECKS, clock_reads, io_crates_in_tree, is_test_file, uses_workspace_lints};
    use crate::project_root;

    #[test]
    fn tidy() {
        let failures: Vec<String> = CHECKS
            .iter()
            .filter_map(|(title, check)| {
                check(&project_root())
                    .err()
                    .map(|err| format!("{title}: {err:#}"))
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn io_crates_are_found_by_name() {
        let tree = "\
ws-core v0.1.0 (/work/main/crates/ws-core)
bytes v1.10.1
tokio-util v0.7.15
tokio v1.47.0
tokio v1.47.0 (*)
mio-extras v2.0.0
tokio_impl v0.1.0
hyperloglog v1.0.0
";
        assert_eq!(
            io_crates_in_tree(tree),
            ["mio-extras", "tokio", "tokio-util"]
        );
    }

    #[test]
    fn clock_reads_outside_tests_are_found() {
        let text = "\
// Never call Instant::now here.
fn poll(now: Instant) {}
fn bad() -> Instant { std::time::Instant::now() }
fn worse() -> SystemTime { SystemTime::now() }
#[cfg(test)]
mod tests { fn clock() -> Instant { Instant::now() } }
";
        assert_eq!(
            clock_reads(text),
            [(3, "Instant::now"), (4, "SystemTime::now")]
        );
    }

    #[test]
    fn test_files_are_skipped() {
        assert!(is_test_file(Path::new("hub/tests.rs")));
        assert!(is_test_file(Path::new("tests/util.rs")));
        assert!(!is_test_file(Path::new("hub.rs")));
        assert!(!is_test_file(Path::new("client/mod.rs")));
    }

    #[test]
    fn workspace_lints_are_recognised() {
        assert!(uses_workspace_lints(
            "[package]\nname = \"a\"\n\n[lints]\nworkspace = true\n"
        ));
        assert!(uses_workspace_lints(
            "[lints]\n# all crates share them\nworkspace=true # see root\n"
        ));
        assert!(!uses_workspace_lints(
            "[package]\nworkspace = true\n[lints.rust]\nunsafe_code = \"forbid\"\n"
        ));
        assert!(!uses_workspace_lints("[lints]\nworkspace = false\n"));
    }
}
