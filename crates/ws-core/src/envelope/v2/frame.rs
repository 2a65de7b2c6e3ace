//! Serialising v2 server frames.

use serde::Serialize;
use serde_json::value::RawValue;

#[cfg(doc)]
use super::Target;
use super::{PERSONAL, PROTOCOL};
#[cfg(doc)]
use crate::envelope::code;
use crate::history::LostReason;
use crate::ids::ProjectId;

/// Why the server ended a subscription the client did not end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnsubscribeReason {
    /// A refreshed token no longer grants the project.
    Forbidden,
    /// An operator closed the project (the admin API): the connection and its other
    /// subscriptions carry on.
    Closed,
}

/// The `event` of a `presence` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PresenceEvent {
    /// A user's first connection subscribed.
    Join,
    /// A user's last connection left.
    Leave,
    /// The answer to a `presence` request: every user present.
    Sync,
}

/// A frame a v2 server sends. Serialise it with [`ServerFrame::to_json`]; `project` is
/// [`Target::as_str`], `~user` for the personal stream.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerFrame<'a> {
    /// The first frame of every connection ([`ServerFrame::welcome`]).
    Welcome {
        /// The connection id.
        conn: u64,
        /// The user id (the token's `sub`).
        user: &'a str,
        /// The server's ping interval, so a client can detect a dead server.
        ping_interval_ms: u64,
        /// The protocol version: [`PROTOCOL`].
        protocol: u32,
    },
    /// The answer to a `subscribe`; the `missed` messages follow it.
    Subscribed {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// The target.
        project: &'a str,
        /// The epoch of the target's stream.
        epoch: &'a str,
        /// The stream's newest offset when the subscription started.
        offset: u64,
        /// Whether the requested recovery succeeded.
        recovered: bool,
        /// How many missed messages follow.
        missed: u64,
        /// Why a `since`/`epoch` recovery failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        lost_reason: Option<LostReason>,
    },
    /// The answer to an `unsubscribe`, or (without id, with a reason) the server's own.
    Unsubscribed {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// The target.
        project: &'a str,
        /// Why the server ended the subscription.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<UnsubscribeReason>,
    },
    /// A message; a retained one is built from its v1 frame by [`message_frame_from_v1`].
    Message {
        /// The target it was published to.
        project: &'a str,
        /// Its offset; `None` for an ephemeral message.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// The publisher.
        from: &'a str,
        /// The payload, verbatim.
        data: &'a RawValue,
        /// Milliseconds since the Unix epoch when the server accepted it.
        ts: u64,
        /// Delivered live only, never retained.
        #[serde(skip_serializing_if = "is_false")]
        ephemeral: bool,
    },
    /// The answer to a `publish`.
    Ack {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// The target.
        project: &'a str,
        /// The message's offset; `None` for an ephemeral publish.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// The key was already published: nothing new was.
        #[serde(skip_serializing_if = "is_false")]
        duplicate: bool,
    },
    /// Presence: `join`/`leave` of one user, or the `sync` answer with every user.
    Presence {
        /// The request's id (`sync` only).
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// The target.
        project: &'a str,
        /// What happened.
        event: PresenceEvent,
        /// The user who joined or left.
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<&'a str>,
        /// Every user present (`sync`).
        #[serde(skip_serializing_if = "Option::is_none")]
        users: Option<Vec<&'a str>>,
    },
    /// The answer to a `history` request.
    History {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// The target.
        project: &'a str,
        /// The epoch of the stream.
        epoch: &'a str,
        /// The stream's newest offset.
        offset: u64,
        /// Whether every retained message the request asked for is in `messages`.
        complete: bool,
        /// The stored `message` frames, embedded verbatim.
        messages: Vec<&'a RawValue>,
    },
    /// The answer to a `refresh` whose token verified.
    Refreshed {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// The new token's expiry, seconds since the Unix epoch.
        exp: u64,
    },
    /// The answer to a `ping`.
    Pong {
        /// The request's id.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
    /// A request that was not accepted.
    Error {
        /// The request's id, when it could be read.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// The request's target, when it had a valid one.
        #[serde(skip_serializing_if = "Option::is_none")]
        project: Option<&'a str>,
        /// A stable machine-readable code: one of [`code`].
        code: &'a str,
        /// What was wrong, for a developer.
        message: &'a str,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl<'a> ServerFrame<'a> {
    /// The `welcome` frame, with `protocol` [`PROTOCOL`].
    pub fn welcome(conn: u64, user: &'a str, ping_interval_ms: u64) -> Self {
        Self::Welcome {
            conn,
            user,
            ping_interval_ms,
            protocol: PROTOCOL,
        }
    }

    /// The `sync` answer to a `presence` request.
    pub fn presence_sync(id: Option<&'a str>, project: &'a str, users: Vec<&'a str>) -> Self {
        Self::Presence {
            id,
            project,
            event: PresenceEvent::Sync,
            user: None,
            users: Some(users),
        }
    }

    /// `user` joined (`event` [`PresenceEvent::Join`]) or left ([`PresenceEvent::Leave`]).
    pub fn presence_change(project: &'a str, event: PresenceEvent, user: &'a str) -> Self {
        Self::Presence {
            id: None,
            project,
            event,
            user: Some(user),
            users: None,
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every key is a string and RawValue is valid JSON.
        serde_json::to_string(self)
            .unwrap_or_else(|_| unreachable!("server frames always serialise"))
    }
}

/// The v2 `message` frame of a stored v1 one (`{"type":"message","offset":…}`, as
/// [`crate::envelope::ServerFrame::Message`] serialises), for `project` (a project id or `~user`,
/// neither of which needs escaping): `"project":p,` spliced in after `"type"`, in one
/// concatenation, without parsing the frame again.
///
/// ```
/// use ws_core::envelope::v2::message_frame_from_v1;
/// let v1 = r#"{"type":"message","offset":3,"from":"u","data":1,"ts":5}"#;
/// assert_eq!(
///     message_frame_from_v1("chat", v1),
///     r#"{"type":"message","project":"chat","offset":3,"from":"u","data":1,"ts":5}"#
/// );
/// ```
pub fn message_frame_from_v1(project: &str, v1_frame: &str) -> String {
    debug_assert!(
        v1_frame.starts_with(r#"{"type":"message","#),
        "not a v1 message frame: {v1_frame}"
    );
    with_project(project, v1_frame)
}

/// The v2 form of any v1 frame the server fans out (`message`, presence `join`/`leave`):
/// `"project":p,` inserted right after its `"type"`, which every server frame has first.
/// One concatenation per fan-out, whatever the number of v2 recipients.
///
/// ```
/// use ws_core::envelope::v2::with_project;
/// let v1 = r#"{"type":"presence","event":"join","user":"u"}"#;
/// assert_eq!(
///     with_project("~user", v1),
///     r#"{"type":"presence","project":"~user","event":"join","user":"u"}"#
/// );
/// ```
pub fn with_project(project: &str, v1_frame: &str) -> String {
    const TYPE: &str = r#"{"type":""#;
    debug_assert!(
        project == PERSONAL || ProjectId::parse(project).is_ok(),
        "{project:?} would need escaping"
    );
    // The type's value is one of ours (no quote, no escape): its closing quote and comma
    // end the head.
    let head_len = v1_frame
        .strip_prefix(TYPE)
        .and_then(|rest| rest.find("\","))
        .map(|at| TYPE.len() + at + 2);
    debug_assert!(head_len.is_some(), "not a server frame: {v1_frame}");
    let (head, rest) = match head_len {
        Some(n) => v1_frame.split_at(n),
        None => ("{", v1_frame.strip_prefix('{').unwrap_or(v1_frame)),
    };
    let mut frame = String::with_capacity(v1_frame.len() + project.len() + 13);
    frame.push_str(head);
    frame.push_str(r#""project":""#);
    frame.push_str(project);
    frame.push_str("\",");
    frame.push_str(rest);
    frame
}
