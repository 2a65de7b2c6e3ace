//! The bodies of the fuzz targets in `fuzz/`, here so that a unit test can run them over a
//! fixed corpus of nasty inputs on every `cargo test` (the fuzzer itself needs nightly flags
//! and time). Not part of the API: compiled for tests and with the `fuzz` feature only.
//!
//! Each function must return normally for every input; a panic is the bug the fuzzer looks
//! for.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AUTHORIZATION, ORIGIN, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderMap, HeaderValue, Uri};

use crate::client_ip::{TrustedProxies, X_FORWARDED_FOR, client_ip};
use crate::origin::CheckOriginLayer;
use crate::token::{find_token, redact_access_token};
use crate::verifier::{DEFAULT_LEEWAY, JwtVerifier};

/// A verifier with a key of every type, so every algorithm's path is reached. Only public
/// keys: nothing here can sign, so no input can verify (but each gets as far as it can).
fn verifier() -> &'static JwtVerifier {
    static VERIFIER: OnceLock<JwtVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let ed = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]).verifying_key();
        let ec = p256::SecretKey::from_slice(&[0x17; 32])
            .expect("a valid scalar")
            .public_key();
        let ec = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&ec, false);
        // An odd 2048-bit number: a well-formed RSA public key whose factors nobody knows.
        let mut n = [0xc5_u8; 256];
        n[255] = 0x01;
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let jwks = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(ed.as_bytes())},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "x": b64(ec.x().expect("uncompressed")), "y": b64(ec.y().expect("uncompressed"))},
            {"kty": "RSA", "kid": "rsa", "n": b64(&n), "e": "AQAB"},
            {"kty": "RSA", "kid": "rsa2", "alg": "RS256", "n": b64(&n), "e": "AQAB"},
        ]});
        let mut verifier = JwtVerifier::hs256(["fuzz-secret-0123456789"])
            .issuer(Some("fuzz".to_owned()))
            .audience(Some("wshub".to_owned()));
        verifier
            .add_jwks(jwks.to_string().as_bytes())
            .expect("the fuzz JWKS is valid");
        verifier
    })
}

/// Verifies `data` as a token, and as each of the three carriers would deliver it; an
/// accepted token's expiry is turned into a deadline as the server does.
pub fn token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(claims) = verifier().verify(&text) {
        deadline(&claims);
    }

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(&[b"Bearer ".as_slice(), data].concat()) {
        headers.insert(AUTHORIZATION, value);
    }
    if let Ok(value) =
        HeaderValue::from_bytes(&[b"wshub.v1, wshub.bearer.".as_slice(), data].concat())
    {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
    let uri = format!(
        "/ws/projects/p?access_token={}",
        percent_encoding::percent_encode(data, percent_encoding::NON_ALPHANUMERIC)
    );
    let uri: Uri = uri.parse().expect("percent-encoded query is a valid URI");
    let _ = redact_access_token(&uri);
    for allow_query in [true, false] {
        if let Ok((token, _)) = find_token(&headers, &uri, allow_query) {
            let _ = verifier().verify(&token);
        }
    }
    if let Ok((token, _)) = find_token(&HeaderMap::new(), &uri, true) {
        let _ = verifier().verify(&token);
    }
}

/// What the server makes of an accepted token's `exp`: the wall-clock deadline with the
/// leeway, then the monotonic one. A signed token may carry any `exp` up to `u64::MAX`, and
/// neither clock reaches that far, so every step must be checked (the fuzz seeds signed with
/// this verifier's secret, `fuzz/seeds/token/exp-*`, reach here).
fn deadline(claims: &crate::Claims) -> Option<Instant> {
    let at = claims.expires_at()?.checked_add(DEFAULT_LEEWAY)?;
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now().checked_add(left)
}

/// Feeds `data`, split at newlines, to the header parsers: `Origin`, `X-Forwarded-For`,
/// `Authorization`, `Sec-WebSocket-Protocol`, a request target, and the allow-list and
/// trusted-proxy configuration parsers.
pub fn headers(data: &[u8]) {
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let mut headers = HeaderMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Ok(value) = HeaderValue::from_bytes(line) else {
            continue;
        };
        let name = match i % 4 {
            0 => ORIGIN,
            1 => X_FORWARDED_FOR.clone(),
            2 => AUTHORIZATION,
            _ => SEC_WEBSOCKET_PROTOCOL,
        };
        headers.append(name, value);
    }

    static POLICIES: OnceLock<[CheckOriginLayer; 3]> = OnceLock::new();
    let policies = POLICIES.get_or_init(|| {
        [
            CheckOriginLayer::allow(["https://app.example.com", "*.example.org"])
                .expect("valid patterns"),
            CheckOriginLayer::allow(["http://[::1]:8080", "https://*.a.example.com:8443"])
                .expect("valid patterns")
                .require_origin(true),
            CheckOriginLayer::any(),
        ]
    });
    for policy in policies {
        let _ = policy.check(&headers);
    }

    static TRUSTED: OnceLock<TrustedProxies> = OnceLock::new();
    let trusted = TRUSTED.get_or_init(|| {
        TrustedProxies::parse(["10.0.0.0/8", "::1", "fd00::/8"]).expect("valid ranges")
    });
    for peer in [IpAddr::from([10, 0, 0, 1]), IpAddr::from([192, 0, 2, 1])] {
        let _ = client_ip(peer, &headers, trusted);
    }

    let uri: Uri = "/ws/projects/p".parse().expect("a valid URI");
    if let Ok((token, _)) = find_token(&headers, &uri, true) {
        let _ = verifier().verify(&token);
    }

    for line in &lines {
        let text = String::from_utf8_lossy(line);
        if let Ok(uri) = text.parse::<Uri>() {
            let _ = redact_access_token(&uri);
            if let Ok((token, _)) = find_token(&HeaderMap::new(), &uri, true) {
                let _ = verifier().verify(&token);
            }
        }
        let _ = CheckOriginLayer::allow([text.as_ref()]);
        let _ = TrustedProxies::parse([text.as_ref()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    /// Inputs a fuzzer would take a while to find, or that broke similar parsers elsewhere.
    fn corpus() -> Vec<Vec<u8>> {
        let big_header = format!(r#"{{"alg":"HS256","kid":"{}"}}"#, "k".repeat(10_000));
        let mut corpus: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b".".to_vec(),
            b"..".to_vec(),
            b"...".to_vec(),
            b"a.b.c".to_vec(),
            b"\0\0\0".to_vec(),
            vec![0xff; 64],
            "é.ü.ñ".as_bytes().to_vec(),
            "Bearer ".repeat(100).into_bytes(),
            "x".repeat(20 * 1024).into_bytes(),
            format!("{}.e30.", b64(r#"{"alg":"none"}"#)).into_bytes(),
            format!("{}.e30.", b64(r#"{"alg":"NONE"}"#)).into_bytes(),
            format!("{}.e30.AAAA", b64(r#"{"alg":"HS256","crit":["b64"]}"#)).into_bytes(),
            format!("{}.e30.AAAA", b64(r#"{"alg":"RS256"}"#)).into_bytes(),
            format!("{}.e30.AAAA", b64(r#"{"alg":"RS256","kid":"rsa"}"#)).into_bytes(),
            format!("{}.e30.AAAA", b64(r#"{"alg":"ES256","kid":"ec"}"#)).into_bytes(),
            format!("{}.e30.{}", b64(r#"{"alg":"ES256","kid":"ec"}"#), "A".repeat(86))
                .into_bytes(),
            format!("{}.e30.{}", b64(r#"{"alg":"EdDSA","kid":"ed"}"#), "A".repeat(86))
                .into_bytes(),
            format!("{}.e30.{}", b64(r#"{"alg":"EdDSA"}"#), "_".repeat(86)).into_bytes(),
            format!("{}.e30.AAAA", b64(r#"{"alg":"PS256"}"#)).into_bytes(),
            format!("{}.e30.AAAA", b64(r#"{"alg":"HS256","kid":null}"#)).into_bytes(),
            format!("{}.e30.AAAA", b64(r#"{"alg":["HS256"]}"#)).into_bytes(),
            format!("{}.e30.AAAA", b64(r#"{"alg":"HS256","alg":"none"}"#)).into_bytes(),
            format!("{}.e30.AAAA", b64(&big_header)).into_bytes(),
            format!(
                "{}.{}.AAAA",
                b64(r#"{"alg":"HS256"}"#),
                b64(r#"{"exp":1e400,"nbf":-1,"sub":7,"aud":["a","b"],"iss":{}}"#)
            )
            .into_bytes(),
            format!(
                "{}.{}.AAAA",
                b64(r#"{"alg":"HS256"}"#),
                b64(&format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)))
            )
            .into_bytes(),
            b"https://app.example.com\n10.0.0.2, 203.0.113.1\nBearer a.b.c\nwshub.v1, wshub.bearer.a.b.c"
                .to_vec(),
            b"null\nunknown, , ,\nbearer\n,,,,".to_vec(),
            b"https://[::1]:8080\n[::1]:80, [::1\nBearer  \nwshub.bearer.".to_vec(),
            b"https://\n::ffff:10.0.0.1\n\n".to_vec(),
            b"http://a.example.org:0\n1.2.3.4:99999\n\n".to_vec(),
            b"https://xn--e1afmkfd.example.org\n999.1.1.1\n".to_vec(),
            b"*.\n10.0.0.0/33\n*.*.example.com\n0.0.0.0/0".to_vec(),
            b"/ws?access_token=%ff%fe&access_token\n/ws?%%%\n?access_token=%".to_vec(),
            "https://app.example.com:443\u{0}\n".as_bytes().to_vec(),
            format!("https://{}.example.org", "a.".repeat(200)).into_bytes(),
        ];
        corpus.push(
            std::iter::repeat_n(b"203.0.113.1, ".as_slice(), 2_000)
                .flatten()
                .copied()
                .collect(),
        );
        corpus
    }

    /// The seeds `cargo xtask fuzz` starts from: run here too, so they stay harmless.
    fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/seeds")
            .join(target);
        let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect();
        seeds.sort();
        seeds
    }

    #[test]
    fn fuzz_bodies_survive_the_corpus() {
        let seeds = seeds("token").into_iter().map(|(_, seed)| seed);
        for input in corpus().into_iter().chain(seeds) {
            token(&input);
            headers(&input);
        }
    }

    /// The `exp-*` seeds are signed with the fuzz verifier's secret, so they get past the
    /// signature to the claims and the deadline: the time claims at the edges of i64/u64.
    #[test]
    fn signed_time_seeds_verify_or_are_refused_as_invalid_tokens() {
        let mut accepted = Vec::new();
        for (name, seed) in seeds("token") {
            let result = verifier().verify(std::str::from_utf8(&seed).unwrap());
            match name.as_str() {
                "exp-u64-max" | "exp-i64-max" | "exp-i64-max-plus-1" | "iat-negative" => {
                    if name == "iat-negative" {
                        assert!(
                            result.as_ref().is_err_and(|e| e.is_invalid_token()),
                            "{name}"
                        );
                        continue;
                    }
                    let claims = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(deadline(&claims), None, "{name}: beyond the clocks");
                    accepted.push(name);
                }
                n if n.starts_with("exp-") || n.starts_with("nbf-") => {
                    let err = result.expect_err(&name);
                    assert!(err.is_invalid_token(), "{name}: {err:?}");
                }
                _ => {}
            }
        }
        assert_eq!(
            accepted.len(),
            3,
            "the signed seeds are missing: {accepted:?}"
        );
    }
}
