//! `wshub`: a real-time WebSocket hub. See the README for the tour.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use server::config::Settings;

/// jemalloc's background thread gives freed memory back to the system, so RSS falls after
/// a wave of connections ends; glibc's per-thread arenas keep it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use server::{app, dev, signal, telemetry};

#[derive(Parser)]
#[command(
    name = "wshub",
    version,
    about = "A real-time WebSocket hub for projects"
)]
struct Cli {
    /// The TOML configuration file; every key can also be set as WSHUB__SECTION__KEY.
    #[arg(long, short, global = true, env = "WSHUB_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Mint a token with the configured HS256 secret, for tests and development.
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
    },
    /// Validate a configuration file without starting.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wshub: {e:#}");
            // 64 is EX_USAGE: configuration and usage errors, as linkerd does.
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(64)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Marks errors that are the operator's to fix in the configuration.
#[derive(Debug)]
struct ConfigError;

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("configuration error")
    }
}

impl std::error::Error for ConfigError {}

fn run(cli: Cli) -> anyhow::Result<()> {
    let load = |file: Option<&std::path::Path>| Settings::load(file).context(ConfigError);
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig { file } => {
            load(Some(&file))?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Token {
            user,
            projects,
            ttl,
        } => {
            let settings = load(cli.config.as_deref())?;
            let secret = settings
                .auth
                .hs256_secrets
                .first()
                .context("no auth.hs256_secrets configured: pass --config or set WSHUB__AUTH__HS256_SECRETS")
                .context(ConfigError)?;
            let mut claims = ws_auth::Claims::new(user, projects, ttl);
            claims.iss = settings.auth.issuer.clone();
            claims.aud = settings.auth.audience.clone();
            println!(
                "{}",
                ws_auth::JwtSigner::hs256(secret.0.as_bytes()).sign(&claims)?
            );
            Ok(())
        }
        Command::Serve => {
            let mut settings = load(cli.config.as_deref())?;
            telemetry::init(&settings.log).context(ConfigError)?;
            if settings.is_development() && cli.config.is_some() {
                return Err(anyhow::anyhow!(
                    "auth.hs256_secrets is empty: a configured server needs at least one secret \
                     (development mode, with invented secrets, is only for runs without --config)"
                ))
                .context(ConfigError);
            }
            if settings.is_development() {
                let banner = dev::prepare(&mut settings)?;
                println!("{banner}");
                tracing::warn!(
                    "development mode: invented secrets, demo on; do not use in production"
                );
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(app::run(settings, signal::shutdown()))
        }
    }
}
