//! The v1 wire protocol (SPEC §4): JSON text frames in both directions.
//!
//! Client frames are parsed without panicking, whatever the input, into [`ClientFrame`]
//! or an [`EnvelopeError`] that says precisely what is wrong. Server frames are
//! serialised once per event and shared by every recipient.
//!
//! The v2 protocol (SPEC §10–§11: many projects per connection, requests with ids) is
//! in [`v2`]; both share [`Payload`] and the error [`code`]s.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::dedupe::{IdempotencyKey, InvalidKey};

/// The WebSocket subprotocol of the v1 protocol, answered when the client offers it.
pub const SUBPROTOCOL: &str = "wshub.v1";

/// The WebSocket subprotocol of the v2 protocol ([`v2`]).
pub const SUBPROTOCOL_V2: &str = "wshub.v2";

pub mod v2;

/// The `code`s of `error` frames of both protocols: stable, machine-readable, documented
/// in `docs/protocol.md`. `message` is for developers and may change; these do not.
pub mod code {
    /// Not JSON, or a field of the wrong JSON type.
    pub const INVALID_JSON: &str = "invalid_json";
    /// JSON, but not a frame: not an object, no `type`, a required field missing.
    pub const INVALID_FRAME: &str = "invalid_frame";
    /// A `type` the server does not know.
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    /// A publish while `limits.allow_client_publish` is off.
    pub const PUBLISH_NOT_ALLOWED: &str = "publish_not_allowed";
    /// Over the publish rate or the request budget.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The broker could not serve the request; retry later.
    pub const BROKER_UNAVAILABLE: &str = "broker_unavailable";
    /// v2: the token grants no access to the project (or no longer does).
    pub const FORBIDDEN: &str = "forbidden";
    /// v2: a request about a project the connection is not subscribed to.
    pub const NOT_SUBSCRIBED: &str = "not_subscribed";
    /// v2: a subscribe over the connection's subscription limit.
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
    /// v2: a `project` that is neither a project id nor `~user`.
    pub const INVALID_PROJECT: &str = "invalid_project";
    /// v2: a publish `key` that is empty or over 128 bytes.
    pub const INVALID_KEY: &str = "invalid_key";
    /// v2: a `refresh` whose token does not verify.
    pub const INVALID_TOKEN: &str = "invalid_token";
}

/// A frame a client sends.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientFrame {
    /// `{"type":"publish","id"?:str,"data":json,"key"?:str,"ephemeral"?:bool,"echo"?:bool}`:
    /// publish `data` to the project.
    Publish {
        /// The client's id for the publish, echoed in the `ack`.
        id: Option<String>,
        /// The payload, kept as raw JSON so it is never re-encoded.
        data: Payload,
        /// The idempotency key ([`crate::dedupe`]): a repeat within the window is acked
        /// with the first offset and `"duplicate": true`, and delivers nothing.
        key: Option<IdempotencyKey>,
        /// Delivered live only: no offset, never retained nor replayed.
        ephemeral: bool,
        /// Whether the publishing connection receives its own message (default `true`).
        echo: bool,
    },
    /// `{"type":"presence"}`: ask for the project's presence list.
    Presence,
    /// `{"type":"ping","id"?:str}`: an application-level ping, answered at once with
    /// `{"type":"pong","id"?:str}` ([`ServerFrame::Pong`]).
    Ping {
        /// The client's id for the ping, echoed in the `pong`.
        id: Option<String>,
    },
}

/// Why a client frame was refused. Each is answered with an `error` frame
/// carrying [`EnvelopeError::code`]; repeated faults close with 1008.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not JSON, or a field of the wrong JSON type: fix the encoder.
    #[error("invalid JSON: {0}")]
    Json(#[source] Arc<serde_json::Error>),
    /// The frame is not a JSON object.
    #[error("a frame must be a JSON object")]
    NotAnObject,
    /// The frame is an object without a `type`.
    #[error("missing field `type`")]
    MissingType,
    /// A `type` this server does not know.
    #[error("unknown type `{0}`")]
    UnknownType(String),
    /// A required field is absent.
    #[error("missing field `{field}` for type `{kind}`")]
    MissingField {
        /// The frame's type.
        kind: &'static str,
        /// The absent field.
        field: &'static str,
    },
    /// A publish `key` that is empty or longer than 128 bytes: send a shorter key.
    #[error("invalid `key`: {0}")]
    InvalidKey(#[source] InvalidKey),
}

impl EnvelopeError {
    /// The `code` of the `error` frame that answers this fault.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Json(_) => code::INVALID_JSON,
            Self::NotAnObject | Self::MissingType | Self::MissingField { .. } => {
                code::INVALID_FRAME
            }
            Self::UnknownType(_) => code::UNKNOWN_TYPE,
            Self::InvalidKey(_) => code::INVALID_KEY,
        }
    }

    fn json(e: serde_json::Error) -> Self {
        Self::Json(Arc::new(e))
    }
}

/// Equal when they say the same: serde's errors cannot be compared, their texts can.
impl PartialEq for EnvelopeError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Json(a), Self::Json(b)) => a.to_string() == b.to_string(),
            (Self::NotAnObject, Self::NotAnObject) | (Self::MissingType, Self::MissingType) => true,
            (Self::UnknownType(a), Self::UnknownType(b)) => a == b,
            (Self::InvalidKey(a), Self::InvalidKey(b)) => a == b,
            (
                Self::MissingField { kind, field },
                Self::MissingField {
                    kind: k2,
                    field: f2,
                },
            ) => kind == k2 && field == f2,
            _ => false,
        }
    }
}

impl Eq for EnvelopeError {}

/// A JSON payload, verbatim as the client sent it: never re-encoded on its way through.
#[derive(Debug, Clone)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// Wraps raw JSON.
    pub fn new(raw: Box<RawValue>) -> Self {
        Self(raw)
    }

    /// Parses `json` as a payload.
    pub fn from_json(json: String) -> Result<Self, EnvelopeError> {
        RawValue::from_string(json)
            .map(Self)
            .map_err(EnvelopeError::json)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The raw value, for embedding in a server frame.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// Every field any client frame may carry; which are required depends on `type`.
#[derive(Deserialize)]
struct RawClientFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    id: Option<String>,
    data: Option<Box<RawValue>>,
    key: Option<String>,
    ephemeral: Option<bool>,
    echo: Option<bool>,
}

impl ClientFrame {
    /// Parses one text frame.
    ///
    /// ```
    /// use ws_core::envelope::{ClientFrame, EnvelopeError};
    /// let frame = ClientFrame::parse(r#"{"type":"publish","id":"1","data":{"x":1}}"#).unwrap();
    /// assert!(matches!(frame, ClientFrame::Publish { .. }));
    /// assert_eq!(
    ///     ClientFrame::parse(r#"{"type":"dance"}"#),
    ///     Err(EnvelopeError::UnknownType("dance".into()))
    /// );
    /// ```
    pub fn parse(text: &str) -> Result<Self, EnvelopeError> {
        if is_json_but_not_an_object(text) {
            return Err(EnvelopeError::NotAnObject);
        }
        let raw: RawClientFrame<'_> = serde_json::from_str(text).map_err(EnvelopeError::json)?;
        match raw.kind.as_deref() {
            None => Err(EnvelopeError::MissingType),
            Some("publish") => match raw.data {
                // A JSON `null` deserialises to `None` through `Option`, so `"data": null`
                // is refused as missing: publishing nothing is always a client bug.
                Some(data) => Ok(Self::Publish {
                    id: raw.id,
                    data: Payload(data),
                    key: raw
                        .key
                        .as_deref()
                        .map(IdempotencyKey::parse)
                        .transpose()
                        .map_err(EnvelopeError::InvalidKey)?,
                    ephemeral: raw.ephemeral.unwrap_or(false),
                    echo: raw.echo.unwrap_or(true),
                }),
                None => Err(EnvelopeError::MissingField {
                    kind: "publish",
                    field: "data",
                }),
            },
            Some("presence") => Ok(Self::Presence),
            Some("ping") => Ok(Self::Ping { id: raw.id }),
            Some(other) => Err(EnvelopeError::UnknownType(truncate(other, 64))),
        }
    }
}

/// Whether `text` is valid JSON that is not an object. serde would accept a struct
/// written as a JSON array; the protocols do not. Anything else is left to serde, which
/// says precisely what is wrong.
fn is_json_but_not_an_object(text: &str) -> bool {
    match text.trim_start().as_bytes().first() {
        Some(b'{') | None => false,
        Some(_) => serde_json::from_str::<&RawValue>(text).is_ok(),
    }
}

/// `s` cut to at most `max` bytes on a character boundary, for quoting client input.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A frame the server sends. Serialise it with [`ServerFrame::to_json`].
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerFrame<'a> {
    /// The first frame of every connection, sent once the hub has registered it.
    Welcome {
        /// The connection id.
        conn: u64,
        /// The user id (the token's `sub`).
        user: &'a str,
        /// The project.
        project: &'a str,
        /// The epoch of the project's history stream.
        epoch: &'a str,
        /// The project's newest offset when the client joined.
        offset: u64,
        /// Whether the requested recovery succeeded.
        recovered: bool,
        /// How many missed messages follow.
        missed: u64,
        /// The server's ping interval, so a client can detect a dead server.
        ping_interval_ms: u64,
    },
    /// An ephemeral message (`"ephemeral": true`): delivered live only, without an offset.
    #[serde(rename = "message")]
    EphemeralMessage {
        /// The publisher: a user id, or the `from` of an HTTP publish.
        from: &'a str,
        /// The payload, verbatim.
        data: &'a RawValue,
        /// Milliseconds since the Unix epoch when the server accepted it.
        ts: u64,
        /// Always `true`.
        ephemeral: bool,
    },
    /// A message published to the project.
    Message {
        /// Its offset in the project's stream.
        offset: u64,
        /// The publisher: a user id, or the `from` of an HTTP publish.
        from: &'a str,
        /// The payload, verbatim.
        data: &'a RawValue,
        /// Milliseconds since the Unix epoch when the server accepted it.
        ts: u64,
    },
    /// Presence: `join`/`leave` of one user, or the `sync` answer with every user.
    Presence {
        /// `join`, `leave` or `sync`.
        event: &'a str,
        /// The user who joined or left.
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        /// Every user present (for `sync`).
        #[serde(skip_serializing_if = "Option::is_none")]
        users: Option<Vec<&'a str>>,
    },
    /// The offset a client's publish was given.
    Ack {
        /// The client's id for the publish, when it gave one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// The message's offset; `None` for an ephemeral publish.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// The publish's key was already published: nothing new was, `offset` is the
        /// first publish's.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        duplicate: bool,
    },
    /// The answer to a `ping`, sent at once.
    Pong {
        /// The ping's id, when it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
    /// A recoverable fault in what the client sent.
    Error {
        /// A stable machine-readable code.
        code: &'a str,
        /// What was wrong, for a developer.
        message: &'a str,
    },
}

impl<'a> ServerFrame<'a> {
    /// The `ack` of a client's publish.
    pub fn ack(id: Option<&'a str>, offset: u64) -> Self {
        Self::Ack {
            id,
            offset: Some(offset),
            duplicate: false,
        }
    }

    /// An `error` frame: `code` is one of [`code`], `message` for a developer.
    pub fn error(code: &'a str, message: &'a str) -> Self {
        Self::Error { code, message }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every key is a string and RawValue is valid JSON.
        serde_json::to_string(self)
            .unwrap_or_else(|_| unreachable!("server frames always serialise"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        let got = ClientFrame::parse(input);
        match (got, expected) {
            (Ok(ClientFrame::Publish { id, data, .. }), Ok(want)) => {
                assert_eq!(format!("publish {:?} {}", id, data.get()), want)
            }
            (Ok(ClientFrame::Presence), Ok(want)) => assert_eq!("presence", want),
            (Ok(ClientFrame::Ping { id }), Ok(want)) => assert_eq!(format!("ping {id:?}"), want),
            (Err(e), Err(want)) => assert_eq!(e.to_string(), want, "{input}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_client_frames() {
        check(r#"{"type":"publish","data":1}"#, Ok("publish None 1"));
        check(
            r#"{"type":"publish","id":"a","data":{"k":[1,2]}}"#,
            Ok(r#"publish Some("a") {"k":[1,2]}"#),
        );
        check(r#"{"type":"presence"}"#, Ok("presence"));
        check(
            r#"{"data":1,"type":"presence","extra":true}"#,
            Ok("presence"),
        );
        check(r#"{"type":"ping"}"#, Ok("ping None"));
        check(r#"{"type":"ping","id":"p1"}"#, Ok(r#"ping Some("p1")"#));
        check(r#"{"type":"ping","id":null,"data":1}"#, Ok("ping None"));
    }

    #[test]
    fn refuses_bad_frames_precisely() {
        check(
            "",
            Err("invalid JSON: EOF while parsing a value at line 1 column 0"),
        );
        check("[1]", Err("a frame must be a JSON object"));
        check("\"publish\"", Err("a frame must be a JSON object"));
        check(
            r#"{"type":"publish"}"#,
            Err("missing field `data` for type `publish`"),
        );
        check(
            r#"{"type":"publish","data":null}"#,
            Err("missing field `data` for type `publish`"),
        );
        check(r#"{"data":1}"#, Err("missing field `type`"));
        check(r#"{"type":"dance"}"#, Err("unknown type `dance`"));
        check(
            r#"{"type":"publish","id":7,"data":1}"#,
            Err("invalid JSON: invalid type: integer `7`, expected a string at line 1 column 24"),
        );
        check(
            r#"{"type":"ping","id":1}"#,
            Err("invalid JSON: invalid type: integer `1`, expected a string at line 1 column 21"),
        );
        check(
            r#"{"type":5}"#,
            Err("invalid JSON: invalid type: integer `5`, expected a string at line 1 column 9"),
        );
    }

    #[test]
    fn v1_publishes_carry_key_ephemeral_and_echo() {
        let Ok(ClientFrame::Publish {
            key,
            ephemeral,
            echo,
            ..
        }) = ClientFrame::parse(r#"{"type":"publish","data":1}"#)
        else {
            panic!()
        };
        assert_eq!((key, ephemeral, echo), (None, false, true));
        let Ok(ClientFrame::Publish {
            key,
            ephemeral,
            echo,
            ..
        }) = ClientFrame::parse(
            r#"{"type":"publish","data":1,"key":"k-1","ephemeral":true,"echo":false}"#,
        )
        else {
            panic!()
        };
        assert_eq!(key.as_ref().map(IdempotencyKey::as_str), Some("k-1"));
        assert!(ephemeral && !echo);
        let long = format!(
            r#"{{"type":"publish","data":1,"key":"{}"}}"#,
            "k".repeat(129)
        );
        for bad in [r#"{"type":"publish","data":1,"key":""}"#, long.as_str()] {
            let err = ClientFrame::parse(bad).unwrap_err();
            assert_eq!(err.code(), code::INVALID_KEY, "{bad}");
        }
        let err = ClientFrame::parse(r#"{"type":"publish","data":1,"echo":"no"}"#).unwrap_err();
        assert_eq!(err.code(), code::INVALID_JSON);
    }

    #[test]
    fn serialises_exact_publishing_frames() {
        let data = RawValue::from_string("1".into()).unwrap();
        let frame = ServerFrame::EphemeralMessage {
            from: "u",
            data: &data,
            ts: 5,
            ephemeral: true,
        };
        assert_eq!(
            frame.to_json(),
            r#"{"type":"message","from":"u","data":1,"ts":5,"ephemeral":true}"#
        );
        let duplicate = ServerFrame::Ack {
            id: Some("x"),
            offset: Some(9),
            duplicate: true,
        };
        assert_eq!(
            duplicate.to_json(),
            r#"{"type":"ack","id":"x","offset":9,"duplicate":true}"#
        );
        let ephemeral = ServerFrame::Ack {
            id: None,
            offset: None,
            duplicate: false,
        };
        assert_eq!(ephemeral.to_json(), r#"{"type":"ack"}"#);
    }

    #[test]
    fn serialises_server_frames() {
        let data = RawValue::from_string(r#"{"a":1}"#.into()).unwrap();
        let frame = ServerFrame::Message {
            offset: 3,
            from: "u1",
            data: &data,
            ts: 5,
        };
        assert_eq!(
            frame.to_json(),
            r#"{"type":"message","offset":3,"from":"u1","data":{"a":1},"ts":5}"#
        );
        let welcome = ServerFrame::Welcome {
            conn: 1,
            user: "u",
            project: "p",
            epoch: "e1",
            offset: 7,
            recovered: false,
            missed: 0,
            ping_interval_ms: 25_000,
        };
        assert_eq!(
            welcome.to_json(),
            r#"{"type":"welcome","conn":1,"user":"u","project":"p","epoch":"e1","offset":7,"recovered":false,"missed":0,"ping_interval_ms":25000}"#
        );
        let ack = ServerFrame::ack(Some("x"), 9);
        assert_eq!(ack.to_json(), r#"{"type":"ack","id":"x","offset":9}"#);
        assert_eq!(
            ServerFrame::Pong { id: None }.to_json(),
            r#"{"type":"pong"}"#
        );
        assert_eq!(
            ServerFrame::Pong { id: Some("x") }.to_json(),
            r#"{"type":"pong","id":"x"}"#
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,256}") {
            let _ = ClientFrame::parse(&s);
        }

        #[test]
        fn publish_data_round_trips(n in proptest::num::i64::ANY, s in "[a-z]{0,20}") {
            let input = format!(r#"{{"type":"publish","data":{{"n":{n},"s":"{s}"}}}}"#);
            let Ok(ClientFrame::Publish { data, .. }) = ClientFrame::parse(&input) else {
                panic!("{input} did not parse");
            };
            let back: serde_json::Value = serde_json::from_str(data.get()).unwrap();
            proptest::prop_assert_eq!(back["n"].as_i64(), Some(n));
            proptest::prop_assert_eq!(back["s"].as_str(), Some(s.as_str()));
        }
    }
}
