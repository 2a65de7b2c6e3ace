//! The configuration reference: every key, its default, its environment variable and what
//! it does. `docs/configuration.md` is generated from it (`wshub config-reference` prints it;
//! `cargo test -p server` rewrites the file when it is stale, then fails so that the new file
//! gets committed), and the tests check it against the keys the configuration types actually
//! accept, so neither can drift.

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::Settings;

/// One key of the configuration.
#[derive(Debug)]
pub struct KeyDoc {
    /// `section.key`.
    pub key: &'static str,
    /// The default, read from `Settings::default()`.
    pub default: fn(&Settings) -> String,
    /// What it does.
    pub doc: &'static str,
}

fn d(duration: Duration) -> String {
    format!("\"{}\"", humantime::format_duration(duration))
}

fn opt<T: std::fmt::Display>(value: Option<&T>) -> String {
    value.map_or_else(|| "(unset)".to_owned(), |v| format!("\"{v}\""))
}

macro_rules! key {
    ($key:literal, |$s:ident| $default:expr, $doc:literal) => {
        KeyDoc {
            key: $key,
            default: |$s: &Settings| $default,
            doc: $doc,
        }
    };
}

/// The default of a `[namespaces.<name>]` key: the global key it overrides.
fn global(_: &Settings, key: &str) -> String {
    format!("({key})")
}

/// Every key, in the order of SPEC §7.
pub fn keys() -> Vec<KeyDoc> {
    vec![
        key!(
            "server.listen",
            |s| format!("\"{}\"", s.server.listen),
            "Address of the WebSocket endpoint and the HTTP API."
        ),
        key!(
            "server.metrics_listen",
            |s| opt(s.server.metrics_listen.as_ref()),
            "Address of a separate `/metrics` listener; when unset, `/metrics` is served on `server.listen`."
        ),
        key!(
            "server.demo",
            |s| s.server.demo.to_string(),
            "Serve the demo page at `/` and the JS client at `/client.js` (always on in development mode)."
        ),
        key!(
            "server.admin_page",
            |s| s.server.admin_page.to_string(),
            "Serve the operator's page at `/admin` (404 when off). The page holds no secret: it asks for an admin API key and sends it as a header to `/api/admin/*`."
        ),
        key!(
            "server.tls_cert_file",
            |s| opt(s.server.tls_cert_file.as_ref()),
            "PEM certificate chain: serve `https://`/`wss://` directly with rustls; reloaded on SIGHUP. Set together with `tls_key_file`."
        ),
        key!(
            "server.tls_key_file",
            |s| opt(s.server.tls_key_file.as_ref()),
            "PEM private key of `tls_cert_file`."
        ),
        key!(
            "server.shards",
            |s| s.server.shards.to_string(),
            "Hub shards (independent locks, keyed by project); 0 picks four per core."
        ),
        key!(
            "server.worker_threads",
            |s| s.server.worker_threads.to_string(),
            "Threads running connections; 0 picks one per CPU the process may use (its affinity and cgroup quota). 1 is tokio's single-threaded runtime: one FIFO run queue, fairer to every connection under overload, slower to finish a large fan-out (trade-off measured in docs/decisions.md)."
        ),
        key!(
            "auth.hs256_secrets",
            |_s| "[]".to_owned(),
            "HS256 secrets (at least 16 bytes each); several at once so secrets rotate without downtime. Empty with no other key: a start-up error (64), except in development mode, which starts only with no configuration at all (no file, no `WSHUB_CONFIG`, no `WSHUB__*` variable) or with `--dev`."
        ),
        key!(
            "auth.public_key_files",
            |_s| "[]".to_owned(),
            "RS256, ES256 or EdDSA public keys in PEM, as `\"path.pem\"` or `{ path = \"...\", kid = \"...\" }`; relative to the config file; reloaded on SIGHUP."
        ),
        key!(
            "auth.jwks_file",
            |s| opt(s.auth.jwks_file.as_ref().map(|p| p.display()).as_ref()),
            "A JWKS document whose keys are chosen by `kid`; reloaded on SIGHUP."
        ),
        key!(
            "auth.issuer",
            |s| opt(s.auth.issuer.as_ref()),
            "Required `iss` of user tokens, when set."
        ),
        key!(
            "auth.audience",
            |s| opt(s.auth.audience.as_ref()),
            "Required `aud` of user tokens, when set."
        ),
        key!(
            "auth.leeway",
            |s| d(s.auth.leeway),
            "Clock skew tolerated on `exp` and `nbf`."
        ),
        key!(
            "auth.allowed_origins",
            |_s| "[]".to_owned(),
            "Allowed `Origin`s (exact, or `*.example.com` patterns); empty: no Origin check. Others get `403 origin_not_allowed`."
        ),
        key!(
            "auth.require_origin",
            |s| s.auth.require_origin.to_string(),
            "Refuse handshakes without an `Origin` header (non-browser clients send none)."
        ),
        key!(
            "auth.allow_query_token",
            |s| s.auth.allow_query_token.to_string(),
            "Accept the token in the `access_token` query parameter (the query is never logged)."
        ),
        key!(
            "auth.api_keys",
            |_s| "[]".to_owned(),
            "Keys of the HTTP API (`Authorization: Bearer <key>`), as given or as `sha256:<hex>`."
        ),
        key!(
            "auth.admin_api_keys",
            |_s| "[]".to_owned(),
            "Keys of `/api/admin/*`, in the format of `auth.api_keys`; those routes take no other key. Empty: `auth.api_keys` open them too, and a warning says so at start-up."
        ),
        key!(
            "auth.enforce_expiry",
            |s| s.auth.enforce_expiry.to_string(),
            "Close open connections with 4001 when their token's `exp` (plus leeway) passes."
        ),
        key!(
            "auth.trusted_proxies",
            |_s| "[]".to_owned(),
            "Proxies (IPs or CIDR ranges) whose `X-Forwarded-For` names the client IP for the handshake rate limit."
        ),
        key!(
            "limits.max_connections",
            |s| s.limits.max_connections.to_string(),
            "Connections the server accepts; over it, 101 then close 1013 `server overloaded`."
        ),
        key!(
            "limits.max_connections_per_user",
            |s| s.limits.max_connections_per_user.to_string(),
            "Connections one user may hold, across projects; over it, close 1013 `too many connections for user`."
        ),
        key!(
            "limits.max_message_bytes",
            |s| s.limits.max_message_bytes.to_string(),
            "Largest message from a client (close 1009) or an HTTP publish (413)."
        ),
        key!(
            "limits.send_queue_frames",
            |s| s.limits.send_queue_frames.to_string(),
            "Frames a connection's send queue may hold before it is closed with 4008 (slow consumer)."
        ),
        key!(
            "limits.send_queue_bytes",
            |s| s.limits.send_queue_bytes.to_string(),
            "Bytes a connection's send queue may hold before it is closed with 4008."
        ),
        key!(
            "limits.client_publish_rate",
            |s| s.limits.client_publish_rate.to_string(),
            "Publishes per second per connection, bursts of twice as many; 0: unlimited. Over it, `rate_limited` error frames, then 1008."
        ),
        key!(
            "limits.client_request_rate",
            |s| s.limits.client_request_rate.to_string(),
            "Presence requests per second per connection, bursts of twice as many; 0: unlimited. Over it, `rate_limited` error frames, then 1008. Each answer lists the project's users, so it has a budget of its own; at most one answer waits per connection."
        ),
        key!(
            "limits.client_publishes_in_flight",
            |s| s.limits.client_publishes_in_flight.to_string(),
            "Publishes one connection may have in flight: sent to the broker without waiting for the previous answer, answered in order. At the bound the server reads nothing more from that connection until an answer is written (backpressure). Greater than 0; 1 answers each publish before reading the next."
        ),
        key!(
            "limits.max_subscriptions",
            |s| s.limits.max_subscriptions.to_string(),
            "Project subscriptions per v2 connection (`GET /ws`); over it, a `subscribe` is refused with `too_many_subscriptions` and a handshake query listing more with `400 invalid_query`."
        ),
        key!(
            "limits.handshake_rate_per_ip",
            |s| s.limits.handshake_rate_per_ip.to_string(),
            "Handshakes per second per client IP; over it, `429` with `Retry-After`."
        ),
        key!(
            "limits.allow_client_publish",
            |s| s.limits.allow_client_publish.to_string(),
            "Let clients publish over the WebSocket; otherwise only the HTTP API publishes."
        ),
        key!(
            "timeouts.ping_interval",
            |s| d(s.timeouts.ping_interval),
            "How often the server pings; under common load-balancer idle timeouts."
        ),
        key!(
            "timeouts.pong_timeout",
            |s| d(s.timeouts.pong_timeout),
            "No traffic for `ping_interval + pong_timeout` ends the connection (1001 `ping timeout`)."
        ),
        key!(
            "timeouts.write",
            |s| d(s.timeouts.write),
            "A write stuck longer than this drops the connection."
        ),
        key!(
            "timeouts.handshake",
            |s| d(s.timeouts.handshake),
            "Time to send the request headers (and finish TLS); slower clients are dropped (slowloris)."
        ),
        key!(
            "timeouts.close",
            |s| d(s.timeouts.close),
            "How long a server-initiated close waits for the client's close frame."
        ),
        key!(
            "presence.events",
            |s| s.presence.events.to_string(),
            "Send `join`/`leave` presence frames to the project's members."
        ),
        key!(
            "presence.max_members_for_events",
            |s| s.presence.max_members_for_events.to_string(),
            "Above this many members a project gets no join/leave frames (N joins would cost N² frames); the presence list stays available."
        ),
        key!(
            "history.size",
            |s| s.history.size.to_string(),
            "Messages kept per project for recovery and the history API."
        ),
        key!(
            "history.ttl",
            |s| d(s.history.ttl),
            "How long a message is kept."
        ),
        key!(
            "history.max_bytes",
            |s| s.history.max_bytes.to_string(),
            "Bytes of message frames kept per project; over it the oldest messages go, as for `history.size` (the newest is kept even when larger). A dropped message makes an older `since` unrecoverable (`recovered: false`)."
        ),
        key!(
            "history.max_total_bytes",
            |s| s.history.max_total_bytes.to_string(),
            "Bytes of history kept across all projects: per node with the memory broker, per deployment (`broker.key_prefix`) with Redis. Over it, the projects idle longest (no member, oldest last publish) are freed first (their clients get `recovered: false`), then the oldest messages of the least recently published projects go; it frees down to 7/8 of the budget. Exposed as `wshub_history_bytes`."
        ),
        key!(
            "broker.kind",
            |s| format!("\"{}\"", format!("{:?}", s.broker.kind).to_lowercase()),
            "`memory` (embedded, one process) or `redis` (several nodes share one order, history and presence)."
        ),
        key!(
            "broker.redis_url",
            |s| format!(
                "\"{}\"",
                s.broker
                    .redis_url
                    .as_ref()
                    .map_or(super::DEFAULT_REDIS_URL, |u| u.0.as_str())
            ),
            "`redis://[user:password@]host:port/db`, `rediss://` for TLS; redacted in logs. One Redis; set exactly one of `redis_url`, `redis_cluster` and `redis_sentinels`."
        ),
        key!(
            "broker.redis_cluster",
            |_s| "[]".to_owned(),
            "Seed nodes of a Redis Cluster (`[\"redis://[user:password@]host:port\", …]`, `rediss://` for TLS; redacted in logs), instead of `redis_url`: the other nodes are found from them. A project's keys share one hash slot and its messages go out on a sharded channel (`SPUBLISH`/`SSUBSCRIBE`, Redis 7+). See docs/operations.md."
        ),
        key!(
            "broker.redis_sentinels",
            |_s| "[]".to_owned(),
            "Sentinels (`[\"redis://[user:password@]host:26379\", …]`; redacted in logs), instead of `redis_url`: the master is asked of them (`SENTINEL get-master-addr-by-name`) at start and again whenever it stops answering as a master."
        ),
        key!(
            "broker.redis_sentinel_master",
            |s| format!("\"{}\"", s.broker.redis_sentinel_master),
            "The name the sentinels know the master by; required with `redis_sentinels`."
        ),
        key!(
            "broker.redis_sentinel_master_password",
            |_s| "\"\"".to_owned(),
            "The password (`requirepass`) of the master the sentinels name; empty: none. Redacted in logs. The sentinels' own passwords go in their URLs."
        ),
        key!(
            "broker.key_prefix",
            |s| format!("\"{}\"", s.broker.key_prefix),
            "Prefix of every Redis key and channel, so several deployments share one Redis."
        ),
        key!(
            "broker.pool_size",
            |s| s.broker.pool_size.to_string(),
            "Multiplexed Redis connections for commands; the pub/sub connection comes on top."
        ),
        key!(
            "broker.connect_timeout",
            |s| d(s.broker.connect_timeout),
            "Time allowed to connect to Redis."
        ),
        key!(
            "broker.command_timeout",
            |s| d(s.broker.command_timeout),
            "A Redis command slower than this counts as Redis being unavailable."
        ),
        key!(
            "broker.presence_ttl",
            |s| d(s.broker.presence_ttl),
            "A node's presence in Redis expires after this unless refreshed: a crashed node's users leave the cluster's presence within it."
        ),
        key!(
            "shutdown.drain",
            |s| d(s.shutdown.drain),
            "Closes with 1001 are spread over this window on SIGTERM; the process exits within drain + 2 s."
        ),
        key!(
            "log.format",
            |s| format!("\"{}\"", format!("{:?}", s.log.format).to_lowercase()),
            "`pretty` for people, `json` for machines."
        ),
        key!(
            "log.level",
            |s| format!("\"{}\"", s.log.level),
            "An `EnvFilter` directive such as `info` or `wshub=debug`; `RUST_LOG` wins when set."
        ),
        key!(
            "webhooks.url",
            |s| opt(s.webhooks.url.as_ref()),
            "Where membership events are POSTed (SPEC §14): `http://` or `https://` (checked against the system's root certificates). Unset: no webhooks. See docs/operations.md (Webhooks) for the body, the signature and a receiver."
        ),
        key!(
            "webhooks.secret",
            |s| if s.webhooks.secret.0.is_empty() {
                "(unset)".to_owned()
            } else {
                "(set)".to_owned()
            },
            "Required with `url`: the key of `X-Wshub-Signature: sha256=<hex HMAC-SHA256 of the body>`."
        ),
        key!(
            "webhooks.events",
            |s| format!("{:?}", s.webhooks.events),
            "Which events are sent: any of `project_occupied`, `project_vacated`, `user_joined`, `user_left`. With Redis each is decided once for the cluster and sent by one node."
        ),
        key!(
            "webhooks.retry_for",
            |s| d(s.webhooks.retry_for),
            "A failed request (no answer within `timeout`, refused, not a 2xx) is retried with exponential backoff (0.5 s doubling to 30 s, jittered) until its events are this old; then they are dropped and counted (`wshub_webhook_events_dropped_total{reason=\"expired\"}`)."
        ),
        key!(
            "webhooks.timeout",
            |s| d(s.webhooks.timeout),
            "One request's deadline: connecting, sending and the answer's status."
        ),
        key!(
            "webhooks.max_backlog",
            |s| s.webhooks.max_backlog.to_string(),
            "Events waiting behind the request in flight (one at a time, ≤ 100 events, sent after at most 1 s). Over it the oldest are dropped, logged and counted (`wshub_webhook_events_dropped_total{reason=\"backlog\"}`), so a dead receiver never grows memory."
        ),
        key!(
            "namespaces.<name>.history_size",
            |s| global(s, "history.size"),
            "For the projects of namespace `<name>` (the part of a project id before its first `:`, SPEC §12): messages of history kept per project. Every `[namespaces.<name>]` key is optional and defaults to the global key named in the default column; a project with no `:` is in no namespace."
        ),
        key!(
            "namespaces.<name>.history_ttl",
            |s| global(s, "history.ttl"),
            "For the projects of namespace `<name>`: how long messages (and idempotency keys) are kept."
        ),
        key!(
            "namespaces.<name>.presence",
            |s| global(s, "presence.events"),
            "For the projects of namespace `<name>`: whether members get join/leave frames."
        ),
        key!(
            "namespaces.<name>.max_members_for_events",
            |s| global(s, "presence.max_members_for_events"),
            "For the projects of namespace `<name>`: above this many members, no join/leave frames."
        ),
        key!(
            "namespaces.<name>.allow_client_publish",
            |s| global(s, "limits.allow_client_publish"),
            "For the projects of namespace `<name>`: whether clients may publish over the WebSocket (refused with `publish_not_allowed` otherwise); either way the backend's HTTP API may."
        ),
    ]
}

/// `docs/configuration.md`.
pub fn markdown() -> String {
    let defaults = Settings::default();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from `bins/server/src/config/reference.rs`: `cargo test -p server` regenerates this file when it is stale (and fails, so that the update gets committed).\n\
         Every key goes in the TOML file given with `wshub --config FILE` (see `wshub.example.toml`), \
         and every key can be overridden from the environment as `WSHUB__SECTION__KEY` (lists comma-separated).\n\
         Durations are strings like `\"25s\"` or `\"10m\"`; unknown keys are errors; `wshub check-config FILE` validates a file without starting.\n\n",
    );
    let mut section = "";
    for key in keys() {
        let (this, name) = key.key.split_once('.').unwrap_or(("", key.key));
        if this != section {
            if !section.is_empty() {
                out.push('\n');
            }
            section = this;
            let _ = write!(
                out,
                "## [{section}]\n\n| key | default | environment | what it does |\n|---|---|---|---|\n"
            );
        }
        let env = format!(
            "WSHUB__{}__{}",
            this.to_uppercase(),
            name.replace('.', "__").to_uppercase()
        );
        let _ = writeln!(
            out,
            "| `{name}` | `{}` | `{env}` | {} |",
            (key.default)(&defaults),
            key.doc
        );
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The fields serde accepts in `[section]`, read from its own "expected one of" message.
    fn accepted(section: &str) -> BTreeSet<String> {
        let toml = if section.is_empty() {
            "no_such_key_xyz = 1\n".to_owned()
        } else if section == "namespaces" {
            // A table of tables: the keys of one `[namespaces.<name>]`.
            "[namespaces.x]\nno_such_key_xyz = 1\n".to_owned()
        } else {
            format!("[{section}]\nno_such_key_xyz = 1\n")
        };
        let err = config::Config::builder()
            .add_source(config::File::from_str(&toml, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize::<Settings>()
            .unwrap_err()
            .to_string();
        // "unknown field `x`, expected one of `a`, `b`" / "expected `a` or `b`" / "expected `a`",
        // followed by " for key `section`".
        let expected = err
            .split_once(", expected")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("{err}"));
        let expected = expected.split(" for key").next().unwrap_or_default();
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_key_the_types_accept_is_documented_and_nothing_else() {
        let documented: BTreeSet<String> = keys().iter().map(|k| k.key.to_owned()).collect();
        let sections: BTreeSet<&str> = documented
            .iter()
            .filter_map(|k| k.split_once('.'))
            .map(|(s, _)| s)
            .collect();
        let mut accepted_keys = BTreeSet::new();
        for section in &sections {
            for field in accepted(section) {
                if *section == "namespaces" {
                    accepted_keys.insert(format!("{section}.<name>.{field}"));
                } else {
                    accepted_keys.insert(format!("{section}.{field}"));
                }
            }
        }
        assert_eq!(
            documented, accepted_keys,
            "reference.rs and config.rs disagree"
        );
        let top: BTreeSet<String> = sections.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(top, accepted(""), "a section is missing from the reference");
    }

    #[test]
    fn docs_configuration_md_is_fresh() {
        ensure_file_contents("docs/configuration.md", &markdown());
    }

    /// Leaves `file` (relative to the workspace root) alone when it holds `contents`; otherwise
    /// writes `contents` into it and fails, so a stale generated file is fixed by running the
    /// tests once and the failure says to commit the fix (rust-analyzer's `ensure_file_contents`).
    fn ensure_file_contents(file: &str, contents: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(file);
        if std::fs::read_to_string(&path).is_ok_and(|on_disk| on_disk == contents) {
            return;
        }
        if let Err(err) = std::fs::write(&path, contents) {
            panic!("{file} is stale, and writing the fresh one failed: {err}");
        }
        eprintln!("\nerror: {file} was not up to date, updated it\n");
        panic!("{file} was not up to date and has been updated: commit the updated file");
    }
}
