//! Where a token may travel in a handshake request, and how it is found.
//!
//! Carriers are tried in this order and the first one found wins:
//!
//! 1. `Authorization: Bearer <jwt>` (scheme case-insensitive; other schemes are ignored);
//! 2. the subprotocol pair: a `Sec-WebSocket-Protocol` entry `wshub.bearer.<jwt>`, possibly in a
//!    comma-separated list and across several header lines. The client should also offer
//!    `wshub.v1`, the subprotocol the server answers (the transport decides that answer, from
//!    what was offered: `ws_transport::SUBPROTOCOL`); the token entry is accepted alone too
//!    (lenient);
//! 3. the query parameter `access_token=<jwt>` (percent-decoded), unless disabled.
//!
//! A carrier present but empty (`Authorization: Bearer` with nothing after it,
//! `access_token=`) counts as absent.
//! A token longer than [`MAX_TOKEN_BYTES`] is refused as `invalid_token` without being parsed.

use std::borrow::Cow;

use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderMap, Uri};
use percent_encoding::percent_decode_str;

use crate::claims::TokenCarrier;
use crate::error::AuthError;

/// The largest token accepted, in bytes (8 KiB); longer ones are refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Prefix of the subprotocol entry that carries a token: `wshub.bearer.<jwt>`.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "wshub.bearer.";

/// Name of the query parameter that carries a token.
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// Finds the token of a request, trying the carriers in order.
///
/// Returns [`AuthError::MissingToken`] when no carrier holds a token and
/// [`AuthError::TokenTooLarge`] when the one found is over [`MAX_TOKEN_BYTES`].
pub(crate) fn find_token<'a>(
    headers: &'a HeaderMap,
    uri: &'a Uri,
    allow_query: bool,
) -> Result<(Cow<'a, str>, TokenCarrier), AuthError> {
    let found = bearer_token(headers)
        .map(|t| (Cow::Borrowed(t), TokenCarrier::AuthorizationHeader))
        .or_else(|| {
            subprotocol_token(headers).map(|t| (Cow::Borrowed(t), TokenCarrier::Subprotocol))
        })
        .or_else(|| {
            if allow_query {
                query_token(uri).map(|t| (t, TokenCarrier::Query))
            } else {
                None
            }
        });
    match found {
        None => Err(AuthError::MissingToken),
        Some((token, _)) if token.len() > MAX_TOKEN_BYTES => Err(AuthError::TokenTooLarge),
        Some(found) => Ok(found),
    }
}

/// The credentials of the first `Authorization: Bearer <credentials>` header, trimmed.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(AUTHORIZATION).iter().find_map(|value| {
        let value = value.to_str().ok()?;
        let (scheme, rest) = value.trim_start().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        Some(rest.trim()).filter(|t| !t.is_empty())
    })
}

/// The entries of every `Sec-WebSocket-Protocol` header line, trimmed, empty ones skipped.
fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

fn subprotocol_token(headers: &HeaderMap) -> Option<&str> {
    offered_protocols(headers)
        .find_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
        .filter(|t| !t.is_empty())
}

fn query_token(uri: &Uri) -> Option<Cow<'_, str>> {
    let raw = uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == ACCESS_TOKEN_PARAM && !value.is_empty()).then_some(value)
    })?;
    if raw.len() > MAX_TOKEN_BYTES {
        // Refused by the caller on length alone; do not bother decoding it.
        return Some(Cow::Borrowed(raw));
    }
    // JWT characters never need escaping, but a client may escape them anyway. Invalid UTF-8
    // becomes U+FFFD and then fails verification as a malformed token.
    Some(percent_decode_str(raw).decode_utf8_lossy())
}

/// The path and query of `uri` with every `access_token` value replaced by `REDACTED`, for logs.
///
/// For embedders whose request logs include the query (tower-http's `TraceLayer` logs the whole
/// URI by default). Nothing in wshub calls it because wshub logs paths only, never queries: this
/// crate's rejections and the server's routes log `uri().path()`.
///
/// ```
/// let uri: http::Uri = "/ws/projects/chat?since=4&access_token=eyJ.abc.def".parse().unwrap();
/// assert_eq!(ws_auth::redact_access_token(&uri), "/ws/projects/chat?since=4&access_token=REDACTED");
/// ```
pub fn redact_access_token(uri: &Uri) -> Cow<'_, str> {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return Cow::Borrowed(path);
    };
    let has_token = query.split('&').any(|pair| {
        pair.split_once('=')
            .map_or(pair, |(key, _)| key)
            .eq(ACCESS_TOKEN_PARAM)
    });
    if !has_token {
        return Cow::Borrowed(uri.path_and_query().map_or(path, |pq| pq.as_str()));
    }
    let redacted: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((ACCESS_TOKEN_PARAM, _)) => Cow::Owned(format!("{ACCESS_TOKEN_PARAM}=REDACTED")),
            _ if pair == ACCESS_TOKEN_PARAM => Cow::Owned(format!("{ACCESS_TOKEN_PARAM}=REDACTED")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(format!("{path}?{}", redacted.join("&")))
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, Request};

    use super::*;

    fn find(req: &Request<()>, allow_query: bool) -> Result<(String, TokenCarrier), AuthError> {
        find_token(req.headers(), req.uri(), allow_query).map(|(t, c)| (t.into_owned(), c))
    }

    #[test]
    fn authorization_header() {
        let req = Request::get("/")
            .header("authorization", "Bearer a.b.c")
            .body(())
            .unwrap();
        assert_eq!(
            find(&req, true).unwrap(),
            ("a.b.c".to_owned(), TokenCarrier::AuthorizationHeader)
        );
        let lower = Request::get("/")
            .header("authorization", "bearer  a.b.c ")
            .body(())
            .unwrap();
        assert_eq!(find(&lower, true).unwrap().0, "a.b.c");
    }

    #[test]
    fn other_schemes_and_empty_bearer_are_absent() {
        let basic = Request::get("/")
            .header("authorization", "Basic dXNlcjpwdw==")
            .body(())
            .unwrap();
        assert!(matches!(find(&basic, true), Err(AuthError::MissingToken)));
        let empty = Request::get("/")
            .header("authorization", "Bearer ")
            .body(())
            .unwrap();
        assert!(matches!(find(&empty, true), Err(AuthError::MissingToken)));
    }

    #[test]
    fn subprotocol_in_one_or_several_lines() {
        let one = Request::get("/")
            .header("sec-websocket-protocol", "wshub.v1, wshub.bearer.a.b.c")
            .body(())
            .unwrap();
        assert_eq!(
            find(&one, true).unwrap(),
            ("a.b.c".to_owned(), TokenCarrier::Subprotocol)
        );

        let mut several = Request::get("/").body(()).unwrap();
        let headers = several.headers_mut();
        headers.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("wshub.v1"));
        headers.append(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("wshub.bearer.x.y.z"),
        );
        assert_eq!(find(&several, true).unwrap().0, "x.y.z");

        // Lenient: the token entry alone is accepted.
        let alone = Request::get("/")
            .header("sec-websocket-protocol", "wshub.bearer.x.y.z")
            .body(())
            .unwrap();
        assert_eq!(find(&alone, true).unwrap().1, TokenCarrier::Subprotocol);

        let other = Request::get("/")
            .header("sec-websocket-protocol", "chat")
            .body(())
            .unwrap();
        assert!(matches!(find(&other, true), Err(AuthError::MissingToken)));
    }

    #[test]
    fn query_parameter() {
        let req = Request::get("/ws?since=3&access_token=a.b%2Ec&epoch=1")
            .body(())
            .unwrap();
        assert_eq!(
            find(&req, true).unwrap(),
            ("a.b.c".to_owned(), TokenCarrier::Query)
        );
        assert!(matches!(find(&req, false), Err(AuthError::MissingToken)));
        let empty = Request::get("/ws?access_token=").body(()).unwrap();
        assert!(matches!(find(&empty, true), Err(AuthError::MissingToken)));
    }

    #[test]
    fn first_carrier_wins() {
        let req = Request::get("/ws?access_token=q.q.q")
            .header("sec-websocket-protocol", "wshub.v1, wshub.bearer.s.s.s")
            .header("authorization", "Bearer h.h.h")
            .body(())
            .unwrap();
        assert_eq!(find(&req, true).unwrap().0, "h.h.h");
        let req = Request::get("/ws?access_token=q.q.q")
            .header("sec-websocket-protocol", "wshub.v1, wshub.bearer.s.s.s")
            .body(())
            .unwrap();
        assert_eq!(find(&req, true).unwrap().0, "s.s.s");
    }

    #[test]
    fn oversized_token_is_refused() {
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        let req = Request::get(format!("/ws?access_token={big}"))
            .body(())
            .unwrap();
        assert!(matches!(find(&req, true), Err(AuthError::TokenTooLarge)));
        let req = Request::get("/")
            .header("authorization", format!("Bearer {big}"))
            .body(())
            .unwrap();
        assert!(matches!(find(&req, true), Err(AuthError::TokenTooLarge)));
    }

    #[test]
    fn redaction() {
        let uri: Uri = "/ws?access_token=secret&since=1&access_token"
            .parse()
            .unwrap();
        assert_eq!(
            redact_access_token(&uri),
            "/ws?access_token=REDACTED&since=1&access_token=REDACTED"
        );
        let plain: Uri = "/ws?since=1".parse().unwrap();
        assert_eq!(redact_access_token(&plain), "/ws?since=1");
        let no_query: Uri = "/ws".parse().unwrap();
        assert_eq!(redact_access_token(&no_query), "/ws");
    }
}
