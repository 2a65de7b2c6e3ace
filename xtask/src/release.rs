//! `cargo xtask release [--quick]`: the shipped tarball of the server, with its checksum and
//! its SBOM, in `target/dist/`.
//!
//! ```text
//! target/dist/wshub-<version>-<arch>-linux.tar.gz          wshub-<version>-<arch>-linux/
//!                                                             wshub               (the binary)
//!                                                             README.md
//!                                                             wshub.example.toml
//!                                                             LICENSE-MIT, LICENSE-APACHE
//!                                                             sbom.cdx.json
//! target/dist/wshub-<version>-<arch>-linux.tar.gz.sha256   `sha256sum -c` format
//! target/dist/wshub-<version>-<arch>-linux.cdx.json        the same SBOM, beside the tarball
//! target/dist/wshub-client-<version>.tgz                  the JS client's npm package (`npm pack`)
//! ```
//!
//! The binary is built with the `dist` profile of the root `Cargo.toml` (fat LTO, one codegen
//! unit, stripped); `--quick` uses the `release` profile instead, for CI's smoke test.
//!
//! The SBOM is CycloneDX 1.5 JSON written here from `cargo metadata --locked` (every package the
//! server links, with its version, license expression, source and `Cargo.lock` checksum), not by
//! `cargo auditable` or `cargo cyclonedx`: those would be built from source on every fresh CI
//! machine, and this needs nothing beyond cargo. Nothing here touches the network.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    env, fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context;
use serde_json::{Value, json};

use crate::{cargo, exec, project_root, stdout_of};

/// The binary that `bins/server` (package `server`) builds.
const BINARY: &str = "wshub";
/// The package that builds [`BINARY`].
const PACKAGE: &str = "server";
/// Files of the repository root shipped beside the binary.
const SHIPPED_FILES: &[&str] = &[
    "README.md",
    "wshub.example.toml",
    "LICENSE-MIT",
    "LICENSE-APACHE",
];
/// The SBOM's name inside the tarball.
const SBOM: &str = "sbom.cdx.json";

pub(crate) fn run(quick: bool) -> anyhow::Result<()> {
    let root = project_root();
    let host = host_triple()?;
    let metadata = cargo_metadata(&host)?;
    let server = metadata["packages"]
        .as_array()
        .context("cargo metadata: no `packages`")?
        .iter()
        .find(|package| package["name"] == PACKAGE)
        .with_context(|| format!("cargo metadata: no package `{PACKAGE}`"))?;
    let version = server["version"]
        .as_str()
        .context("cargo metadata: the server has no version")?;
    let target = PathBuf::from(
        metadata["target_directory"]
            .as_str()
            .context("cargo metadata: no `target_directory`")?,
    );

    let profile = if quick { "release" } else { "dist" };
    println!("==> build {BINARY} {version} with the `{profile}` profile");
    exec(cargo().args([
        "build",
        "--locked",
        "-p",
        PACKAGE,
        "--bin",
        BINARY,
        "--profile",
        profile,
    ]))?;
    let built = target.join(profile).join(BINARY);

    let name = format!(
        "{BINARY}-{version}-{}-{}",
        env::consts::ARCH,
        env::consts::OS
    );
    let dist = target.join("dist");
    let tarball = dist.join(format!("{name}.tar.gz"));
    let checksum = dist.join(format!("{name}.tar.gz.sha256"));
    let sbom_beside = dist.join(format!("{name}.cdx.json"));
    // Everything is made in a directory of this run's own and moved into place at the end, so
    // two releases at once (two test runs sharing target/) never pack each other's half-staged
    // files; the tarballs of one commit are the same bytes, so either may win the rename.
    let work = dist.join(format!(".release-{}", std::process::id()));
    let staging = work.join(&name);
    if work.exists() {
        fs::remove_dir_all(&work)
            .with_context(|| format!("could not remove {}", work.display()))?;
    }
    fs::create_dir_all(&staging)
        .with_context(|| format!("could not create {}", staging.display()))?;

    println!("==> stage {}", staging.display());
    copy(&built, &staging.join(BINARY), 0o755)?;
    for file in SHIPPED_FILES {
        copy(&root.join(file), &staging.join(file), 0o644)?;
    }
    let lock = fs::read_to_string(root.join("Cargo.lock")).context("could not read Cargo.lock")?;
    let sbom = sbom(&metadata, server, &lock_checksums(&lock))?;
    let sbom = serde_json::to_string_pretty(&sbom)? + "\n";
    for path in [staging.join(SBOM), work.join(file_name(&sbom_beside))] {
        fs::write(&path, &sbom).with_context(|| format!("could not write {}", path.display()))?;
        set_mode(&path, 0o644)?;
    }

    println!("==> pack {}", tarball.display());
    // Reproducible: sorted entries, no owner names, one mtime, no timestamp in the gzip header.
    exec(
        Command::new("tar")
            .current_dir(&work)
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                &format!("--mtime=@{}", source_date_epoch(&root)),
                "--use-compress-program=gzip -n -9",
                "-cf",
            ])
            .arg(file_name(&tarball))
            .arg(&name),
    )?;

    // Run beside the tarball so the checksum names it relatively: `sha256sum -c` works in dist.
    let mut sha256sum = Command::new("sha256sum");
    sha256sum.current_dir(&work).arg(file_name(&tarball));
    let sums = stdout_of(&mut sha256sum, "sha256sum")?;
    fs::write(work.join(file_name(&checksum)), &sums)
        .with_context(|| format!("could not write {}", checksum.display()))?;
    print!("{}", String::from_utf8_lossy(&sums));

    // The checksum last: whoever sees it sees the tarball it describes.
    for done in [&tarball, &sbom_beside, &checksum] {
        fs::rename(work.join(file_name(done)), done)
            .with_context(|| format!("could not move {} into place", done.display()))?;
    }
    fs::remove_dir_all(&work).with_context(|| format!("could not remove {}", work.display()))?;

    // The JS client's npm package beside the binary: `npm pack` (its prepack builds dist/ with
    // esbuild from the committed lockfile's devDependencies).
    let js = root.join("clients/js");
    println!("==> npm pack {}", js.display());
    if !js.join("node_modules/esbuild").is_dir() {
        exec(
            Command::new("npm")
                .current_dir(&js)
                .args(["ci", "--no-audit", "--no-fund"]),
        )?;
    }
    exec(
        Command::new("npm")
            .current_dir(&js)
            .args(["pack", "--pack-destination"])
            .arg(&dist),
    )?;

    let size = fs::metadata(&tarball)?.len();
    println!(
        "==> {} ({:.1} MiB)\n    {}\n    {}",
        tarball.display(),
        size as f64 / (1024.0 * 1024.0),
        checksum.display(),
        sbom_beside.display()
    );
    Ok(())
}

/// The target triple rustc builds for by default, from `rustc -vV`.
fn host_triple() -> anyhow::Result<String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .arg("-vV")
        .output()
        .context("could not start `rustc -vV`")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("`rustc -vV` printed no `host:` line")
}

/// `cargo metadata` for the workspace, with the dependency graph cut to `platform`.
fn cargo_metadata(platform: &str) -> anyhow::Result<Value> {
    let mut cmd = cargo();
    cmd.args([
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--filter-platform",
        platform,
    ]);
    let metadata = stdout_of(&mut cmd, "cargo metadata")?;
    serde_json::from_slice(&metadata).context("cargo metadata printed invalid JSON")
}

/// The last component of a path this module built from a name.
fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name().expect("release paths end in a file name")
}

/// Copies `from` to `to` and gives the copy `mode`, whatever the umask made of the source.
fn copy(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("could not copy {} to {}", from.display(), to.display()))?;
    set_mode(to, mode)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("could not set the mode of {}", path.display()))
}

/// The time stamped on every file of the tarball: `SOURCE_DATE_EPOCH` when set, else the last
/// commit's time, else 0. Two builds of one commit give the same tarball layout.
fn source_date_epoch(root: &Path) -> u64 {
    if let Some(epoch) = env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return epoch;
    }
    Command::new("git")
        .current_dir(root)
        .args(["log", "-1", "--format=%ct"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// `(name, version) → sha256` of every registry package in a `Cargo.lock`.
fn lock_checksums(lock: &str) -> BTreeMap<(String, String), String> {
    let mut checksums = BTreeMap::new();
    let (mut name, mut version) = (None, None);
    for line in lock.lines() {
        let value = |key: &str| {
            line.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix(" = \""))
                .and_then(|rest| rest.strip_suffix('"'))
                .map(str::to_owned)
        };
        if line == "[[package]]" {
            (name, version) = (None, None);
        } else if let Some(v) = value("name") {
            name = Some(v);
        } else if let Some(v) = value("version") {
            version = Some(v);
        } else if let (Some(sum), Some(n), Some(v)) = (value("checksum"), &name, &version) {
            checksums.insert((n.clone(), v.clone()), sum);
        }
    }
    checksums
}

/// A CycloneDX 1.5 SBOM of `root` (the server package) and every package it links: the normal
/// dependencies, followed transitively (build and dev dependencies are not in the binary).
fn sbom(
    metadata: &Value,
    root: &Value,
    checksums: &BTreeMap<(String, String), String>,
) -> anyhow::Result<Value> {
    let workspace_root = metadata["workspace_root"].as_str().unwrap_or_default();
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .context("cargo metadata: no `packages`")?
        .iter()
        .filter_map(|package| Some((package["id"].as_str()?, package)))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: no `resolve.nodes`")?
        .iter()
        .filter_map(|node| Some((node["id"].as_str()?, node)))
        .collect();
    let root_id = root["id"]
        .as_str()
        .context("cargo metadata: a package without id")?;

    // Breadth-first over normal dependency edges, recording each package's direct ones.
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut queue = VecDeque::from([root_id]);
    while let Some(id) = queue.pop_front() {
        if edges.contains_key(id) {
            continue;
        }
        let node = nodes
            .get(id)
            .with_context(|| format!("cargo metadata: {id} is not in the resolve graph"))?;
        let direct: BTreeSet<&str> = node["deps"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|dep| {
                dep["dep_kinds"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|kind| kind["kind"].is_null()))
            })
            .filter_map(|dep| dep["pkg"].as_str())
            .collect();
        queue.extend(direct.iter().copied());
        edges.insert(id, direct);
    }

    let reference = |id: &str| -> anyhow::Result<String> {
        let package = packages
            .get(id)
            .with_context(|| format!("cargo metadata: no package {id}"))?;
        Ok(if id == root_id {
            format!(
                "{BINARY}@{}",
                package["version"].as_str().unwrap_or_default()
            )
        } else {
            format!(
                "{}@{}",
                package["name"].as_str().unwrap_or_default(),
                package["version"].as_str().unwrap_or_default()
            )
        })
    };

    let mut components = Vec::new();
    for &id in edges.keys().filter(|&&id| id != root_id) {
        let package = packages[id];
        let name = package["name"].as_str().unwrap_or_default();
        let version = package["version"].as_str().unwrap_or_default();
        let mut component = json!({
            "type": "library",
            "bom-ref": reference(id)?,
            "name": name,
            "version": version,
        });
        if let Some(license) = license(package) {
            component["licenses"] = license;
        }
        let source = match package["source"].as_str() {
            Some(source) => {
                component["purl"] = json!(format!("pkg:cargo/{name}@{version}"));
                source.to_owned()
            }
            // Workspace crates: name the directory relative to the workspace, not this machine.
            None => {
                let manifest = Path::new(package["manifest_path"].as_str().unwrap_or_default());
                let dir = manifest.parent().unwrap_or(manifest);
                format!(
                    "path+{}",
                    dir.strip_prefix(workspace_root).unwrap_or(dir).display()
                )
            }
        };
        component["properties"] = json!([{ "name": "cargo:source", "value": source }]);
        if let Some(sum) = checksums.get(&(name.to_owned(), version.to_owned())) {
            component["hashes"] = json!([{ "alg": "SHA-256", "content": sum }]);
        }
        if let Some(repository) = package["repository"].as_str() {
            component["externalReferences"] = json!([{ "type": "vcs", "url": repository }]);
        }
        components.push(component);
    }
    components.sort_by(|a, b| a["bom-ref"].as_str().cmp(&b["bom-ref"].as_str()));

    let mut dependencies = Vec::new();
    for (&id, direct) in &edges {
        let depends_on = direct
            .iter()
            .map(|&dep| reference(dep))
            .collect::<anyhow::Result<BTreeSet<String>>>()?;
        dependencies.push(json!({ "ref": reference(id)?, "dependsOn": depends_on }));
    }
    dependencies.sort_by(|a, b| a["ref"].as_str().cmp(&b["ref"].as_str()));

    let version = root["version"].as_str().unwrap_or_default();
    let mut application = json!({
        "type": "application",
        "bom-ref": reference(root_id)?,
        "name": BINARY,
        "version": version,
        "properties": [{ "name": "cargo:package", "value": PACKAGE }],
    });
    if let Some(license) = license(root) {
        application["licenses"] = license;
    }
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "component": application,
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "cargo xtask release",
                    "description": "generated from `cargo metadata --format-version 1 --locked` and Cargo.lock",
                }],
            },
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

/// The CycloneDX `licenses` of a package: its SPDX expression (the old `MIT/Apache-2.0` spelling
/// becomes `MIT OR Apache-2.0`), or the license file it names instead.
fn license(package: &Value) -> Option<Value> {
    if let Some(expression) = package["license"].as_str() {
        let expression = expression
            .split('/')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" OR ");
        return Some(json!([{ "expression": expression }]));
    }
    let file = package["license_file"].as_str()?;
    let file = Path::new(file).file_name()?.to_string_lossy();
    Some(json!([{ "license": { "name": format!("see {file} in the package") } }]))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{license, lock_checksums};

    #[test]
    fn lock_checksums_are_read() {
        let lock = r#"version = 4

[[package]]
name = "memchr"
version = "2.8.3"
source = "registry+https://example.invalid/index"
checksum = "abc123"

[[package]]
name = "ws-core"
version = "0.1.0"
dependencies = [
 "memchr",
]
"#;
        let sums = lock_checksums(lock);
        assert_eq!(sums.len(), 1);
        assert_eq!(sums[&("memchr".to_owned(), "2.8.3".to_owned())], "abc123");
    }

    #[test]
    fn licenses_are_spdx_expressions() {
        assert_eq!(
            license(&json!({ "license": "MIT/Apache-2.0" })),
            Some(json!([{ "expression": "MIT OR Apache-2.0" }]))
        );
        assert_eq!(
            license(&json!({ "license": "Apache-2.0 OR MIT" })),
            Some(json!([{ "expression": "Apache-2.0 OR MIT" }]))
        );
        assert_eq!(
            license(&json!({ "license": null, "license_file": "/x/LICENSE.txt" })),
            Some(json!([{ "license": { "name": "see LICENSE.txt in the package" } }]))
        );
        assert_eq!(
            license(&json!({ "license": null, "license_file": null })),
            None
        );
    }
}
