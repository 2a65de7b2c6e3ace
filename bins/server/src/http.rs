//! The HTTP pieces every route shares: the body type, JSON answers, the router's refusals and
//! the `Service` of an endpoint. A leaf: it imports no route and no handler.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tower::{Service, ServiceExt};
use ws_transport::json_error;

/// The body of every answer.
pub(crate) type Body = ws_transport::Body;

/// The future of a boxed, infallible route.
pub(crate) type BoxFuture =
    Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// One endpoint: an async function of the request, shared by every clone of its [`Endpoint`].
pub(crate) trait Handle: Send + Sync + 'static {
    /// The answer to `req`.
    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// The tower `Service` of a [`Handle`]: always ready, never fails, cheap to clone.
#[derive(Debug)]
pub(crate) struct Endpoint<H>(Arc<H>);

impl<H> Endpoint<H> {
    pub(crate) fn new(handler: H) -> Self {
        Self(Arc::new(handler))
    }
}

impl<H> Clone for Endpoint<H> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<H: Handle> Service<Request<Incoming>> for Endpoint<H> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> BoxFuture {
        let handler = Arc::clone(&self.0);
        Box::pin(async move { Ok(handler.handle(req).await) })
    }
}

/// Calls a service that cannot fail.
pub(crate) async fn call<S>(service: S, req: Request<Incoming>) -> Response<Body>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    match service.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// `status` with a JSON `body`.
pub(crate) fn json(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Body::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `404 not_found`.
pub(crate) fn not_found() -> Response<Body> {
    json_error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// `405 method_not_allowed` with `message` and the `Allow` header.
pub(crate) fn method_not_allowed(allow: &'static str, message: &str) -> Response<Body> {
    let mut response = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Strict percent-decoding of a path segment: every `%` must start two hex digits, and the
/// bytes must be UTF-8. Anything else is refused rather than guessed at: revoking a user
/// whose name was half-decoded would silently close nothing.
pub(crate) fn percent_decode(segment: &str) -> Result<String, &'static str> {
    let mut bytes = Vec::with_capacity(segment.len());
    let mut rest = segment.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = |i: usize| tail.get(i).and_then(|d| char::from(*d).to_digit(16));
            let (Some(hi), Some(lo)) = (hex(0), hex(1)) else {
                return Err("the segment has a % not followed by two hex digits; \
                            percent-encode it (a literal % is %25)");
            };
            bytes.push((hi * 16 + lo) as u8);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes)
        .map_err(|_| "the segment does not decode to UTF-8; percent-encode its UTF-8 bytes")
}
