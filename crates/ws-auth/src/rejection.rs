//! JSON error responses: `{"error": code, "message": text}`.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::error::AuthError;

/// A response with `status` and the JSON body `{"error": code, "message": message}`.
///
/// The body type only needs `From<Bytes>` (`http_body_util::Full<Bytes>`, `String`, …).
/// The one builder of this shape: `ws_transport::json_error` is this function, so the
/// server's other errors (404, 426, 503, …) and the layers' rejections cannot drift apart.
///
/// ```
/// use http::StatusCode;
/// use http_body_util::Full;
/// use bytes::Bytes;
///
/// let res: http::Response<Full<Bytes>> =
///     ws_auth::json_error(StatusCode::NOT_FOUND, "not_found", "no such project");
/// assert_eq!(res.status(), StatusCode::NOT_FOUND);
/// assert_eq!(res.headers()["content-type"], "application/json");
/// ```
pub fn json_error<B: From<Bytes>>(status: StatusCode, code: &str, message: &str) -> Response<B> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut res = Response::new(B::from(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// The rejection for `err`: its status and code, its message, and a `WWW-Authenticate`
/// challenge or a `Retry-After`.
///
/// `missing_token`, `missing_api_key` and `invalid_api_key` carry `Bearer`; `invalid_token`
/// carries `Bearer error="invalid_token"`; `forbidden` carries
/// `Bearer error="insufficient_scope"` (RFC 6750 §3.1); `rate_limited` carries `Retry-After` in
/// whole seconds, rounded up, at least 1; `origin_not_allowed` carries neither.
pub fn error_response<B: From<Bytes>>(err: &AuthError) -> Response<B> {
    let mut res = json_error(err.status(), err.code(), &err.to_string());
    let challenge = match err.code() {
        "missing_token" | "missing_api_key" | "invalid_api_key" => Some("Bearer"),
        "invalid_token" => Some(r#"Bearer error="invalid_token""#),
        "forbidden" => Some(r#"Bearer error="insufficient_scope""#),
        _ => None,
    };
    if let Some(challenge) = challenge {
        res.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    if let AuthError::RateLimited { retry_after } = err {
        let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    res
}

#[cfg(test)]
pub(crate) mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;

    /// Reads a rejection into its status, `WWW-Authenticate` and parsed JSON body.
    pub(crate) async fn read(
        res: Response<Full<Bytes>>,
    ) -> (StatusCode, Option<String>, serde_json::Value) {
        let status = res.status();
        let challenge = res
            .headers()
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        if status != StatusCode::OK {
            assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
        }
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, challenge, json)
    }

    #[tokio::test]
    async fn json_shape() {
        let res: Response<Full<Bytes>> = json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "slow \"down\"",
        );
        let (status, challenge, json) = read(res).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(challenge, None);
        assert_eq!(
            json,
            serde_json::json!({"error": "rate_limited", "message": "slow \"down\""})
        );
    }

    #[tokio::test]
    async fn challenges() {
        let cases = [
            (AuthError::MissingToken, "Bearer"),
            (AuthError::Expired, r#"Bearer error="invalid_token""#),
            (
                AuthError::Forbidden {
                    project: "p".to_owned(),
                },
                r#"Bearer error="insufficient_scope""#,
            ),
            (AuthError::MissingApiKey, "Bearer"),
            (AuthError::InvalidApiKey, "Bearer"),
            (AuthError::MissingKeyId, r#"Bearer error="invalid_token""#),
        ];
        for (err, expected) in cases {
            let (status, challenge, json) = read(error_response::<Full<Bytes>>(&err)).await;
            assert_eq!(status, err.status());
            assert_eq!(challenge.as_deref(), Some(expected));
            assert_eq!(json["error"], err.code());
            assert_eq!(json["message"], err.to_string());
        }
    }

    #[tokio::test]
    async fn rate_limited_and_origin_rejections() {
        for (wait, expected) in [
            (std::time::Duration::from_millis(1), "1"),
            (std::time::Duration::from_millis(1500), "2"),
            (std::time::Duration::from_secs(3), "3"),
        ] {
            let res: Response<Full<Bytes>> =
                error_response(&AuthError::RateLimited { retry_after: wait });
            assert_eq!(res.headers()[RETRY_AFTER], expected, "{wait:?}");
            let (status, challenge, json) = read(res).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(challenge, None);
            assert_eq!(json["error"], "rate_limited");
        }
        let (status, challenge, json) = read(error_response(&AuthError::OriginNotAllowed)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(challenge, None);
        assert_eq!(json["error"], "origin_not_allowed");
    }
}
