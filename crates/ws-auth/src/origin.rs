//! The `Origin` allow-list: [`CheckOriginLayer`] and [`CheckOrigin`].
//!
//! Browsers send the page's origin on every WebSocket handshake and let any page open a
//! WebSocket to any host, so the allow-list is what stops cross-site WebSocket hijacking: a page
//! on another site that gets hold of a user's token (or rides on cookies a proxy adds) cannot
//! open the hub on their behalf.

use std::fmt;
use std::sync::Arc;

use http::header::ORIGIN;
use http::{HeaderMap, Request};
use tower::Layer;

use crate::admit::Admit;
use crate::error::{AuthError, ConfigError};

/// Applies [`CheckOrigin`]: the `Origin` of each request must be allowed.
///
/// Allowed origins are written as
///
/// - an exact origin, `https://app.example.com` or `http://localhost:3000` (the default port of
///   the scheme may be written or left out);
/// - a subdomain pattern, `https://*.example.com`, which allows every subdomain of
///   `example.com` at any depth, but not `example.com` itself;
/// - either of them without a scheme, `*.example.com` or `app.example.com`, which allows `http`
///   and `https` on their default ports (write the scheme to allow only one of them).
///
/// Hosts compare case-insensitively. `null` and `*` are refused as patterns: a `null` origin is
/// what sandboxed documents send, so any page could forge it, and `*` is no check at all (leave
/// the list empty for that).
///
/// With an empty list any origin passes. Independently, a request without `Origin` (a
/// non-browser client) passes unless [`CheckOriginLayer::require_origin`] is set.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use tower::{ServiceBuilder, ServiceExt};
/// use ws_auth::CheckOriginLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = CheckOriginLayer::allow(["https://app.example.com", "https://*.example.org"])?;
/// let svc = ServiceBuilder::new().layer(layer).service_fn(|_req: Request<()>| async {
///     Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("upgraded")))
/// });
///
/// let req = Request::get("/ws").header("origin", "https://eu.example.org").body(())?;
/// assert_eq!(svc.clone().oneshot(req).await?.status(), StatusCode::OK);
///
/// let req = Request::get("/ws").header("origin", "https://evil.example").body(())?;
/// assert_eq!(svc.clone().oneshot(req).await?.status(), StatusCode::FORBIDDEN);
///
/// // No Origin: a non-browser client, allowed unless `require_origin(true)`.
/// let req = Request::get("/ws").body(())?;
/// assert_eq!(svc.oneshot(req).await?.status(), StatusCode::OK);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct CheckOriginLayer {
    policy: Arc<OriginPolicy>,
}

#[derive(Debug)]
struct OriginPolicy {
    allowed: Vec<OriginPattern>,
    require_origin: bool,
}

impl CheckOriginLayer {
    /// A layer that lets every origin through, and requests without one.
    pub fn any() -> Self {
        Self {
            policy: Arc::new(OriginPolicy {
                allowed: Vec::new(),
                require_origin: false,
            }),
        }
    }

    /// A layer allowing the origins matching any of `patterns` (see the type's docs); an empty
    /// list allows every origin.
    ///
    /// # Errors
    ///
    /// [`ConfigError::OriginPattern`] naming the first pattern that cannot be parsed.
    pub fn allow<I>(patterns: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let allowed = patterns
            .into_iter()
            .map(|p| OriginPattern::parse(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            policy: Arc::new(OriginPolicy {
                allowed,
                require_origin: false,
            }),
        })
    }

    /// Whether a request without `Origin` is refused (default `false`: non-browser clients
    /// send none).
    #[must_use]
    pub fn require_origin(self, require: bool) -> Self {
        let policy = OriginPolicy {
            allowed: self.policy.allowed.clone(),
            require_origin: require,
        };
        Self {
            policy: Arc::new(policy),
        }
    }

    /// Checks the `Origin` of `headers` as the service does.
    ///
    /// # Errors
    ///
    /// [`AuthError::OriginRequired`] when there is no `Origin` and one is required,
    /// [`AuthError::OriginNotAllowed`] when it is not allowed, is not a valid origin, or comes
    /// in several headers.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        self.policy.check(headers)
    }
}

impl OriginPolicy {
    fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let mut values = headers.get_all(ORIGIN).iter();
        let (value, second) = (values.next(), values.next());
        let value = match (value, second) {
            (None, _) if self.require_origin => return Err(AuthError::OriginRequired),
            (None, _) => return Ok(()),
            (Some(_), Some(_)) => return Err(AuthError::OriginNotAllowed),
            (Some(value), None) => value,
        };
        if self.allowed.is_empty() {
            return Ok(());
        }
        let origin = value
            .to_str()
            .ok()
            .and_then(ParsedOrigin::parse)
            .ok_or(AuthError::OriginNotAllowed)?;
        if self.allowed.iter().any(|p| p.matches(&origin)) {
            Ok(())
        } else {
            Err(AuthError::OriginNotAllowed)
        }
    }
}

impl<S> Layer<S> for CheckOriginLayer {
    type Service = CheckOrigin<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CheckOrigin {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

/// Refuses requests whose `Origin` is not allowed with `403 origin_not_allowed`, before the
/// inner service is called; see [`CheckOriginLayer`].
#[derive(Clone)]
pub struct CheckOrigin<S> {
    inner: S,
    policy: Arc<OriginPolicy>,
}

impl<S> CheckOrigin<S> {
    define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for CheckOrigin<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckOrigin")
            .field("inner", &self.inner)
            .field("allowed", &self.policy.allowed.len())
            .field("require_origin", &self.policy.require_origin)
            .finish()
    }
}

impl_admitting_service!(CheckOrigin);

impl<S> Admit for CheckOrigin<S> {
    fn admit<B>(&self, req: &mut Request<B>) -> Result<(), AuthError> {
        self.policy.check(req.headers())
    }

    fn log_refusal<B>(&self, err: &AuthError, req: &Request<B>) {
        // The origin is not a secret, but it is the client's text: log it escaped.
        let origin = req.headers().get(ORIGIN).map(|v| format!("{v:?}"));
        tracing::debug!(code = err.code(), reason = %err, origin, path = req.uri().path(), "rejected request");
    }
}

/// An origin as browsers serialise it: `scheme://host[:port]`, lower-cased, the port made
/// explicit.
#[derive(Debug, PartialEq, Eq)]
struct ParsedOrigin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl ParsedOrigin {
    fn parse(s: &str) -> Option<Self> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if !valid_scheme(&scheme) {
            return None;
        }
        let (host, port) = split_host_port(rest)?;
        if !valid_host(&host) {
            return None;
        }
        let port = port.or_else(|| default_port(&scheme));
        Some(Self { scheme, host, port })
    }
}

/// One entry of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    /// `None`: `http` or `https`.
    scheme: Option<String>,
    host: HostPattern,
    /// `None`: the default port of the origin's scheme.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Subdomains(String),
}

impl OriginPattern {
    fn parse(pattern: &str) -> Result<Self, ConfigError> {
        let error = |reason| ConfigError::OriginPattern {
            pattern: pattern.to_owned(),
            reason,
        };
        let trimmed = pattern.trim();
        match trimmed {
            "" => return Err(error("empty")),
            "*" => {
                return Err(error(
                    "`*` allows every origin; leave the list empty instead",
                ));
            }
            "null" => {
                return Err(error(
                    "`null` is what sandboxed pages send, so any page can forge it",
                ));
            }
            _ => {}
        }
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = scheme.to_ascii_lowercase();
                if !valid_scheme(&scheme) {
                    return Err(error("not a scheme"));
                }
                (Some(scheme), rest)
            }
            None => (None, trimmed),
        };
        if rest.contains(['/', '?', '#']) {
            return Err(error(
                "an origin has no path: write scheme://host[:port] without a trailing slash",
            ));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| error("bad host or port"))?;
        let host = match host.strip_prefix("*.") {
            Some(suffix) => {
                if !valid_host(suffix) || suffix.contains('*') {
                    return Err(error("bad host after `*.`"));
                }
                if !suffix.contains('.') {
                    return Err(error(
                        "`*.` must be followed by a domain with a dot, like `*.example.com`",
                    ));
                }
                HostPattern::Subdomains(format!(".{suffix}"))
            }
            None if host.contains('*') => {
                return Err(error(
                    "`*` is only allowed as the first label, as in `*.example.com`",
                ));
            }
            None if valid_host(&host) => HostPattern::Exact(host),
            None => return Err(error("bad host")),
        };
        let port = match (&scheme, port) {
            (Some(scheme), None) => default_port(scheme),
            (_, port) => port,
        };
        Ok(Self { scheme, host, port })
    }

    fn matches(&self, origin: &ParsedOrigin) -> bool {
        let scheme_ok = match &self.scheme {
            Some(scheme) => *scheme == origin.scheme,
            None => origin.scheme == "http" || origin.scheme == "https",
        };
        let port_ok = match (&self.scheme, self.port) {
            (_, Some(port)) => origin.port == Some(port),
            // No scheme and no port: the default port of whichever scheme the origin has.
            (_, None) => origin.port == default_port(&origin.scheme),
        };
        let host_ok = match &self.host {
            HostPattern::Exact(host) => *host == origin.host,
            HostPattern::Subdomains(suffix) => {
                origin.host.len() > suffix.len()
                    && origin.host.ends_with(suffix.as_str())
                    && !origin.host.starts_with('[')
            }
        };
        scheme_ok && port_ok && host_ok
    }
}

fn valid_scheme(scheme: &str) -> bool {
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Splits `host[:port]` (IPv6 hosts in brackets), lower-casing the host.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']')?;
        let (host, rest) = s.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{HeaderValue, Response, StatusCode};
    use http_body_util::Full;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::rejection::tests::read;

    /// Whether `origin` passes `patterns`; `None` sends no Origin header.
    fn check(patterns: &[&str], origin: Option<&str>) -> Result<(), AuthError> {
        let layer = CheckOriginLayer::allow(patterns).unwrap();
        let mut headers = HeaderMap::new();
        if let Some(origin) = origin {
            headers.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        layer.check(&headers)
    }

    #[test]
    fn exact_origins() {
        let list = ["https://app.example.com", "http://localhost:3000"];
        for ok in [
            "https://app.example.com",
            "https://APP.example.com",
            "https://app.example.com:443",
            "HTTPS://app.example.com",
            "http://localhost:3000",
        ] {
            assert!(check(&list, Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com.evil.com",
            "https://evilapp.example.com",
            "https://x.app.example.com",
            "http://localhost",
            "http://localhost:30000",
            "null",
            "",
            "app.example.com",
            "https://app.example.com/",
            "https://user@app.example.com",
            "https://app.example.com:99999",
        ] {
            assert!(
                matches!(check(&list, Some(bad)), Err(AuthError::OriginNotAllowed)),
                "{bad}"
            );
        }
    }

    #[test]
    fn subdomain_patterns() {
        let with_scheme = ["https://*.example.com"];
        for ok in [
            "https://a.example.com",
            "https://a.b.example.com",
            "https://A.Example.COM:443",
        ] {
            assert!(check(&with_scheme, Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "https://example.com",
            "https://evilexample.com",
            "https://a.example.com.evil.org",
            "http://a.example.com",
            "https://a.example.com:8443",
            "https://.example.com",
        ] {
            assert!(check(&with_scheme, Some(bad)).is_err(), "{bad}");
        }
        let bare = ["*.example.com"];
        for ok in [
            "https://a.example.com",
            "http://a.example.com",
            "http://a.example.com:80",
        ] {
            assert!(check(&bare, Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "https://a.example.com:8080",
            "ftp://a.example.com",
            "https://example.com",
        ] {
            assert!(check(&bare, Some(bad)).is_err(), "{bad}");
        }
        let with_port = ["http://*.dev.example.com:8080"];
        assert!(check(&with_port, Some("http://x.dev.example.com:8080")).is_ok());
        assert!(check(&with_port, Some("http://x.dev.example.com")).is_err());
    }

    #[test]
    fn ipv6_hosts() {
        let list = ["http://[::1]:8080"];
        assert!(check(&list, Some("http://[::1]:8080")).is_ok());
        assert!(check(&list, Some("http://[::2]:8080")).is_err());
        assert!(check(&list, Some("http://[::1]")).is_err());
    }

    #[test]
    fn missing_and_repeated_origin() {
        assert!(check(&["https://a.example.com"], None).is_ok());
        assert!(check(&[], Some("https://anything.example")).is_ok());
        assert!(check(&[], Some("not an origin")).is_ok());
        let required = CheckOriginLayer::any().require_origin(true);
        assert!(matches!(
            required.check(&HeaderMap::new()),
            Err(AuthError::OriginRequired)
        ));
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, HeaderValue::from_static("https://x.example"));
        assert!(required.check(&headers).is_ok());
        let allowed = CheckOriginLayer::allow(["https://a.example.com"]).unwrap();
        headers.insert(ORIGIN, HeaderValue::from_static("https://a.example.com"));
        headers.append(ORIGIN, HeaderValue::from_static("https://a.example.com"));
        assert!(matches!(
            allowed.check(&headers),
            Err(AuthError::OriginNotAllowed)
        ));
        // Not UTF-8.
        let mut headers = HeaderMap::new();
        headers.insert(
            ORIGIN,
            HeaderValue::from_bytes(b"https://\xffa.example.com").unwrap(),
        );
        assert!(allowed.check(&headers).is_err());
    }

    #[test]
    fn bad_patterns_are_configuration_errors() {
        for bad in [
            "",
            "*",
            "null",
            "https://app.example.com/",
            "https://app.example.com/path",
            "*.com",
            "https://*",
            "https://a.*.example.com",
            "https://app.example.com:http",
            "https://app.example.com:70000",
            "1https://app.example.com",
            "https://exa mple.com",
        ] {
            let err = CheckOriginLayer::allow([bad]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::OriginPattern { pattern, .. } if pattern == bad),
                "{bad}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn service_answers_403_without_calling_inner() {
        let layer = CheckOriginLayer::allow(["https://app.example.com"])
            .unwrap()
            .require_origin(true);
        let svc = ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("inner")))
            });
        for (origin, code) in [
            (Some("https://evil.example"), "origin_not_allowed"),
            (None, "origin_not_allowed"),
        ] {
            let mut req = Request::get("/ws").body(()).unwrap();
            if let Some(origin) = origin {
                req.headers_mut()
                    .insert(ORIGIN, HeaderValue::from_static(origin));
            }
            let (status, challenge, json) = read(svc.clone().oneshot(req).await.unwrap()).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(challenge, None);
            assert_eq!(json["error"], code);
        }
    }
}
