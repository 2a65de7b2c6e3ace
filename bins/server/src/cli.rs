//! The command line of `wshub`: `serve` (the default), `token`, `check-config` and
//! `config-reference`, and what each of them runs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::websocket::token_keys;
use crate::{app, dev, runtime, signal, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "wshub",
    version,
    about = "A real-time WebSocket hub for projects"
)]
pub struct Cli {
    /// The TOML configuration file; every key can also be set as WSHUB__SECTION__KEY.
    #[arg(long, short, global = true, env = "WSHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Development mode on purpose: invent an HS256 secret and an API key, turn the demo on.
    /// Without this flag it starts only when nothing at all is configured (no file, no
    /// WSHUB_CONFIG, no WSHUB__* variable), so a deployment that forgot its key fails instead.
    #[arg(long)]
    dev: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Mint a token for tests and development: HS256 with the configured secret, or
    /// RS256/ES256/EdDSA with a private key.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        user: String,
        /// A project the token grants; repeat for several, `*` for all.
        #[arg(long = "project", required = true)]
        projects: Vec<String>,
        /// How long the token lives, like "1h" or "90s".
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The algorithm; by default the key's (HS256 without --key).
        #[arg(long, value_enum, ignore_case = true)]
        alg: Option<Alg>,
        /// A private key in PEM (PKCS#8, PKCS#1 RSA or SEC1 EC), or with --alg HS256 a file
        /// holding the secret; by default the first of auth.hs256_secrets.
        #[arg(long)]
        key: Option<PathBuf>,
        /// The `kid` header, to pick a key when the server has several.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Validate a configuration file, and read its key files, without starting.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the configuration reference (docs/configuration.md) in Markdown.
    ConfigReference,
}

/// The algorithms `wshub token --alg` signs with.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Alg {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
}

impl From<Alg> for ws_auth::Algorithm {
    fn from(alg: Alg) -> Self {
        match alg {
            Alg::Hs256 => Self::HS256,
            Alg::Rs256 => Self::RS256,
            Alg::Es256 => Self::ES256,
            Alg::EdDsa => Self::EdDSA,
        }
    }
}

/// Marks errors that are the operator's to fix in the configuration.
#[derive(Debug)]
pub struct ConfigError;

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("configuration error")
    }
}

impl std::error::Error for ConfigError {}

impl Cli {
    /// Runs the subcommand (`serve` by default).
    ///
    /// # Errors
    ///
    /// Anything that stops it; errors the operator fixes in the configuration carry
    /// [`ConfigError`].
    pub fn run(self) -> anyhow::Result<()> {
        let load = |file: Option<&std::path::Path>| Settings::load(file).context(ConfigError);
        match self.command.unwrap_or(Command::Serve) {
            Command::ConfigReference => {
                print!("{}", crate::config::reference::markdown());
                Ok(())
            }
            Command::CheckConfig { file } => {
                let settings = load(Some(&file))?;
                token_keys::verifier(&settings).context(ConfigError)?;
                println!("{}: ok", file.display());
                Ok(())
            }
            Command::Token {
                user,
                projects,
                ttl,
                alg,
                key,
                kid,
            } => {
                let settings = load(self.config.as_deref())?;
                let request = token_keys::MintRequest {
                    claims: ws_auth::Claims::new(user, projects, ttl),
                    alg: alg.map(Into::into),
                    key: key.as_deref(),
                    kid,
                };
                println!(
                    "{}",
                    token_keys::mint(&settings, request).context(ConfigError)?
                );
                Ok(())
            }
            Command::Serve => {
                let mut settings = load(self.config.as_deref())?;
                telemetry::init(&settings.log).context(ConfigError)?;
                crate::rlimit::raise_nofile_limit();
                let development = match (self.dev, settings.is_development()) {
                    (true, true) => true,
                    // Invented secrets would silently replace the configured keys.
                    (true, false) => {
                        return Err(anyhow::anyhow!(
                            "--dev invents its own HS256 secret, but auth.hs256_secrets, \
                             auth.public_key_files or auth.jwks_file is configured: drop --dev, \
                             or the keys"
                        ))
                        .context(ConfigError);
                    }
                    // Anything configured means a deployment, which must not get invented secrets
                    // because it forgot its key: only a bare `wshub` is development mode.
                    (false, true)
                        if !dev::unconfigured(self.config.as_deref(), std::env::vars_os()) =>
                    {
                        return Err(anyhow::anyhow!(
                            "no token key configured: set auth.hs256_secrets, auth.public_key_files \
                             or auth.jwks_file (development mode, with invented secrets, starts only \
                             with no configuration at all or with --dev)"
                        ))
                        .context(ConfigError);
                    }
                    (false, development) => development,
                };
                // Key files are read again by the server; reading them here makes a bad one a
                // configuration error (exit 64) before anything starts.
                token_keys::verifier(&settings).context(ConfigError)?;
                if development {
                    let banner = dev::prepare(&mut settings)?;
                    println!("{banner}");
                    tracing::warn!(
                        "development mode: invented secrets, demo on; do not use in production"
                    );
                    if let Some(warning) = dev::exposure_warning(settings.server.listen) {
                        eprintln!("wshub: WARNING: {warning}");
                        tracing::warn!("{warning}");
                    }
                }
                let runtime = runtime::build(settings.server.worker_threads)?;
                runtime.block_on(app::run(settings, signal::shutdown()))
            }
        }
    }
}
