//! SPEC §3 and the abuse limits of §7 against the real binary: every bad handshake answered
//! before the upgrade (never a 101), tokens never in the logs, the handshake rate limit, key
//! rotation with SIGHUP, expiry on open connections, slowloris, API keys.
//!
//! Over 800 lines on purpose: the key-pair, token and raw-handshake helpers at the top
//! serve every test here, and the table of bad handshakes alone is some 270 lines.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use ws_auth::{Claims, JwtSigner};

use crate::harness::*;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "wshub";

/// A configuration with the test secret and API key, `auth` lines added to `[auth]`, and
/// further sections in `rest`.
fn config(level: &str, auth: &str, rest: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"{level}\"\n\n\
         [auth]\nhs256_secrets = [\"{SECRET}\"]\napi_keys = [\"{API_KEY}\"]\n{auth}\n\n{rest}\n"
    )
}

// === keys ===

/// A key pair in PEM: `(private, public)`.
struct Pair {
    private: String,
    public: String,
}

fn rsa_pair() -> Pair {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    Pair {
        private: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public: key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    }
}

fn ec_pair() -> Pair {
    let key = p256::SecretKey::random(&mut rsa::rand_core::OsRng);
    Pair {
        private: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public: key.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
    }
}

fn ed_pair() -> Pair {
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    Pair {
        private: key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public: key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    }
}

fn rsa_jwk(pair: &Pair, kid: &str) -> Value {
    use rsa::pkcs8::DecodePublicKey;
    let key = rsa::RsaPublicKey::from_public_key_pem(&pair.public).unwrap();
    serde_json::json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
        "n": b64url(&key.n().to_bytes_be()), "e": b64url(&key.e().to_bytes_be())})
}

fn ec_jwk(pair: &Pair, kid: &str) -> Value {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::DecodePublicKey;
    let point = p256::PublicKey::from_public_key_pem(&pair.public)
        .unwrap()
        .to_encoded_point(false);
    serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid,
        "x": b64url(point.x().unwrap()), "y": b64url(point.y().unwrap())})
}

fn ed_jwk(pair: &Pair, kid: &str) -> Value {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let key = ed25519_dalek::VerifyingKey::from_public_key_pem(&pair.public).unwrap();
    serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "x": b64url(key.as_bytes())})
}

/// Claims for user `u` on `projects`, from the configured issuer to the configured audience.
fn claims(projects: &[&str]) -> Claims {
    let mut claims = Claims::new("u", projects.iter().copied(), Duration::from_secs(3600));
    claims.iss = Some(ISSUER.to_owned());
    claims.aud = Some(AUDIENCE.to_owned());
    claims
}

fn sign_pem(private: &str, kid: Option<&str>, claims: &Claims) -> String {
    JwtSigner::from_pem(private.as_bytes())
        .unwrap()
        .kid(kid.map(str::to_owned))
        .sign(claims)
        .unwrap()
}

/// `wshub token`, as a developer would mint a token.
fn wshub_token(config: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .arg("--config")
        .arg(config)
        .args(["token", "--user", "u", "--project", "p"])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wshub token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

// === raw handshakes ===

/// The answer to a handshake, read off the socket.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends a WebSocket handshake for `target` with `headers`, from `from` (a loopback address)
/// when given, and reads the status line, the headers and, unless it is a 101, the body.
async fn handshake(
    addr: SocketAddr,
    from: Option<IpAddr>,
    target: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut stream = match from {
        Some(ip) => {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
            socket.connect(addr).await.unwrap()
        }
        None => TcpStream::connect(addr).await.unwrap(),
    };
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::timeout(STEP, read_reply(&mut stream))
        .await
        .expect("no answer to the handshake")
}

async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before the answer: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(raw[..head_end].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[head_end + 4..].to_vec();
    if status != 101 {
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        while body.len() < length {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&buf[..n]);
        }
    }
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

const LOCALHOST_2: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

// === the table ===

#[derive(Clone, Copy, Debug)]
enum Carrier {
    Header,
    Subprotocol,
    Query,
}

#[derive(Debug)]
enum Expect {
    Upgrade,
    /// Status, `error` code, a part of `message`.
    Refused(u16, &'static str, &'static str),
}

struct Case {
    name: &'static str,
    token: Option<String>,
    carrier: Carrier,
    origin: Option<&'static str>,
    expect: Expect,
}

fn case(name: &'static str, token: Option<String>, expect: Expect) -> Case {
    Case {
        name,
        token,
        carrier: Carrier::Header,
        origin: None,
        expect,
    }
}

async fn run_case(server: &Server, case: &Case) {
    let bearer;
    let protocols;
    let mut headers: Vec<(&str, &str)> = Vec::new();
    let mut target = "/ws/projects/p".to_owned();
    if let Some(token) = &case.token {
        match case.carrier {
            Carrier::Header => {
                bearer = format!("Bearer {token}");
                headers.push(("authorization", &bearer));
            }
            Carrier::Subprotocol => {
                protocols = format!("wshub.v1, wshub.bearer.{token}");
                headers.push(("sec-websocket-protocol", &protocols));
            }
            Carrier::Query => target = format!("{target}?access_token={token}"),
        }
    }
    if let Some(origin) = case.origin {
        headers.push(("origin", origin));
    }
    let reply = handshake(server.addr, None, &target, &headers).await;
    let name = case.name;
    match case.expect {
        Expect::Upgrade => {
            assert_eq!(reply.status, 101, "{name}: {reply:?}");
            // The subprotocol answer is `wshub.v1`, never the token entry.
            let selected = reply.header("sec-websocket-protocol");
            match case.carrier {
                Carrier::Subprotocol => assert_eq!(selected, Some("wshub.v1"), "{name}"),
                _ => assert_eq!(selected, None, "{name}"),
            }
        }
        Expect::Refused(status, code, message) => {
            assert_ne!(reply.status, 101, "{name}: upgraded");
            let json = reply.json();
            assert_eq!(
                (reply.status, json["error"].as_str()),
                (status, Some(code)),
                "{name}: {reply:?}"
            );
            assert!(
                json["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(message)),
                "{name}: {json}"
            );
            if status == 401 {
                assert!(
                    reply
                        .header("www-authenticate")
                        .is_some_and(|c| c.starts_with("Bearer")),
                    "{name}: {reply:?}"
                );
            }
            if let Some(token) = &case.token {
                assert!(
                    !reply.body.contains(token.as_str()),
                    "{name}: token in the body"
                );
                assert!(
                    reply
                        .headers
                        .iter()
                        .all(|(_, v)| !v.contains(token.as_str())),
                    "{name}: token in a header"
                );
            }
        }
    }
}

/// Every way a handshake can be refused before the upgrade, and every carrier and key type
/// that succeeds; the whole run logged at `trace`, and no token may appear in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_handshake_is_refused_before_the_upgrade_and_no_token_is_logged() {
    let dir = TempDir::new();
    let (rsa1, rsa2, ec, ed) = (rsa_pair(), rsa_pair(), ec_pair(), ed_pair());
    std::fs::write(dir.0.join("rsa-1.pem"), &rsa1.public).unwrap();
    let jwks = serde_json::json!({"keys": [
        rsa_jwk(&rsa2, "rsa-2"), ec_jwk(&ec, "ec-1"), ed_jwk(&ed, "ed-1"),
    ]});
    std::fs::write(dir.0.join("jwks.json"), jwks.to_string()).unwrap();
    for (name, pair) in [("rsa2", &rsa2), ("ec", &ec), ("ed", &ed)] {
        std::fs::write(dir.0.join(format!("{name}.key")), &pair.private).unwrap();
    }
    let auth = format!(
        "public_key_files = [{{ path = \"rsa-1.pem\", kid = \"rsa-1\" }}]\njwks_file = \"jwks.json\"\n\
         issuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n\
         allowed_origins = [\"https://app.example.com\", \"*.example.org\"]"
    );
    let keys_dir = dir.0.clone();
    let server = Server::start_in(
        dir,
        &config("trace", &auth, "[limits]\nhandshake_rate_per_ip = 1000"),
    );

    let good = JwtSigner::hs256(SECRET).sign(&claims(&["p"])).unwrap();
    let with = |edit: &dyn Fn(&mut Claims)| {
        let mut c = claims(&["p"]);
        edit(&mut c);
        JwtSigner::hs256(SECRET).sign(&c).unwrap()
    };
    let now = Claims::new("u", ["p"], Duration::ZERO).exp;
    let alg_none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(serde_json::to_string(&claims(&["p"])).unwrap().as_bytes())
    );
    let config_path = server.config_path();
    let key = |name: &str| keys_dir.join(name).display().to_string();

    use Expect::{Refused, Upgrade};
    let mut cases = vec![
        case(
            "no token",
            None,
            Refused(401, "missing_token", "no bearer token"),
        ),
        case(
            "malformed token",
            Some("not-a-jwt".to_owned()),
            Refused(401, "invalid_token", "malformed token"),
        ),
        case(
            "bad signature",
            Some(
                JwtSigner::hs256("another-secret-0123456789")
                    .sign(&claims(&["p"]))
                    .unwrap(),
            ),
            Refused(401, "invalid_token", "signature does not match"),
        ),
        case(
            "expired",
            Some(with(&|c| c.exp = now - 3600)),
            Refused(401, "invalid_token", "token expired"),
        ),
        case(
            "nbf in the future",
            Some(with(&|c| c.nbf = Some(now + 3600))),
            Refused(401, "invalid_token", "token not yet valid"),
        ),
        case(
            "wrong iss",
            Some(with(&|c| c.iss = Some("https://elsewhere.test".to_owned()))),
            Refused(401, "invalid_token", "wrong issuer"),
        ),
        case(
            "no iss",
            Some(with(&|c| c.iss = None)),
            Refused(401, "invalid_token", "wrong issuer"),
        ),
        case(
            "wrong aud",
            Some(with(&|c| c.aud = Some("billing".to_owned()))),
            Refused(401, "invalid_token", "wrong audience"),
        ),
        case(
            "alg none",
            Some(alg_none),
            Refused(401, "invalid_token", "algorithm not allowed"),
        ),
        case(
            "HS256 signed with the RS public key",
            Some(
                JwtSigner::hs256(rsa1.public.as_bytes())
                    .kid(Some("rsa-1".to_owned()))
                    .sign(&claims(&["p"]))
                    .unwrap(),
            ),
            Refused(401, "invalid_token", "signature does not match"),
        ),
        case(
            "unknown kid",
            Some(sign_pem(&rsa1.private, Some("rsa-9"), &claims(&["p"]))),
            Refused(401, "invalid_token", "unknown key id"),
        ),
        case(
            "no kid with several RSA keys",
            Some(sign_pem(&rsa1.private, None, &claims(&["p"]))),
            Refused(401, "invalid_token", "no kid"),
        ),
        case(
            "kid of another key",
            Some(sign_pem(&rsa1.private, Some("rsa-2"), &claims(&["p"]))),
            Refused(401, "invalid_token", "signature does not match"),
        ),
        case(
            "token for another project",
            Some(JwtSigner::hs256(SECRET).sign(&claims(&["q"])).unwrap()),
            Refused(403, "forbidden", "project p"),
        ),
        case(
            "20 KiB token",
            Some("x".repeat(20 * 1024)),
            Refused(401, "invalid_token", "token too large"),
        ),
        Case {
            origin: Some("https://evil.example"),
            ..case(
                "forbidden Origin",
                Some(good.clone()),
                Refused(403, "origin_not_allowed", "origin not allowed"),
            )
        },
        Case {
            origin: Some("https://example.org"),
            ..case(
                "bare domain of a *. pattern",
                Some(good.clone()),
                Refused(403, "origin_not_allowed", "origin not allowed"),
            )
        },
        Case {
            origin: Some("https://evil.example"),
            ..case(
                "forbidden Origin comes before the missing token",
                None,
                Refused(403, "origin_not_allowed", "origin not allowed"),
            )
        },
        Case {
            carrier: Carrier::Query,
            ..case(
                "bad token in the query",
                Some(with(&|c| c.exp = now - 3600)),
                Refused(401, "invalid_token", "token expired"),
            )
        },
        Case {
            carrier: Carrier::Subprotocol,
            ..case(
                "bad token in the subprotocol",
                Some(with(&|c| c.aud = None)),
                Refused(401, "invalid_token", "wrong audience"),
            )
        },
        case(
            "token in the Authorization header",
            Some(good.clone()),
            Upgrade,
        ),
        Case {
            carrier: Carrier::Subprotocol,
            ..case("token in the subprotocol", Some(good.clone()), Upgrade)
        },
        Case {
            carrier: Carrier::Query,
            ..case("token in the query", Some(good.clone()), Upgrade)
        },
        Case {
            origin: Some("https://app.example.com"),
            ..case("allowed exact Origin", Some(good.clone()), Upgrade)
        },
        Case {
            origin: Some("https://eu.app.example.org"),
            ..case("allowed *. Origin", Some(good.clone()), Upgrade)
        },
        case(
            "RS256 from a PEM file",
            Some(sign_pem(&rsa1.private, Some("rsa-1"), &claims(&["p"]))),
            Upgrade,
        ),
        // Minted by `wshub token --alg --key`, verified with the keys of the JWKS.
        case(
            "RS256 from the JWKS (wshub token)",
            Some(wshub_token(
                &config_path,
                &[
                    "--alg",
                    "RS256",
                    "--key",
                    &key("rsa2.key"),
                    "--kid",
                    "rsa-2",
                ],
            )),
            Upgrade,
        ),
        case(
            "ES256 from the JWKS (wshub token)",
            Some(wshub_token(
                &config_path,
                &["--alg", "ES256", "--key", &key("ec.key"), "--kid", "ec-1"],
            )),
            Upgrade,
        ),
        case(
            "EdDSA from the JWKS (wshub token)",
            Some(wshub_token(
                &config_path,
                &["--key", &key("ed.key"), "--kid", "ed-1"],
            )),
            Upgrade,
        ),
        case(
            "HS256 (wshub token)",
            Some(wshub_token(&config_path, &[])),
            Upgrade,
        ),
    ];
    // A key of one type under the kid of another: checked with the kid's key, and fails.
    cases.push(case(
        "ES256 token naming the EdDSA kid",
        Some(sign_pem(&ec.private, Some("ed-1"), &claims(&["p"]))),
        Refused(401, "invalid_token", "unknown key id"),
    ));

    for case in &cases {
        run_case(&server, case).await;
    }

    // The logs of the whole run: trace level, rejections logged, and no token text anywhere.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = server.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("rejected request") && l.contains("invalid_token")),
        "rejections are logged at debug"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains(r#""level":"TRACE""#) || l.contains(r#""level":"DEBUG""#))
    );
    for case in &cases {
        let Some(token) = &case.token else { continue };
        let mut needles = vec![token.as_str()];
        let signature = token.rsplit('.').next().unwrap_or("");
        if signature.len() >= 16 {
            needles.push(signature);
        }
        if token.len() > 64 {
            needles.push(&token[token.len() / 2..token.len() / 2 + 64]);
        }
        for needle in needles {
            let leaked: Vec<&String> = logs.iter().filter(|l| l.contains(needle)).collect();
            assert!(
                leaked.is_empty(),
                "{}: token text logged: {leaked:#?}",
                case.name
            );
        }
    }
}

#[tokio::test]
async fn origin_can_be_required() {
    let server = Server::start_in(
        TempDir::new(),
        &config(
            "debug",
            "allowed_origins = [\"https://app.example.com\"]\nrequire_origin = true",
            "",
        ),
    );
    let bearer = format!("Bearer {}", token("u", &["p"]));
    let reply = handshake(
        server.addr,
        None,
        "/ws/projects/p",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["error"].as_str()),
        (403, Some("origin_not_allowed")),
        "{reply:?}"
    );
    let reply = handshake(
        server.addr,
        None,
        "/ws/projects/p",
        &[
            ("authorization", &bearer),
            ("origin", "https://app.example.com"),
        ],
    )
    .await;
    assert_eq!(reply.status, 101, "{reply:?}");
    // Plain HTTP to the same path is still 426 first.
    let (status, _, _) = http(
        "GET",
        &server.http("/ws/projects/p"),
        &[("origin", "https://evil.example")],
        "",
    )
    .await;
    assert_eq!(status, 426);
}

// === rate limit ===

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_burst_from_one_ip_gets_429_and_another_ip_is_unaffected() {
    let server = Server::start("[limits]\nhandshake_rate_per_ip = 3\n");
    let good = bearer(&token("u", &["p"]));
    let bad = bearer("not-a-jwt");
    let from_a = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    // The burst: three go through, then 429 with Retry-After.
    let mut statuses = Vec::new();
    let limited = loop {
        let reply = handshake(
            server.addr,
            from_a,
            "/ws/projects/p",
            &[("authorization", &good)],
        )
        .await;
        statuses.push(reply.status);
        if reply.status != 101 {
            break reply;
        }
        assert!(statuses.len() <= 4, "never limited: {statuses:?}");
    };
    assert_eq!(statuses, [101, 101, 101, 429], "{limited:?}");
    assert_eq!(limited.json()["error"], "rate_limited", "{limited:?}");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{limited:?}");

    // Another address is unaffected.
    let other = handshake(
        server.addr,
        Some(LOCALHOST_2),
        "/ws/projects/p",
        &[("authorization", &good)],
    )
    .await;
    assert_eq!(other.status, 101, "{other:?}");

    // SPEC §3 order: over the limit, a bad token is still told 401 first...
    let reply = handshake(
        server.addr,
        from_a,
        "/ws/projects/p",
        &[("authorization", &bad)],
    )
    .await;
    assert_eq!(reply.status, 401, "{reply:?}");
    // ... until the address is a whole burst over: then 429 before any token is looked at.
    let mut shed = None;
    for _ in 0..4 {
        let reply = handshake(
            server.addr,
            from_a,
            "/ws/projects/p",
            &[("authorization", &bad)],
        )
        .await;
        if reply.status == 429 {
            shed = Some(reply);
            break;
        }
        assert_eq!(reply.status, 401, "{reply:?}");
    }
    let shed = shed.expect("a flood is shed before authentication");
    assert!(shed.header("retry-after").is_some(), "{shed:?}");

    // Waiting as told is enough.
    let wait: u64 = shed.header("retry-after").unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let reply = handshake(
        server.addr,
        from_a,
        "/ws/projects/p",
        &[("authorization", &good)],
    )
    .await;
    assert_eq!(reply.status, 101, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_counts_only_from_a_trusted_proxy() {
    let server = Server::start_in(
        TempDir::new(),
        &config(
            "debug",
            "trusted_proxies = [\"127.0.0.1\"]",
            "[limits]\nhandshake_rate_per_ip = 2",
        ),
    );
    let good = bearer(&token("u", &["p"]));
    let addr = server.addr;
    let send = |from: IpAddr, client: &'static str| {
        let good = good.clone();
        async move {
            let headers = [
                ("authorization", good.as_str()),
                ("x-forwarded-for", client),
            ];
            handshake(addr, Some(from), "/ws/projects/p", &headers)
                .await
                .status
        }
    };
    let proxy = IpAddr::V4(Ipv4Addr::LOCALHOST);

    // Through the trusted proxy, each forwarded client has its own bucket.
    assert_eq!(send(proxy, "203.0.113.7").await, 101);
    assert_eq!(send(proxy, "203.0.113.7").await, 101);
    assert_eq!(send(proxy, "203.0.113.7").await, 429);
    assert_eq!(send(proxy, "203.0.113.8").await, 101);
    // A client-supplied hop left of the proxy's entry changes nothing.
    assert_eq!(send(proxy, "198.51.100.1, 203.0.113.7").await, 429);

    // From an untrusted peer the header is ignored: the peer's own bucket, whatever it claims.
    assert_eq!(send(LOCALHOST_2, "203.0.113.20").await, 101);
    assert_eq!(send(LOCALHOST_2, "203.0.113.21").await, 101);
    assert_eq!(send(LOCALHOST_2, "203.0.113.22").await, 429);
}

// === key rotation ===

async fn ping_pong(ws: &mut Ws) {
    ws.send(Message::Ping(b"alive?".to_vec().into()))
        .await
        .unwrap();
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("no pong in time")
            .expect("stream ended")
            .expect("read error");
        match msg {
            Message::Pong(payload) if &payload[..] == b"alive?" => return,
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_with_sighup_and_open_connections_stay_open() {
    const NEW_SECRET: &str = "integration-new-secret-0123456789";
    let dir = TempDir::new();
    let (old, new) = (rsa_pair(), rsa_pair());
    std::fs::write(dir.0.join("old.pem"), &old.public).unwrap();
    std::fs::write(dir.0.join("new.pem"), &new.public).unwrap();
    let toml = |secrets: &str, files: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n\
             [auth]\nhs256_secrets = [{secrets}]\napi_keys = [\"{API_KEY}\"]\npublic_key_files = [{files}]\n"
        )
    };
    let both_files = r#"{ path = "old.pem", kid = "old" }, { path = "new.pem", kid = "new" }"#;
    let server = Server::start_in(
        dir,
        &toml(&format!("\"{SECRET}\", \"{NEW_SECRET}\""), both_files),
    );
    let claims = Claims::new("u", ["p"], Duration::from_secs(3600));
    let old_rs = sign_pem(&old.private, Some("old"), &claims);
    let new_rs = sign_pem(&new.private, Some("new"), &claims);
    let old_hs = JwtSigner::hs256(SECRET).sign(&claims).unwrap();
    let new_hs = JwtSigner::hs256(NEW_SECRET).sign(&claims).unwrap();

    // While both are configured, both work.
    let mut open = Vec::new();
    for token in [&old_rs, &new_rs, &old_hs, &new_hs] {
        let mut ws = try_connect(&server.url("p"), Some(token)).await.unwrap();
        assert_eq!(recv_json(&mut ws).await["type"], "welcome");
        open.push(ws);
    }

    // Rotate: drop the old key and the old secret, then SIGHUP.
    std::fs::write(
        server.config_path(),
        toml(
            &format!("\"{NEW_SECRET}\""),
            r#"{ path = "new.pem", kid = "new" }"#,
        ),
    )
    .unwrap();
    server.hangup();
    server
        .wait_for_log("the reload", |l| l.contains("SIGHUP: keys reloaded"))
        .await;

    let url = "/ws/projects/p";
    for (token, message) in [
        (&old_rs, "unknown key id"),
        (&old_hs, "signature does not match"),
    ] {
        let reply = handshake(server.addr, None, url, &[("authorization", &bearer(token))]).await;
        assert_eq!(
            (reply.status, reply.json()["message"].as_str()),
            (401, Some(message)),
            "{reply:?}"
        );
    }
    for token in [&new_rs, &new_hs] {
        let reply = handshake(server.addr, None, url, &[("authorization", &bearer(token))]).await;
        assert_eq!(reply.status, 101, "{reply:?}");
    }
    // Connections opened with the removed keys are still open.
    for ws in &mut open {
        ping_pong(ws).await;
    }

    // A broken configuration keeps the keys in use.
    std::fs::write(
        server.config_path(),
        "[auth]\npublic_key_files = [\"missing.pem\"]\n",
    )
    .unwrap();
    server.hangup();
    server
        .wait_for_log("the failed reload", |l| {
            l.contains("keeping the previous keys")
        })
        .await;
    let reply = handshake(
        server.addr,
        None,
        url,
        &[("authorization", &bearer(&new_rs))],
    )
    .await;
    assert_eq!(reply.status, 101, "{reply:?}");
    for ws in &mut open {
        ping_pong(ws).await;
    }
}

// === expiry on open connections ===

#[tokio::test]
async fn an_open_connection_is_closed_with_4001_when_its_token_expires() {
    let server = Server::start_in(TempDir::new(), &config("debug", "leeway = \"0s\"", ""));
    let started = Instant::now();
    let token = token_ttl("u", &["p"], Duration::from_secs(2));
    let mut ws = try_connect(&server.url("p"), Some(&token)).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["type"], "welcome");
    let (code, reason, _) = recv_close(&mut ws).await;
    let lived = started.elapsed();
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
    // `exp` is in whole seconds: the token had between 1 and 2 seconds left.
    assert!(
        lived >= Duration::from_millis(900) && lived <= Duration::from_millis(3500),
        "closed after {lived:?}"
    );
}

#[tokio::test]
async fn expiry_enforcement_can_be_turned_off() {
    let server = Server::start_in(
        TempDir::new(),
        &config("debug", "leeway = \"0s\"\nenforce_expiry = false", ""),
    );
    let token = token_ttl("u", &["p"], Duration::from_secs(1));
    let mut ws = try_connect(&server.url("p"), Some(&token)).await.unwrap();
    assert_eq!(recv_json(&mut ws).await["type"], "welcome");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ping_pong(&mut ws).await;
}

// === slowloris ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_headers_a_byte_a_second_is_dropped_after_the_handshake_timeout() {
    let server = Server::start("[timeouts]\nhandshake = \"1s\"\n");
    let request = format!(
        "GET /ws/projects/p HTTP/1.1\r\nhost: {}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n",
        server.addr
    );
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let slow_client = tokio::spawn(async move {
        let mut sent = 0;
        for byte in request.bytes() {
            if slow.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            // Between bytes, see whether the server hung up.
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return (sent, started.elapsed(), Vec::new()),
                Ok(Ok(n)) => {
                    // An answer (a 408, say) is fine as long as it is not a 101; then EOF.
                    let answer = buf[..n].to_vec();
                    let mut rest = Vec::new();
                    let _ = tokio::time::timeout(STEP, slow.read_to_end(&mut rest)).await;
                    return (sent, started.elapsed(), answer);
                }
                Err(_) => {}
            }
        }
        panic!(
            "the slow client sent {sent} bytes over {:?} and was never dropped",
            started.elapsed()
        );
    });

    // Meanwhile normal clients connect.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut ws, _) = join(&server, "p", "normal").await;
    ping_pong(&mut ws).await;

    let (sent, after, answer) = slow_client.await.unwrap();
    assert!(
        after >= Duration::from_millis(900) && after <= Duration::from_secs(4),
        "dropped after {after:?} and {sent} bytes"
    );
    assert!(sent < 10, "{sent} bytes accepted");
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains(" 101 "), "{answer}");
    // Still serving.
    let (_ws, _) = join(&server, "p", "after").await;
}

// === API keys ===

#[tokio::test]
async fn the_http_api_needs_a_configured_key() {
    const HASHED_KEY: &str = "integration-hashed-api-key";
    let hashed = ws_auth::ApiKeyLayer::hash_key(HASHED_KEY);
    let server = Server::start_in(
        TempDir::new(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\n\
             [auth]\nhs256_secrets = [\"{SECRET}\"]\napi_keys = [\"{API_KEY}\", \"{hashed}\"]\n"
        ),
    );
    let url = server.http("/api/projects/p/messages");
    let body = r#"{"data":1}"#;
    for (auth, status, code) in [
        (None, 401, Some("missing_api_key")),
        (Some("Basic dTpw".to_owned()), 401, Some("missing_api_key")),
        (
            Some("Bearer wrong-key".to_owned()),
            401,
            Some("invalid_api_key"),
        ),
        (
            Some(format!("Bearer {hashed}")),
            401,
            Some("invalid_api_key"),
        ),
        (Some(format!("Bearer {API_KEY}")), 202, None),
        (Some(format!("Bearer {HASHED_KEY}")), 202, None),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let (got, reply_headers, reply) = http("POST", &url, &headers, body).await;
        assert_eq!(got, status, "{auth:?}: {reply}");
        if let Some(code) = code {
            let json: Value = serde_json::from_str(&reply).unwrap();
            assert_eq!(json["error"], code, "{auth:?}");
            assert!(reply_headers.contains(&("www-authenticate".to_owned(), "Bearer".to_owned())));
            assert!(!reply.contains("wrong-key"));
        }
    }
    assert!(
        server
            .logs()
            .iter()
            .all(|l| !l.contains(API_KEY) && !l.contains(HASHED_KEY)),
        "an API key was logged"
    );
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let server = Server::start("");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /ws/projects/p HTTP/1.1\r\nhost: {}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         authorization: Bearer {}\r\nx-pad: {}\r\n\r\n",
        server.addr,
        token("u", &["p"]),
        "a".repeat(100 * 1024)
    );
    // The server may stop reading (and reset) before the whole head is written.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(STEP, stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains(" 101 "), "upgraded: {answer}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    // Still serving.
    let (_ws, _) = join(&server, "p", "after").await;
}
