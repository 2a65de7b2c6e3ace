//! The HTTP API of SPEC §2, behind API keys: publish, history, presence.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::value::RawValue;
use ws_core::envelope::{Payload, code};
use ws_core::{IdempotencyKey, ProjectId, UserId};
use ws_transport::broker::{BrokerError, HistoryQuery, Publication, Published, StoredMessage};
use ws_transport::publish::{BROKER_UNAVAILABLE_MESSAGE, publish, publish_batch};
use ws_transport::{Broker, SharedHub, json_error};

use crate::http::{Body, Handle, json, method_not_allowed, not_found};

/// Bytes a publish body may hold beyond `data` itself: `from` and the JSON around them.
const ENVELOPE_SLACK: usize = 1024;

/// What the router parsed of `/api/projects/{project}/{resource}`: a valid project and a
/// resource of the API, passed on as a request extension through the `ApiKey` layer.
#[derive(Clone, Debug)]
pub(crate) struct ApiPath {
    /// `None` for the batch, whose items name their projects.
    project: Option<ProjectId>,
    resource: Resource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resource {
    Messages,
    Presence,
    /// `POST /api/users/{sub}/messages`: the user's personal stream (SPEC §11).
    UserMessages,
    /// `POST /api/messages`: a batch of publishes to any projects (SPEC §13).
    Batch,
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
        Some(Self {
            project: Some(project),
            resource,
        })
    }

    /// `/api/messages`: the batch publish.
    pub(crate) fn batch() -> Self {
        Self {
            project: None,
            resource: Resource::Batch,
        }
    }

    /// `/api/users/{sub}/messages`: the personal stream of `user` (SPEC §11), which only the
    /// backend writes to.
    pub(crate) fn personal(user: &UserId) -> Self {
        Self {
            project: Some(ProjectId::personal(user)),
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
        let project = match (project, resource) {
            (_, Resource::Batch) if req.method() == Method::POST => return self.batch(req).await,
            (_, Resource::Batch) => return method_not_allowed("POST", "a batch takes POST"),
            (Some(project), _) => project,
            (None, _) => return not_found(),
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
        let header_key = match req.headers().get("idempotency-key").map(|v| v.to_str()) {
            None => None,
            Some(Ok(key)) => Some(key.to_owned()),
            Some(Err(_)) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_KEY,
                    "the Idempotency-Key header must be visible ASCII",
                );
            }
        };
        let limit = self.max_message_bytes + ENVELOPE_SLACK;
        let body = match read_body(req, limit).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => return too_large(self.max_message_bytes),
            Err(BodyError::Unreadable(message)) => {
                return json_error(StatusCode::BAD_REQUEST, "bad_body", &message);
            }
        };
        let mut request = match parse_publish(&body) {
            Ok(request) => request,
            Err(message) => return json_error(StatusCode::BAD_REQUEST, "invalid_body", &message),
        };
        request.key = match (request.key.take(), header_key) {
            (Some(body), Some(header)) if body != header => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_KEY,
                    "the body's `key` and the Idempotency-Key header differ: send one",
                );
            }
            (body, header) => body.or(header),
        };
        let publication = match self.publication(request) {
            Ok(publication) => publication,
            Err(refused) => return refused.response(self.max_message_bytes),
        };
        match publish(&self.hub, &*self.broker, project, publication).await {
            Ok(published) => json(StatusCode::ACCEPTED, &published_json(published)),
            Err(e) => unavailable(&e),
        }
    }

    /// A checked publish request as the broker takes it.
    fn publication(&self, request: PublishRequest) -> Result<Publication, Refused> {
        if request.data.get().len() > self.max_message_bytes {
            return Err(Refused::TooLarge);
        }
        let key = match request.key.as_deref().map(IdempotencyKey::parse) {
            None => None,
            Some(Ok(key)) => Some(key),
            Some(Err(e)) => return Err(Refused::Key(e.to_string())),
        };
        let from = request.from.unwrap_or_else(|| "api".to_owned());
        let mut publication = Publication::new(from, Payload::new(request.data));
        publication.key = key;
        publication.ephemeral = request.ephemeral.unwrap_or(false);
        Ok(publication)
    }

    /// `POST /api/messages`: every item published in the batch's order (so each project's
    /// items keep it), each answered in its place; a bad item is reported and skipped.
    async fn batch(&self, req: Request<Incoming>) -> Response<Body> {
        let limit = MAX_BATCH * (self.max_message_bytes + ENVELOPE_SLACK);
        let body = match read_body(req, limit).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    &format!(
                        "a batch may hold at most {MAX_BATCH} messages of at most {} bytes each",
                        self.max_message_bytes
                    ),
                );
            }
            Err(BodyError::Unreadable(message)) => {
                return json_error(StatusCode::BAD_REQUEST, "bad_body", &message);
            }
        };
        let batch: BatchRequest<'_> = match serde_json::from_slice(&body) {
            Ok(batch) => batch,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    &format!("invalid JSON body: {e}"),
                );
            }
        };
        if batch.messages.is_empty() || batch.messages.len() > MAX_BATCH {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                &format!(
                    "`messages` must hold 1 to {MAX_BATCH} messages, got {}",
                    batch.messages.len()
                ),
            );
        }
        // The checked items go to the broker together (one round trip on Redis), in the
        // batch's order; a refused item keeps its place in the results.
        let mut items = Vec::with_capacity(batch.messages.len());
        let mut refused = Vec::with_capacity(batch.messages.len());
        for item in &batch.messages {
            match self.batch_item(item.get()) {
                Ok(item) => {
                    items.push(item);
                    refused.push(None);
                }
                Err(r) => refused.push(Some(r)),
            }
        }
        let mut published = publish_batch(&self.hub, &*self.broker, items)
            .await
            .into_iter();
        let results: Vec<String> = refused
            .into_iter()
            .map(|refused| match refused {
                Some(refused) => {
                    let (code, message) = refused.code_message(self.max_message_bytes);
                    item_error(code, &message)
                }
                None => match published.next() {
                    Some(Ok(published)) => published_json(published),
                    // `publish_batch` logged the broker's error; clients get the usual
                    // sentence.
                    Some(Err(_)) | None => {
                        item_error("broker_unavailable", BROKER_UNAVAILABLE_MESSAGE)
                    }
                },
            })
            .collect();
        json(
            StatusCode::OK,
            &format!(r#"{{"results":[{}]}}"#, results.join(",")),
        )
    }

    fn batch_item(&self, item: &str) -> Result<(ProjectId, Publication), Refused> {
        let item: BatchItem =
            serde_json::from_str(item).map_err(|e| Refused::Body(format!("invalid item: {e}")))?;
        let project =
            ProjectId::parse(&item.project).map_err(|e| Refused::Project(e.to_string()))?;
        let Some(data) = item.data else {
            return Err(Refused::Body("missing field `data`".to_owned()));
        };
        let request = check_publish(PublishRequest {
            data,
            from: item.from,
            key: item.key,
            ephemeral: item.ephemeral,
        })
        .map_err(Refused::Body)?;
        Ok((project, self.publication(request)?))
    }

    async fn history(&self, project: &ProjectId, query: Option<&str>) -> Response<Body> {
        let query = match parse_history_query(query.unwrap_or("")) {
            Ok(query) => query,
            Err(message) => {
                return json_error(StatusCode::BAD_REQUEST, "invalid_query", message);
            }
        };
        match self.broker.history(project, query).await {
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

/// The most items of a `POST /api/messages`.
const MAX_BATCH: usize = 100;

/// `{"data": <json>, "from"?: string, "key"?: string, "ephemeral"?: bool}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    data: Box<RawValue>,
    from: Option<String>,
    key: Option<String>,
    ephemeral: Option<bool>,
}

/// `{"messages": [item, …]}`, each item read on its own so that a bad one spoils nothing
/// else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    messages: Vec<&'a RawValue>,
}

/// `{"project": p, "data": <json>, "from"?, "key"?, "ephemeral"?}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    project: String,
    data: Option<Box<RawValue>>,
    from: Option<String>,
    key: Option<String>,
    ephemeral: Option<bool>,
}

/// Why one publish of the API is refused.
#[derive(Debug)]
enum Refused {
    /// `invalid_body`.
    Body(String),
    /// `invalid_project`.
    Project(String),
    /// `invalid_key`.
    Key(String),
    /// `too_large`.
    TooLarge,
}

impl Refused {
    fn code_message(self, max: usize) -> (&'static str, String) {
        match self {
            Self::Body(m) => ("invalid_body", m),
            Self::Project(m) => (code::INVALID_PROJECT, m),
            Self::Key(m) => (code::INVALID_KEY, m),
            Self::TooLarge => ("too_large", too_large_message(max)),
        }
    }

    fn response(self, max: usize) -> Response<Body> {
        let status = match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        let (code, message) = self.code_message(max);
        json_error(status, code, &message)
    }
}

fn parse_publish(body: &[u8]) -> Result<PublishRequest, String> {
    let request: PublishRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    check_publish(request)
}

fn check_publish(request: PublishRequest) -> Result<PublishRequest, String> {
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

/// `since=n&limit=k&reverse=true`: `limit` 1 to 1000 (none: everything after `since`, the
/// v1 answer), `reverse` `true` or `false`.
fn parse_history_query(query: &str) -> Result<HistoryQuery, &'static str> {
    let mut parsed = HistoryQuery::since(0);
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("since=") {
            parsed.since = v
                .parse()
                .map_err(|_| "since must be an offset (an unsigned integer)")?;
        } else if let Some(v) = pair.strip_prefix("limit=") {
            match v.parse::<u32>() {
                Ok(limit) if (1..=HistoryQuery::MAX_LIMIT).contains(&limit) => {
                    parsed.limit = Some(limit);
                }
                _ => return Err("limit must be 1 to 1000"),
            }
        } else if let Some(v) = pair.strip_prefix("reverse=") {
            parsed.reverse = match v {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err("reverse must be true or false"),
            };
        }
    }
    Ok(parsed)
}

/// `{"offset":n}`, `{"offset":n,"duplicate":true}`, or `{}` for an ephemeral publish.
fn published_json(published: Published) -> String {
    match published {
        Published {
            offset: Some(offset),
            duplicate: false,
        } => format!(r#"{{"offset":{offset}}}"#),
        Published {
            offset: Some(offset),
            duplicate: true,
        } => format!(r#"{{"offset":{offset},"duplicate":true}}"#),
        Published { offset: None, .. } => "{}".to_owned(),
    }
}

fn item_error(code: &str, message: &str) -> String {
    serde_json::json!({ "error": code, "message": message }).to_string()
}

enum BodyError {
    TooLarge,
    Unreadable(String),
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<bytes::Bytes, BodyError> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Unreadable(format!(
            "could not read the body: {e}"
        ))),
    }
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
        &too_large_message(max),
    )
}

fn too_large_message(max: usize) -> String {
    format!("`data` may hold at most {max} bytes (limits.max_message_bytes)")
}

/// A failed broker call: the caller learns to retry; the broker's own error (a Redis error
/// text, an address) goes to the log, never into an answer.
pub(crate) fn unavailable(e: &BrokerError) -> Response<Body> {
    tracing::debug!(error = %e, "broker call failed");
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "broker_unavailable",
        BROKER_UNAVAILABLE_MESSAGE,
    )
}

#[cfg(test)]
mod tests {
    use super::{HistoryQuery, parse_history_query, parse_publish};

    #[test]
    fn history_queries_are_checked() {
        assert_eq!(parse_history_query(""), Ok(HistoryQuery::since(0)));
        assert_eq!(
            parse_history_query("since=5&limit=1000&reverse=true"),
            Ok(HistoryQuery {
                since: 5,
                limit: Some(1000),
                reverse: true
            })
        );
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "since=-1",
            "reverse=yes",
        ] {
            assert!(parse_history_query(bad).is_err(), "{bad}");
        }
    }

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
        assert!(parse_publish(br#"{"data":1,"key":"k","ephemeral":true}"#).is_ok());
        assert!(err(br#"{"data":1,"ephemeral":"yes"}"#).contains("expected a boolean"));
    }
}
