//! The HTTP API of SPEC §2, behind API keys: publish, history, presence.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;
use ws_core::envelope::Payload;
use ws_core::{ProjectId, UserId};
use ws_transport::broker::{BrokerError, StoredMessage};
use ws_transport::publish::{BROKER_UNAVAILABLE_MESSAGE, publish};
use ws_transport::{Broker, SharedHub, json_error};

use crate::http::{Body, Handle, json, method_not_allowed, not_found};

/// Bytes a publish body may hold beyond `data` itself: `from` and the JSON around them.
const ENVELOPE_SLACK: usize = 1024;

/// What the router parsed of `/api/projects/{project}/{resource}`: a valid project and a
/// resource of the API, passed on as a request extension through the `ApiKey` layer.
#[derive(Clone, Debug)]
pub(crate) struct ApiPath {
    project: ProjectId,
    resource: Resource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resource {
    Messages,
    Presence,
    /// `POST /api/users/{sub}/messages`: the user's personal stream (SPEC §11).
    UserMessages,
}

impl ApiPath {
    /// The route of `project` and the segments after it, if the API has one; the method is
    /// the handler's to check.
    pub(crate) fn new(project: ProjectId, rest: &[&str]) -> Option<Self> {
        let resource = match rest {
            ["messages"] => Resource::Messages,
            ["presence"] => Resource::Presence,
            _ => return None,
        };
        Some(Self { project, resource })
    }

    /// `/api/users/{sub}/messages`: the personal stream of `user` (SPEC §11), which only the
    /// backend writes to.
    pub(crate) fn personal(user: &UserId) -> Self {
        Self {
            project: ProjectId::personal(user),
            resource: Resource::UserMessages,
        }
    }
}

/// `/api/projects/{project}/...`.
#[derive(Debug)]
pub(crate) struct ApiHandler {
    hub: SharedHub,
    broker: Arc<dyn Broker>,
    max_message_bytes: usize,
}

impl ApiHandler {
    pub(crate) fn new(hub: SharedHub, broker: Arc<dyn Broker>, max_message_bytes: usize) -> Self {
        Self {
            hub,
            broker,
            max_message_bytes,
        }
    }
}

impl Handle for ApiHandler {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let Some(ApiPath { project, resource }) = req.extensions().get::<ApiPath>().cloned() else {
            return not_found();
        };
        match (req.method(), resource) {
            (&Method::POST, Resource::Messages | Resource::UserMessages) => {
                self.publish(&project, req).await
            }
            (&Method::GET, Resource::Messages) => self.history(&project, req.uri().query()).await,
            (&Method::GET, Resource::Presence) => self.presence(&project).await,
            (_, Resource::UserMessages) => {
                method_not_allowed("POST", "a user's messages take POST")
            }
            (_, resource) => method_not_allowed(
                if resource == Resource::Messages {
                    "GET, POST"
                } else {
                    "GET"
                },
                "messages takes GET and POST, presence takes GET",
            ),
        }
    }
}

impl ApiHandler {
    async fn publish(&self, project: &ProjectId, req: Request<Incoming>) -> Response<Body> {
        let limit = self.max_message_bytes + ENVELOPE_SLACK;
        let body = match Limited::new(req.into_body(), limit).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return too_large(self.max_message_bytes);
            }
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    &format!("could not read the body: {e}"),
                );
            }
        };
        let request = match parse_publish(&body) {
            Ok(request) => request,
            Err(message) => return json_error(StatusCode::BAD_REQUEST, "invalid_body", &message),
        };
        if request.data.get().len() > self.max_message_bytes {
            return too_large(self.max_message_bytes);
        }
        let from = request.from.unwrap_or_else(|| "api".to_owned());
        let data = Payload::new(request.data);
        match publish(&self.hub, &*self.broker, project, from, data, None).await {
            Ok(offset) => json(StatusCode::ACCEPTED, &format!(r#"{{"offset":{offset}}}"#)),
            Err(e) => unavailable(&e),
        }
    }

    async fn history(&self, project: &ProjectId, query: Option<&str>) -> Response<Body> {
        let since = match query
            .unwrap_or("")
            .split('&')
            .find_map(|p| p.strip_prefix("since="))
        {
            None => 0,
            Some(v) => match v.parse::<u64>() {
                Ok(since) => since,
                Err(_) => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        "since must be an offset (an unsigned integer)",
                    );
                }
            },
        };
        match self.broker.history(project, since).await {
            Ok(page) => {
                // The retained frames are JSON already: embed them, never re-encode.
                let messages = join_frames(&page.messages);
                let epoch = serde_json::to_string(&page.epoch).unwrap_or_default();
                json(
                    StatusCode::OK,
                    &format!(
                        r#"{{"epoch":{epoch},"offset":{},"complete":{},"messages":[{messages}]}}"#,
                        page.top, page.complete
                    ),
                )
            }
            Err(e) => unavailable(&e),
        }
    }

    async fn presence(&self, project: &ProjectId) -> Response<Body> {
        let local = self.hub.presence(project);
        let users = match self.broker.presence(project, local).await {
            Ok(users) => users,
            Err(e) => return unavailable(&e),
        };
        let users: Vec<serde_json::Value> = users
            .into_iter()
            .map(|(user, connections)| serde_json::json!({"user": user.as_str(), "connections": connections}))
            .collect();
        json(
            StatusCode::OK,
            &serde_json::json!({ "users": users }).to_string(),
        )
    }
}

/// `{"data": <json>, "from"?: string}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    data: Box<RawValue>,
    from: Option<String>,
}

fn parse_publish(body: &[u8]) -> Result<PublishRequest, String> {
    let request: PublishRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    if request.data.get() == "null" {
        return Err("`data` must not be null".to_owned());
    }
    if let Some(from) = &request.from
        && (from.is_empty() || from.len() > 128)
    {
        return Err("`from` must be 1 to 128 characters".to_owned());
    }
    Ok(request)
}

fn join_frames(messages: &[StoredMessage]) -> String {
    let mut out = String::with_capacity(messages.iter().map(|m| m.frame.len() + 1).sum());
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(m.frame.as_str());
    }
    out
}

fn too_large(max: usize) -> Response<Body> {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &format!("`data` may hold at most {max} bytes (limits.max_message_bytes)"),
    )
}

/// A failed broker call: the caller learns to retry; the broker's own error (a Redis error
/// text, an address) goes to the log, never into an answer.
fn unavailable(e: &BrokerError) -> Response<Body> {
    tracing::debug!(error = %e, "broker call failed");
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "broker_unavailable",
        BROKER_UNAVAILABLE_MESSAGE,
    )
}

#[cfg(test)]
mod tests {
    use super::parse_publish;

    #[test]
    fn publish_bodies_are_checked_precisely() {
        assert!(parse_publish(br#"{"data":{"a":1},"from":"billing"}"#).is_ok());
        assert!(parse_publish(br#"{"data":"x"}"#).is_ok());
        let err = |b: &[u8]| parse_publish(b).err().unwrap();
        assert!(err(b"").contains("EOF"));
        assert!(err(br#"{"from":"x"}"#).contains("missing field `data`"));
        assert!(err(br#"{"data":1,"extra":2}"#).contains("unknown field `extra`"));
        assert!(err(br#"{"data":1,"from":5}"#).contains("expected a string"));
        assert!(err(br#"{"data":null}"#).contains("must not be null"));
        assert!(err(br#"{"data":1,"from":""}"#).contains("1 to 128"));
    }
}
