//! Development mode: no configuration at all still gives a working, explained server.
//!
//! It starts only when nothing is configured (see [`unconfigured`]) or with `--dev`: a
//! deployment configured through a file or `WSHUB__*` variables that forgot its key is a
//! configuration error instead, never a server with invented secrets and the demo on.
//! It listens where `server.listen` says, 127.0.0.1:8080 by default; `--dev` with a
//! non-loopback address is obeyed (a container needs 0.0.0.0 to be reachable at all) but
//! warned about loudly, on stderr and in the log (see [`exposure_warning`]).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rand::Rng;
use ws_auth::{Claims, JwtSigner};

use crate::config::{Secret, Settings};

/// Whether nothing at all configures this run: no `--config` file (`config`, which also
/// carries `WSHUB_CONFIG`), no `WSHUB_CONFIG` variable even empty, and no variable the
/// configuration reads, `WSHUB__*` in any case (it matches names case-insensitively).
/// `vars` is the process environment.
pub fn unconfigured(
    config: Option<&Path>,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> bool {
    config.is_none()
        && !vars.into_iter().any(|(name, _)| {
            let name = name.to_string_lossy().to_ascii_uppercase();
            name == "WSHUB_CONFIG" || name.starts_with("WSHUB__")
        })
}

/// The warning for development mode on `listen` when other machines can reach it: anyone
/// there gets the demo page, and the banner's secret and API key are one terminal away.
pub fn exposure_warning(listen: SocketAddr) -> Option<String> {
    (!listen.ip().is_loopback()).then(|| {
        format!(
            "development mode is listening on {listen}, which is not a loopback address: \
             anyone who can reach it gets the demo page, and its invented secrets are in this \
             process's output; use it only on a machine or network of your own"
        )
    })
}

/// Invents an HS256 secret and an API key, and returns the banner that explains them.
pub fn prepare(settings: &mut Settings) -> anyhow::Result<String> {
    let secret = random_hex(32);
    settings.auth.hs256_secrets = vec![Secret(secret.clone())];
    // A configured API key is kept (and not printed); otherwise one is invented.
    let api_key = if settings.auth.api_keys.is_empty() {
        let key = random_hex(16);
        settings.auth.api_keys = vec![Secret(key.clone())];
        key
    } else {
        "(the configured auth.api_keys)".to_owned()
    };
    settings.server.demo = true;
    let token = JwtSigner::hs256(secret.as_bytes()).sign(&Claims::new(
        "dev-user",
        ["*"],
        Duration::from_secs(24 * 3600),
    ))?;
    let addr = settings.server.listen;
    Ok(format!(
        "\n\
         ==================== wshub development mode ====================\n\
         Nothing configured (or --dev), so this run invented a secret.\n\
         Tokens minted with it stop working when the process exits.\n\
         \n\
         HS256 secret : {secret}\n\
         API key      : {api_key}\n\
         Sample token (user dev-user, every project, 24 h):\n\
         {token}\n\
         \n\
         Connect to project demo:\n\
         websocat -H 'Authorization: Bearer {token}' ws://{addr}/ws/projects/demo\n\
         node -e \"const ws = new WebSocket('ws://{addr}/ws/projects/demo', ['wshub.v1', 'wshub.bearer.{token}']); ws.onmessage = (e) => console.log(e.data); ws.onopen = () => ws.send(JSON.stringify({{type: 'publish', data: 'hello'}}))\"\n\
         \n\
         For production, write a config file (see docs/) with auth.hs256_secrets;\n\
         any configuration without a key is refused instead of starting this mode.\n\
         ================================================================\n"
    ))
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(names: &[&str]) -> Vec<(OsString, OsString)> {
        names.iter().map(|n| (n.into(), "x".into())).collect()
    }

    #[test]
    fn only_a_bare_run_is_unconfigured() {
        assert!(unconfigured(
            None,
            vars(&["PATH", "HOME", "RUST_LOG", "WSHUB_BENCH_SECRET"])
        ));
        assert!(!unconfigured(Some(Path::new("wshub.toml")), vars(&[])));
        for name in ["WSHUB__SERVER__LISTEN", "wshub__log__level", "WSHUB_CONFIG"] {
            assert!(!unconfigured(None, vars(&[name])), "{name}");
        }
    }

    #[test]
    fn non_loopback_development_mode_is_warned_about() {
        assert_eq!(exposure_warning("127.0.0.1:8080".parse().unwrap()), None);
        assert_eq!(exposure_warning("[::1]:8080".parse().unwrap()), None);
        for addr in ["0.0.0.0:8080", "[::]:8080", "192.0.2.7:8080"] {
            let warning = exposure_warning(addr.parse().unwrap()).expect(addr);
            assert!(warning.contains(addr), "{warning}");
        }
    }
}
