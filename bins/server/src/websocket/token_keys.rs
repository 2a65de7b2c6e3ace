//! The user-token keys of `[auth]`: building the verifier, reloading it on SIGHUP, and minting
//! test tokens for `wshub token`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ws_auth::{Algorithm, Claims, JwtSigner, JwtVerifier, SharedVerifier};

use crate::config::Settings;

/// The verifier `[auth]` describes: HS256 secrets, public keys in PEM, a JWKS, issuer,
/// audience and leeway. Reads the key files.
///
/// # Errors
///
/// A key file that cannot be read or parsed, named by its configuration key and path.
pub fn verifier(settings: &Settings) -> anyhow::Result<JwtVerifier> {
    let auth = &settings.auth;
    let mut verifier = JwtVerifier::hs256(auth.hs256_secrets.iter().map(|s| s.0.clone()))
        .issuer(auth.issuer.clone())
        .audience(auth.audience.clone())
        .leeway(auth.leeway);
    for (i, file) in auth.public_key_files.iter().enumerate() {
        let path = settings.resolve(file.path());
        let key = format!("auth.public_key_files[{i}] ({})", path.display());
        let pem = std::fs::read(&path).with_context(|| format!("{key}: reading the file"))?;
        verifier
            .add_public_key_pem(&pem, file.kid().map(str::to_owned))
            .context(key)?;
    }
    if let Some(jwks) = &auth.jwks_file {
        let path = settings.resolve(jwks);
        let key = format!("auth.jwks_file ({})", path.display());
        let json = std::fs::read(&path).with_context(|| format!("{key}: reading the file"))?;
        verifier.add_jwks(&json).context(key)?;
    }
    Ok(verifier)
}

/// The keys of `verifier` for a log line: `HS256, RS256 kid=2025, ...`; never key material.
pub fn describe(verifier: &JwtVerifier) -> String {
    let mut out = String::new();
    for (alg, kid) in verifier.key_ids() {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{alg:?}");
        if let Some(kid) = kid {
            let _ = write!(out, " kid={kid}");
        }
    }
    out
}

/// Reloads the keys on every SIGHUP: reads the configuration file again, builds a new verifier
/// and swaps it into `shared`. Open connections are not touched; the new keys apply from the
/// next handshake. A reload that fails, or that would leave no key, keeps the previous keys.
///
/// The handler is installed before this returns, so a SIGHUP sent after start-up never takes
/// the default action (terminating the process).
pub fn reload_on_hangup(source: Option<PathBuf>, shared: SharedVerifier) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match &source {
                    Some(path) => reload(path, &shared),
                    None => tracing::warn!(
                        "SIGHUP received, but wshub was started without --config: nothing to reload"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (source, shared);
    Ok(())
}

fn reload(path: &Path, shared: &SharedVerifier) {
    let loaded = Settings::load(Some(path)).and_then(|settings| verifier(&settings));
    match loaded {
        Ok(verifier) if verifier.is_empty() => tracing::warn!(
            config = %path.display(),
            "SIGHUP: the configuration has no keys left; keeping the previous keys"
        ),
        Ok(verifier) => {
            let keys = describe(&verifier);
            shared.replace(verifier);
            tracing::info!(config = %path.display(), keys = %keys, "SIGHUP: keys reloaded");
        }
        Err(error) => tracing::warn!(
            config = %path.display(),
            error = format!("{error:#}"),
            "SIGHUP: reloading the keys failed; keeping the previous keys"
        ),
    }
}

/// What `wshub token` was asked for.
#[derive(Debug)]
pub struct MintRequest<'a> {
    pub claims: Claims,
    /// `None`: the key's algorithm (HS256 without `key`).
    pub alg: Option<Algorithm>,
    /// A private key in PEM, or a file holding an HS256 secret with `alg = HS256`; `None`: the
    /// first of `auth.hs256_secrets`.
    pub key: Option<&'a Path>,
    pub kid: Option<String>,
}

/// Mints the token `request` describes, with the issuer and audience of `settings`.
///
/// # Errors
///
/// No key to sign with, a key file that cannot be read, or an algorithm that does not fit
/// the key.
pub fn mint(settings: &Settings, request: MintRequest<'_>) -> anyhow::Result<String> {
    let MintRequest {
        mut claims,
        alg,
        key,
        kid,
    } = request;
    claims.iss.clone_from(&settings.auth.issuer);
    claims.aud.clone_from(&settings.auth.audience);
    let signer = match (key, alg) {
        (None, None | Some(Algorithm::HS256)) => {
            let secret = settings.auth.hs256_secrets.first().context(
                "no auth.hs256_secrets configured: pass --config, set WSHUB__AUTH__HS256_SECRETS, \
                 or sign with --key",
            )?;
            JwtSigner::hs256(secret.0.as_bytes())
        }
        (None, Some(alg)) => bail!("--alg {alg:?} needs --key with a private key in PEM"),
        (Some(path), Some(Algorithm::HS256)) => {
            let secret = std::fs::read(path)
                .with_context(|| format!("--key {}: reading the file", path.display()))?;
            let secret = secret.trim_ascii_end();
            if secret.len() < 16 {
                bail!(
                    "--key {}: an HS256 secret has at least 16 bytes",
                    path.display()
                );
            }
            JwtSigner::hs256(secret)
        }
        (Some(path), alg) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("--key {}: reading the file", path.display()))?;
            let signer = JwtSigner::from_pem(&pem).with_context(|| {
                format!(
                    "--key {} (for an HS256 secret in a file, pass --alg HS256)",
                    path.display()
                )
            })?;
            if let Some(alg) = alg
                && alg != signer.algorithm()
            {
                bail!(
                    "--alg {alg:?} does not fit the key in {}, which signs {:?}",
                    path.display(),
                    signer.algorithm()
                );
            }
            signer
        }
    };
    Ok(signer.kid(kid).sign(&claims)?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{PublicKeyFile, Secret};

    fn settings(dir: &Path) -> Settings {
        let mut settings = Settings {
            source: Some(dir.join("wshub.toml")),
            ..Settings::default()
        };
        settings.auth.hs256_secrets = vec![Secret("secret-0123456789abcdef".to_owned())];
        settings
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wshub-keys-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn missing_and_broken_key_files_name_their_key() {
        let dir = temp_dir("broken");
        let mut s = settings(&dir);
        s.auth.public_key_files = vec![PublicKeyFile::Path("nope.pem".into())];
        let err = format!("{:#}", verifier(&s).unwrap_err());
        assert!(
            err.contains("auth.public_key_files[0]") && err.contains("nope.pem"),
            "{err}"
        );

        std::fs::write(dir.join("junk.pem"), "junk").unwrap();
        s.auth.public_key_files = vec![PublicKeyFile::Path("junk.pem".into())];
        let err = format!("{:#}", verifier(&s).unwrap_err());
        assert!(err.contains("not PEM"), "{err}");

        s.auth.public_key_files.clear();
        std::fs::write(dir.join("jwks.json"), "{}").unwrap();
        s.auth.jwks_file = Some("jwks.json".into());
        let err = format!("{:#}", verifier(&s).unwrap_err());
        assert!(err.contains("auth.jwks_file"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn minting_with_the_configured_secret() {
        let dir = temp_dir("mint");
        let mut s = settings(&dir);
        s.auth.issuer = Some("backend".to_owned());
        let claims = Claims::new("alice", ["chat"], Duration::from_secs(60));
        let request = |alg, key, kid| MintRequest {
            claims: claims.clone(),
            alg,
            key,
            kid,
        };
        let token = mint(&s, request(None, None, None)).unwrap();
        let verified = verifier(&s).unwrap().verify(&token).unwrap();
        assert_eq!(verified.iss.as_deref(), Some("backend"));

        let err = mint(&s, request(Some(Algorithm::ES256), None, None)).unwrap_err();
        assert!(err.to_string().contains("--key"), "{err}");

        let secret_file = dir.join("secret");
        std::fs::write(&secret_file, "another-secret-0123456789\n").unwrap();
        let token = mint(
            &s,
            request(
                Some(Algorithm::HS256),
                Some(&secret_file),
                Some("k1".to_owned()),
            ),
        )
        .unwrap();
        let check =
            JwtVerifier::hs256(["another-secret-0123456789"]).issuer(Some("backend".to_owned()));
        assert!(check.verify(&token).is_ok());

        // A secret file without --alg HS256 is not a PEM key.
        let err = format!(
            "{:#}",
            mint(&s, request(None, Some(&secret_file), None)).unwrap_err()
        );
        assert!(err.contains("--alg HS256"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn describe_names_algorithms_and_kids_only() {
        let v = JwtVerifier::hs256(["secret-0123456789abcdef"]);
        assert_eq!(describe(&v), "HS256");
    }
}
