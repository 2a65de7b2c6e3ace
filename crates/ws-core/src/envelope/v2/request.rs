//! Parsing v2 client frames: [`Request`] or [`RequestError`].

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, MAX_ID_CHARS, MAX_KEY_BYTES, MAX_LAST,
    MAX_TOKEN_BYTES, PERSONAL, ServerFrame, Target,
};
use crate::envelope::{Payload, code, is_json_but_not_an_object, truncate};
use crate::ids::InvalidProjectId;

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recover {
    /// Neither `since` nor `last`: live messages only.
    Latest,
    /// `"since":offset,"epoch":epoch`: every retained message after `offset`, when the
    /// stream is still `epoch`.
    Since {
        /// The last offset the client saw.
        offset: u64,
        /// The epoch that offset belongs to.
        epoch: String,
    },
    /// `"last":k`: the newest `k` retained messages (at most [`MAX_LAST`]).
    Last(u32),
}

/// A frame a v2 client sends. See the [module docs](super) for what is refused.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Request {
    /// `{"type":"subscribe","id"?,"project","since"?,"epoch"?,"last"?}`.
    Subscribe {
        /// The request's id, repeated in the answer.
        id: Option<String>,
        /// What to subscribe to.
        target: Target,
        /// Which messages to replay first.
        recovery: Recover,
    },
    /// `{"type":"unsubscribe","id"?,"project"}`.
    Unsubscribe {
        /// The request's id, repeated in the answer.
        id: Option<String>,
        /// What to unsubscribe from.
        target: Target,
    },
    /// `{"type":"publish","id"?,"project","data","key"?,"ephemeral"?,"echo"?}`.
    Publish {
        /// The request's id, repeated in the `ack`.
        id: Option<String>,
        /// Where to publish.
        target: Target,
        /// The payload, verbatim (never `null`).
        data: Payload,
        /// The idempotency key: 1–[`MAX_KEY_BYTES`] bytes.
        key: Option<String>,
        /// Delivered live only: no offset, not retained (default `false`).
        ephemeral: bool,
        /// Whether the publisher gets its own message too (default `true`).
        echo: bool,
    },
    /// `{"type":"presence","id"?,"project"}`: ask for the `sync` answer.
    Presence {
        /// The request's id, repeated in the answer.
        id: Option<String>,
        /// Whose presence.
        target: Target,
    },
    /// `{"type":"history","id"?,"project","since"?,"limit"?,"reverse"?}`.
    History {
        /// The request's id, repeated in the answer.
        id: Option<String>,
        /// Whose history.
        target: Target,
        /// Only messages after this offset.
        since: Option<u64>,
        /// At most this many messages: 1–[`MAX_HISTORY_LIMIT`], [`DEFAULT_HISTORY_LIMIT`]
        /// when absent.
        limit: u32,
        /// Newest first.
        reverse: bool,
    },
    /// `{"type":"refresh","id"?,"token"}`: a new token for the connection.
    Refresh {
        /// The request's id, repeated in the answer.
        id: Option<String>,
        /// The token, not yet verified (at most [`MAX_TOKEN_BYTES`]).
        token: String,
    },
    /// `{"type":"ping","id"?}`: answered at once with a `pong`.
    Ping {
        /// The request's id, repeated in the `pong`.
        id: Option<String>,
    },
}

impl Request {
    /// Parses one text frame.
    ///
    /// ```
    /// use ws_core::envelope::{code, v2::{Recover, Request, Target}};
    /// let frame = r#"{"type":"subscribe","id":"1","project":"~user","last":5}"#;
    /// let Ok(Request::Subscribe { target, recovery, .. }) = Request::parse(frame) else { panic!() };
    /// assert_eq!((target, recovery), (Target::Personal, Recover::Last(5)));
    ///
    /// let e = Request::parse(r#"{"type":"presence","id":"2","project":"a b"}"#).unwrap_err();
    /// assert_eq!((e.id(), e.code(), e.is_fault()), (Some("2"), code::INVALID_PROJECT, false));
    /// ```
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let cx = Cx::default();
        if is_json_but_not_an_object(text) {
            return Err(cx.fault(code::INVALID_FRAME, "a frame must be a JSON object"));
        }
        let raw: RawRequest<'_> = serde_json::from_str(text)
            .map_err(|e| cx.fault(code::INVALID_JSON, format!("invalid JSON: {e}")))?;
        let mut cx = Cx {
            id: read_id(raw.id)?,
            ..cx
        };
        let Some(kind) = cx.field::<String>(raw.kind, "type", STRING)? else {
            return Err(cx.fault(code::INVALID_FRAME, "missing field `type`"));
        };
        match kind.as_str() {
            "subscribe" => {
                let project = cx.project(raw.project, "subscribe")?;
                let since = cx.field::<u64>(raw.since, "since", INTEGER)?;
                let epoch = cx.field::<String>(raw.epoch, "epoch", STRING)?;
                let last = cx.field::<u64>(raw.last, "last", INTEGER)?;
                let target = cx.target(project)?;
                let recovery = match (last, since, epoch) {
                    (None, None, None) => Recover::Latest,
                    (None, Some(offset), Some(epoch)) => Recover::Since { offset, epoch },
                    (None, Some(_), None) => {
                        return Err(cx.refuse(
                            code::INVALID_FRAME,
                            "`since` needs the `epoch` it was read in",
                        ));
                    }
                    (None, None, Some(_)) => {
                        return Err(cx.refuse(code::INVALID_FRAME, "`epoch` needs `since`"));
                    }
                    (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                        return Err(cx.refuse(
                            code::INVALID_FRAME,
                            "`last` replaces `since` and `epoch`: send one or the other",
                        ));
                    }
                    (Some(k), None, None) => match u32::try_from(k) {
                        Ok(k) if k <= MAX_LAST => Recover::Last(k),
                        _ => {
                            return Err(cx.refuse(
                                code::INVALID_FRAME,
                                format!("`last` must be at most {MAX_LAST}, got {k}"),
                            ));
                        }
                    },
                };
                Ok(Self::Subscribe {
                    id: cx.id,
                    target,
                    recovery,
                })
            }
            "unsubscribe" => {
                let project = cx.project(raw.project, "unsubscribe")?;
                let target = cx.target(project)?;
                Ok(Self::Unsubscribe { id: cx.id, target })
            }
            "publish" => {
                let project = cx.project(raw.project, "publish")?;
                // `"data": null` is missing, as in v1: publishing nothing is a client bug.
                let Some(data) = raw.data else {
                    return Err(cx.missing("publish", "data"));
                };
                let key = cx.field::<String>(raw.key, "key", STRING)?;
                let ephemeral = cx.field::<bool>(raw.ephemeral, "ephemeral", BOOLEAN)?;
                let echo = cx.field::<bool>(raw.echo, "echo", BOOLEAN)?;
                let target = cx.target(project)?;
                if let Some(len) = key.as_ref().map(String::len)
                    && !(1..=MAX_KEY_BYTES).contains(&len)
                {
                    return Err(cx.refuse(
                        code::INVALID_KEY,
                        format!("`key` must be 1 to {MAX_KEY_BYTES} bytes long, got {len}"),
                    ));
                }
                Ok(Self::Publish {
                    id: cx.id,
                    target,
                    data: Payload::new(data.to_owned()),
                    key,
                    ephemeral: ephemeral.unwrap_or(false),
                    echo: echo.unwrap_or(true),
                })
            }
            "presence" => {
                let project = cx.project(raw.project, "presence")?;
                let target = cx.target(project)?;
                Ok(Self::Presence { id: cx.id, target })
            }
            "history" => {
                let project = cx.project(raw.project, "history")?;
                let since = cx.field::<u64>(raw.since, "since", INTEGER)?;
                let requested = cx.field::<u64>(raw.limit, "limit", INTEGER)?;
                let reverse = cx.field::<bool>(raw.reverse, "reverse", BOOLEAN)?;
                let target = cx.target(project)?;
                let limit = match requested.map(u32::try_from) {
                    None => DEFAULT_HISTORY_LIMIT,
                    Some(Ok(limit)) if (1..=MAX_HISTORY_LIMIT).contains(&limit) => limit,
                    Some(_) => {
                        return Err(cx.refuse(
                            code::INVALID_FRAME,
                            format!(
                                "`limit` must be 1 to {MAX_HISTORY_LIMIT}, got {}",
                                requested.unwrap_or_default()
                            ),
                        ));
                    }
                };
                Ok(Self::History {
                    id: cx.id,
                    target,
                    since,
                    limit,
                    reverse: reverse.unwrap_or(false),
                })
            }
            "refresh" => {
                let Some(token) = cx.field::<String>(raw.token, "token", STRING)? else {
                    return Err(cx.missing("refresh", "token"));
                };
                if token.len() > MAX_TOKEN_BYTES {
                    return Err(cx.refuse(
                        code::INVALID_FRAME,
                        format!("`token` must be at most {MAX_TOKEN_BYTES} bytes"),
                    ));
                }
                Ok(Self::Refresh { id: cx.id, token })
            }
            "ping" => Ok(Self::Ping { id: cx.id }),
            other => {
                let message = format!("unknown type `{}`", truncate(other, 64));
                Err(cx.fault(code::UNKNOWN_TYPE, message))
            }
        }
    }

    /// The request's `id`, to repeat in its answer.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Subscribe { id, .. }
            | Self::Unsubscribe { id, .. }
            | Self::Publish { id, .. }
            | Self::Presence { id, .. }
            | Self::History { id, .. }
            | Self::Refresh { id, .. }
            | Self::Ping { id } => id.as_deref(),
        }
    }

    /// What the request addresses; `None` for `refresh` and `ping`.
    pub fn target(&self) -> Option<&Target> {
        match self {
            Self::Subscribe { target, .. }
            | Self::Unsubscribe { target, .. }
            | Self::Publish { target, .. }
            | Self::Presence { target, .. }
            | Self::History { target, .. } => Some(target),
            Self::Refresh { .. } | Self::Ping { .. } => None,
        }
    }
}

/// Why a v2 client frame was not accepted: answer it with [`RequestError::to_frame`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    id: Option<String>,
    target: Option<Target>,
    code: &'static str,
    message: String,
    fault: bool,
}

impl RequestError {
    /// The request's id, when it could be read (and was at most 64 characters).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The request's target, when it had a valid one.
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    /// The `code` of the `error` frame: one of [`code`].
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What was wrong, for a developer.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the frame was malformed, counting towards the fault budget, rather than
    /// refused for a value out of range (see the [module docs](super)).
    pub fn is_fault(&self) -> bool {
        self.fault
    }

    /// The `error` frame that answers it.
    pub fn to_frame(&self) -> ServerFrame<'_> {
        ServerFrame::Error {
            id: self.id(),
            project: self.target.as_ref().map(Target::as_str),
            code: self.code,
            message: &self.message,
        }
    }
}

const STRING: &str = "a string";
const INTEGER: &str = "a non-negative integer";
const BOOLEAN: &str = "a boolean";

/// Every field any request may carry, each left raw until its type is known: a field of
/// the wrong type then fails alone, and the id read before it still goes in the answer.
/// A `null` field is absent.
#[derive(Deserialize)]
struct RawRequest<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    project: Option<&'a RawValue>,
    #[serde(borrow)]
    since: Option<&'a RawValue>,
    #[serde(borrow)]
    epoch: Option<&'a RawValue>,
    #[serde(borrow)]
    last: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    key: Option<&'a RawValue>,
    #[serde(borrow)]
    ephemeral: Option<&'a RawValue>,
    #[serde(borrow)]
    echo: Option<&'a RawValue>,
    #[serde(borrow)]
    limit: Option<&'a RawValue>,
    #[serde(borrow)]
    reverse: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
}

/// Reads the `id`: a string of at most [`MAX_ID_CHARS`] characters, or absent.
fn read_id(raw: Option<&RawValue>) -> Result<Option<String>, RequestError> {
    let cx = Cx::default();
    let id = cx.field::<String>(raw, "id", STRING)?;
    if id
        .as_ref()
        .is_some_and(|id| id.chars().count() > MAX_ID_CHARS)
    {
        return Err(cx.fault(
            code::INVALID_FRAME,
            format!("`id` must be at most {MAX_ID_CHARS} characters"),
        ));
    }
    Ok(id)
}

/// What is known of the request so far, for its errors.
#[derive(Default)]
struct Cx {
    id: Option<String>,
    target: Option<Target>,
}

impl Cx {
    fn error(&self, code: &'static str, message: impl Into<String>, fault: bool) -> RequestError {
        RequestError {
            id: self.id.clone(),
            target: self.target.clone(),
            code,
            message: message.into(),
            fault,
        }
    }

    fn fault(&self, code: &'static str, message: impl Into<String>) -> RequestError {
        self.error(code, message, true)
    }

    fn refuse(&self, code: &'static str, message: impl Into<String>) -> RequestError {
        self.error(code, message, false)
    }

    fn missing(&self, kind: &str, field: &str) -> RequestError {
        self.fault(
            code::INVALID_FRAME,
            format!("missing field `{field}` for type `{kind}`"),
        )
    }

    /// An optional field of type `T`; any other JSON type is a fault.
    fn field<T: serde::de::DeserializeOwned>(
        &self,
        raw: Option<&RawValue>,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, RequestError> {
        raw.map(|raw| {
            serde_json::from_str(raw.get()).map_err(|_| {
                self.fault(
                    code::INVALID_JSON,
                    format!("field `{name}` must be {expected}"),
                )
            })
        })
        .transpose()
    }

    /// The required `project`, as text. Its value is checked by [`Cx::target`] once
    /// every other field's type is, but a valid one goes in the errors from now on.
    fn project(
        &mut self,
        raw: Option<&RawValue>,
        kind: &str,
    ) -> Result<Result<Target, InvalidProjectId>, RequestError> {
        let Some(project) = self.field::<String>(raw, "project", STRING)? else {
            return Err(self.missing(kind, "project"));
        };
        match Target::parse(&project) {
            Ok(target) => {
                self.target = Some(target.clone());
                Ok(Ok(target))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// The target, or the `invalid_project` refusal.
    fn target(&self, project: Result<Target, InvalidProjectId>) -> Result<Target, RequestError> {
        project.map_err(|e| {
            self.refuse(
                code::INVALID_PROJECT,
                format!("`project` must be `{PERSONAL}` or a project id: {e}"),
            )
        })
    }
}
