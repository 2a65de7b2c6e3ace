//! Development mode: no configuration at all still gives a working, explained server.

use std::time::Duration;

use rand::Rng;
use ws_auth::{Claims, JwtSigner};

use crate::config::{Secret, Settings};

/// Invents an HS256 secret and an API key, and returns the banner that explains them.
pub fn prepare(settings: &mut Settings) -> anyhow::Result<String> {
    let secret = random_hex(32);
    let api_key = random_hex(16);
    settings.auth.hs256_secrets = vec![Secret(secret.clone())];
    if settings.auth.api_keys.is_empty() {
        settings.auth.api_keys = vec![Secret(api_key.clone())];
    }
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
         No auth.hs256_secrets configured, so this run invented a secret.\n\
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
         For production, write a config file (see docs/) with auth.hs256_secrets.\n\
         ================================================================\n"
    ))
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}
