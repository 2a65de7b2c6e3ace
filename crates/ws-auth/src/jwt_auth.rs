//! The handshake middleware: [`JwtAuthLayer`] and [`JwtAuth`].

use http::Request;
use tower::Layer;

use crate::admit::Admit;
use crate::claims::ProjectScope;
use crate::error::AuthError;
use crate::token::find_token;
use crate::verifier::SharedVerifier;

/// Applies [`JwtAuth`] to a service: authenticates every request with a user JWT.
///
/// Holds only configuration and is cheap to clone. Query tokens (`access_token=`) are accepted
/// by default; turn them off with [`JwtAuthLayer::allow_query_token`].
#[derive(Debug, Clone)]
pub struct JwtAuthLayer {
    verifier: SharedVerifier,
    allow_query_token: bool,
}

impl JwtAuthLayer {
    /// A layer verifying tokens with `verifier`: a [`JwtVerifier`](crate::JwtVerifier), an
    /// `Arc` of one, or a [`SharedVerifier`] whose keys can be replaced later.
    pub fn new(verifier: impl Into<SharedVerifier>) -> Self {
        Self {
            verifier: verifier.into(),
            allow_query_token: true,
        }
    }

    /// Whether a token in the `access_token` query parameter is accepted (default `true`).
    ///
    /// When `false`, such a token is ignored, so a request carrying only it is
    /// `401 missing_token`.
    #[must_use]
    pub fn allow_query_token(mut self, allow: bool) -> Self {
        self.allow_query_token = allow;
        self
    }
}

impl<S> Layer<S> for JwtAuthLayer {
    type Service = JwtAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        JwtAuth {
            inner,
            verifier: self.verifier.clone(),
            allow_query_token: self.allow_query_token,
        }
    }
}

/// Authenticates requests with a user JWT before they reach the inner service.
///
/// In `call`, synchronously:
///
/// 1. finds the token ([carriers](crate#token-carriers)) — none: `401 missing_token`;
/// 2. verifies it with the current [`JwtVerifier`](crate::JwtVerifier) — failure:
///    `401 invalid_token` naming the reason;
/// 3. when a [`ProjectScope`] extension is present, checks [`Claims::allows`](crate::Claims::allows) — failure:
///    `403 forbidden`;
/// 4. inserts [`Claims`](crate::Claims) and [`TokenCarrier`](crate::TokenCarrier) into the request extensions and calls the inner
///    service.
///
/// Rejections are answered at once with a JSON body (see [`error_response`](crate::error_response)), without calling
/// the inner service, and logged at `debug` with the reason (never the token).
#[derive(Debug, Clone)]
pub struct JwtAuth<S> {
    inner: S,
    verifier: SharedVerifier,
    allow_query_token: bool,
}

impl<S> JwtAuth<S> {
    /// Wraps `inner`, verifying tokens with `verifier`; query tokens are accepted.
    pub fn new(inner: S, verifier: impl Into<SharedVerifier>) -> Self {
        JwtAuthLayer::new(verifier).layer(inner)
    }

    /// A [`JwtAuthLayer`] with `verifier`.
    pub fn layer(verifier: impl Into<SharedVerifier>) -> JwtAuthLayer {
        JwtAuthLayer::new(verifier)
    }

    define_inner_service_accessors!();
}

// Verification is CPU-only, so it runs in `call`; the inner service is called (not cloned)
// only on success, and its readiness is kept for the next request otherwise. Refusals are
// logged with the reason only: neither the token nor the query string.
impl_admitting_service!(JwtAuth);

impl<S> Admit for JwtAuth<S> {
    fn admit<B>(&self, req: &mut Request<B>) -> Result<(), AuthError> {
        let (token, carrier) = find_token(req.headers(), req.uri(), self.allow_query_token)?;
        let claims = self.verifier.current().verify(&token)?;
        if claims.caps.is_some() {
            claims.grants().map_err(AuthError::InvalidGrants)?;
        }
        if let Some(ProjectScope(project)) = req.extensions().get::<ProjectScope>()
            && !claims.allows(project)
        {
            return Err(AuthError::Forbidden {
                project: project.clone(),
            });
        }
        let extensions = req.extensions_mut();
        extensions.insert(claims);
        extensions.insert(carrier);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
    use http::{Response, StatusCode};
    use http_body_util::Full;
    use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

    use super::*;
    use crate::claims::{Claims, TokenCarrier};
    use crate::rejection::tests::read;
    use crate::verifier::tests::{SECRET, claims, now, token};
    use crate::{JwtSigner, JwtVerifier};

    type Body = Full<Bytes>;

    /// Echoes the authenticated user, project grants and carrier so tests can see what the
    /// layer inserted.
    async fn echo(req: Request<()>) -> Result<Response<Body>, Infallible> {
        let claims = req.extensions().get::<Claims>().expect("claims inserted");
        let carrier = req
            .extensions()
            .get::<TokenCarrier>()
            .expect("carrier inserted");
        let body = format!("{} {:?}", claims.sub, carrier);
        Ok(Response::new(Body::from(body)))
    }

    fn layer() -> JwtAuthLayer {
        JwtAuthLayer::new(JwtVerifier::hs256([SECRET]))
    }

    async fn send(layer: JwtAuthLayer, req: Request<()>) -> Response<Body> {
        let mut service = ServiceBuilder::new().layer(layer).service_fn(echo);
        service.ready().await.unwrap().call(req).await.unwrap()
    }

    async fn body_text(res: Response<Body>) -> String {
        use http_body_util::BodyExt;
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn bearer(token: &str) -> Request<()> {
        Request::get("/ws/projects/chat")
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(())
            .unwrap()
    }

    fn scoped(mut req: Request<()>, project: &str) -> Request<()> {
        req.extensions_mut()
            .insert(ProjectScope(project.to_owned()));
        req
    }

    /// Sends `req` and asserts a `401 invalid_token` whose message is `reason` and whose body
    /// does not contain `token`.
    async fn assert_invalid(req: Request<()>, token: &str, reason: &str) {
        let (status, challenge, json) = read(send(layer(), req).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer error="invalid_token""#)
        );
        assert_eq!(json["error"], "invalid_token");
        assert_eq!(json["message"], reason);
        assert!(!json.to_string().contains(token));
    }

    #[tokio::test]
    async fn authorization_header_carrier() {
        let res = send(layer(), bearer(&token(&claims(&["chat"])))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_text(res).await, "alice AuthorizationHeader");
    }

    #[tokio::test]
    async fn subprotocol_carrier() {
        let token = token(&claims(&["chat"]));
        let req = Request::get("/ws/projects/chat")
            .header(
                SEC_WEBSOCKET_PROTOCOL,
                format!("wshub.v1, wshub.bearer.{token}"),
            )
            .body(())
            .unwrap();
        let res = send(layer(), req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_text(res).await, "alice Subprotocol");
    }

    #[tokio::test]
    async fn query_carrier_and_disabling_it() {
        let token = token(&claims(&["chat"]));
        let uri = format!("/ws/projects/chat?since=3&access_token={token}");
        let res = send(layer(), Request::get(&uri).body(()).unwrap()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_text(res).await, "alice Query");

        let disabled = layer().allow_query_token(false);
        let (status, challenge, json) =
            read(send(disabled, Request::get(&uri).body(()).unwrap()).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        assert_eq!(json["error"], "missing_token");
    }

    #[tokio::test]
    async fn no_token() {
        let req = Request::get("/ws/projects/chat").body(()).unwrap();
        let (status, challenge, json) = read(send(layer(), req).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        assert_eq!(json["error"], "missing_token");
        assert!(json["message"].is_string());
    }

    #[tokio::test]
    async fn malformed_token() {
        assert_invalid(bearer("not-a-jwt"), "not-a-jwt", "malformed token").await;
    }

    #[tokio::test]
    async fn bad_signature() {
        let token = JwtSigner::hs256("another-secret")
            .sign(&claims(&["chat"]))
            .unwrap();
        assert_invalid(bearer(&token), &token, "signature does not match").await;
    }

    #[tokio::test]
    async fn expired() {
        let mut c = claims(&["chat"]);
        c.exp = now() - 3600;
        let token = token(&c);
        assert_invalid(bearer(&token), &token, "token expired").await;
    }

    #[tokio::test]
    async fn not_yet_valid() {
        let mut c = claims(&["chat"]);
        c.nbf = Some(now() + 3600);
        let token = token(&c);
        assert_invalid(bearer(&token), &token, "token not yet valid").await;
    }

    #[tokio::test]
    async fn wrong_issuer_and_audience() {
        let verifier = JwtVerifier::hs256([SECRET])
            .issuer(Some("backend".to_owned()))
            .audience(Some("wshub".to_owned()));
        let layer = JwtAuthLayer::new(verifier);

        let mut c = claims(&["chat"]);
        c.iss = Some("other".to_owned());
        c.aud = Some("wshub".to_owned());
        let (status, _, json) = read(send(layer.clone(), bearer(&token(&c))).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["message"], "wrong issuer");

        c.iss = Some("backend".to_owned());
        c.aud = Some("other".to_owned());
        let (status, _, json) = read(send(layer.clone(), bearer(&token(&c))).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["message"], "wrong audience");

        c.aud = Some("wshub".to_owned());
        let res = send(layer, bearer(&token(&c))).await;
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn alg_none() {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_string(&claims(&["*"])).unwrap());
        let token = format!("{header}.{payload}.");
        assert_invalid(bearer(&token), &token, "algorithm not allowed").await;
    }

    #[tokio::test]
    async fn hs384_and_hs512() {
        for alg in [
            jsonwebtoken::Algorithm::HS384,
            jsonwebtoken::Algorithm::HS512,
        ] {
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(alg),
                &claims(&["chat"]),
                &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
            )
            .unwrap();
            assert_invalid(bearer(&token), &token, "algorithm not allowed").await;
        }
    }

    #[tokio::test]
    async fn oversized_token() {
        let token = "x".repeat(20 * 1024);
        assert_invalid(bearer(&token), &token, "token too large").await;
    }

    #[tokio::test]
    async fn project_scope() {
        let token = token(&claims(&["chat"]));

        let res = send(layer(), scoped(bearer(&token), "chat")).await;
        assert_eq!(res.status(), StatusCode::OK);

        let (status, challenge, json) =
            read(send(layer(), scoped(bearer(&token), "billing")).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer error="insufficient_scope""#)
        );
        assert_eq!(json["error"], "forbidden");
        assert_eq!(
            json["message"],
            "token does not grant access to project billing"
        );
        assert!(!json.to_string().contains(&token));

        // Without a scope only authentication is done.
        let res = send(layer(), bearer(&token)).await;
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn star_project_is_allowed() {
        let token = token(&claims(&["*"]));
        let res = send(layer(), scoped(bearer(&token), "anything")).await;
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn secret_rotation() {
        let layer = JwtAuthLayer::new(JwtVerifier::hs256(["new-secret", "old-secret"]));
        for secret in ["new-secret", "old-secret"] {
            let token = JwtSigner::hs256(secret).sign(&claims(&["chat"])).unwrap();
            let res = send(layer.clone(), bearer(&token)).await;
            assert_eq!(res.status(), StatusCode::OK, "{secret}");
        }
    }

    #[tokio::test]
    async fn rejection_never_calls_inner_service() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let inner = service_fn(move |_req: Request<()>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Body::default())) }
        });
        let res = JwtAuth::new(inner, JwtVerifier::hs256([SECRET]))
            .oneshot(Request::get("/").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn oneshot_with_shared_verifier() {
        let verifier = Arc::new(JwtVerifier::hs256([SECRET]).leeway(Duration::from_secs(1)));
        let service = ServiceBuilder::new()
            .layer(JwtAuthLayer::new(Arc::clone(&verifier)))
            .service_fn(echo);
        let res = service
            .oneshot(bearer(&token(&claims(&["chat"]))))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn replaced_keys_apply_to_the_next_request() {
        let shared = SharedVerifier::new(JwtVerifier::hs256(["old-secret-0123456789"]));
        let layer = JwtAuthLayer::new(shared.clone());
        let old = JwtSigner::hs256("old-secret-0123456789")
            .sign(&claims(&["chat"]))
            .unwrap();
        assert_eq!(
            send(layer.clone(), bearer(&old)).await.status(),
            StatusCode::OK
        );
        shared.replace(JwtVerifier::hs256(["new-secret-0123456789"]));
        let (status, _, json) = read(send(layer, bearer(&old)).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(json["message"], "signature does not match");
    }
}
