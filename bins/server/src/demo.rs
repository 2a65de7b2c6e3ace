//! The demo page (`GET /`) and the JS client it imports (`GET /client.js`), served when
//! `server.demo` is on (development mode turns it on). Both are embedded in the binary, so
//! a copied `wshub` still serves them.

use bytes::Bytes;
use http::{HeaderValue, Response, header};

use crate::http::Body;

/// The demo page: pick a project, paste a token, watch state, messages and presence.
pub const INDEX_HTML: &str = include_str!("../../../clients/js/demo/index.html");
/// The browser client, `clients/js/wshub.js`, as the page imports it.
pub const CLIENT_JS: &str = include_str!("../../../clients/js/wshub.js");

/// `GET /`: the demo page.
pub fn index() -> Response<Body> {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// The version of the embedded client: its `export const VERSION = '...'` line.
fn client_version() -> &'static str {
    CLIENT_JS
        .lines()
        .find_map(|line| line.strip_prefix("export const VERSION = '"))
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or("unknown")
}

/// `GET /client.js`: the JS client as an ES module, importable from any origin (CORS) for
/// development; production apps install `@wshub/client` from npm and bundle it.
pub fn client_js() -> Response<Body> {
    let mut response = asset(CLIENT_JS, "text/javascript; charset=utf-8");
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    if let Ok(version) = HeaderValue::from_str(client_version()) {
        headers.insert(
            header::HeaderName::from_static("x-wshub-client-version"),
            version,
        );
    }
    response
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page and the client change with the binary: never serve a stale copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
