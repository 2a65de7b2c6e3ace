//! The release smoke test: `cargo xtask release --quick` produces the tarball, its checksum and
//! its SBOM, and the binary unpacked from the tarball starts and answers `/healthz`.
//!
//! It builds the server with the `release` profile (a few minutes on two cores the first time),
//! so it is the slowest test of the workspace; `.config/nextest.toml` gives it the whole machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The workspace root: the parent of this crate's directory.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where the release lands: `target/dist/`, as cargo resolves the target directory.
fn dist_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| project_root().join("target"), PathBuf::from)
        .join("dist")
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("wshub-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The unpacked server, killed by its PID when dropped if it has not exited.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn release_tarball_starts_and_answers_healthz() {
    // xtask and the server both take the workspace version.
    let name = format!(
        "wshub-{}-{}-{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS
    );
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["release", "--quick"])
        .current_dir(project_root())
        .status()
        .expect("running cargo xtask release --quick");
    assert!(status.success(), "cargo xtask release --quick: {status}");

    let dist = dist_dir();
    let tarball = dist.join(format!("{name}.tar.gz"));
    assert!(tarball.is_file(), "{} is missing", tarball.display());
    let checksum = format!("{name}.tar.gz.sha256");
    let check = run(Command::new("sha256sum")
        .arg("-c")
        .arg(&checksum)
        .current_dir(&dist));
    assert_eq!(check.trim(), format!("{name}.tar.gz: OK"));

    let listing = run(Command::new("tar").arg("-tzf").arg(&tarball));
    let mut entries: Vec<&str> = listing.lines().collect();
    entries.sort_unstable();
    let expected: Vec<String> = [
        "",
        "LICENSE-APACHE",
        "LICENSE-MIT",
        "README.md",
        "sbom.cdx.json",
        "wshub",
        "wshub.example.toml",
    ]
    .iter()
    .map(|file| format!("{name}/{file}"))
    .collect();
    assert_eq!(entries, expected);

    let unpacked = TempDir::new("release-smoke");
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&unpacked.0));
    let dir = unpacked.0.join(&name);

    // The SBOM lists what the server links, with licenses, and nothing it does not.
    let sbom: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sbom.cdx.json")).unwrap()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["metadata"]["component"]["name"], "wshub");
    let components = sbom["components"].as_array().unwrap();
    let find = |name: &str| components.iter().find(|c| c["name"] == name);
    for linked in ["tokio", "hyper", "ws-core", "ws-transport", "ws-auth"] {
        let component = find(linked).unwrap_or_else(|| panic!("{linked} is not in the SBOM"));
        assert!(
            component["licenses"][0]["expression"].is_string(),
            "{component}"
        );
    }
    assert!(find("tokio").unwrap()["hashes"][0]["content"].is_string());
    for not_linked in ["xtask", "proptest"] {
        assert!(find(not_linked).is_none(), "{not_linked} is in the SBOM");
    }

    let wshub = dir.join("wshub");
    let version = run(Command::new(&wshub).arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");

    // The shipped example configuration is valid as shipped.
    run(Command::new(&wshub)
        .arg("check-config")
        .arg(dir.join("wshub.example.toml")));

    let config = unpacked.0.join("wshub.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\n\n\
         [auth]\nhs256_secrets = [\"release-smoke-test-secret-0123456789\"]\n",
    )
    .unwrap();
    let mut child = Command::new(&wshub)
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the unpacked wshub");
    let stdout = child.stdout.take().unwrap();
    let mut server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["message"] == "listening"
                && let Some(addr) = v["addr"].as_str()
            {
                let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the unpacked wshub logged no `listening` line");

    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");

    // SIGTERM by PID: with no connection the drain is immediate and the exit clean.
    run(Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .stdout(Stdio::null()));
    let status = server.0.wait().unwrap();
    assert!(status.success(), "wshub exited with {status} after SIGTERM");
}
