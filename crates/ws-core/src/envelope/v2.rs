//! The v2 wire protocol (SPEC §10–§11): one connection, many projects, requests with ids.
//!
//! A client frame is parsed, without panicking whatever the input, into a [`Request`] or
//! a [`RequestError`] that carries what the transport needs to answer
//! `{"type":"error","id","project","code","message"}`: the request's `id` once it could be
//! read, and its [`Target`] once that was valid. Server frames are [`ServerFrame`]s,
//! serialised once with [`ServerFrame::to_json`]; a stored v1 `message` frame becomes a
//! v2 one with [`message_frame_from_v1`], without being parsed again.
//!
//! # Faults and refusals
//!
//! An error is a *fault* ([`RequestError::is_fault`]), counting towards the connection's
//! fault budget like every v1 error, when the frame is *malformed*: it is not JSON, not
//! an object, has no `type` or an unknown one, lacks a field its type requires, has a
//! field of the wrong JSON type (`"since":"3"`), or an `id` that is not a string of at
//! most 64 characters. Those are bugs in the client's encoder: no correct client sends
//! them.
//!
//! An error is a *refusal*, answered but not counted, when the frame is well formed but
//! a value is out of range: a `project` that is neither a project id nor `~user`
//! (`invalid_project`), a publish `key` that is empty or over 128 bytes (`invalid_key`),
//! a history `limit` outside 1–1000, a subscribe `last` over 100, `last` together with
//! `since`/`epoch`, `since` without `epoch` (or the reverse), a `token` over 8 KiB. Those
//! depend on values a correct client may get wrong at run time (a project id typed by a
//! user). Every field is type-checked before any value is, so a frame with both kinds
//! of errors is a fault.
//!
//! An error repeats the request's `id` whenever it could be read: not when the frame is
//! not a JSON object, and not when the `id` is not a string of at most 64 characters (so
//! an answer stays small). A field that is `null` is absent.

use std::fmt;

use crate::ids::{InvalidProjectId, ProjectId};

mod frame;
mod request;

pub use frame::{
    PresenceEvent, ServerFrame, UnsubscribeReason, message_frame_from_v1, with_project,
};
pub use request::{Recover, Request, RequestError};

/// The `project` that addresses the user's personal stream.
pub const PERSONAL: &str = "~user";
/// The `protocol` of the `welcome` frame.
pub const PROTOCOL: u32 = 2;
/// The longest request `id`, in characters.
pub const MAX_ID_CHARS: usize = 64;
/// The longest publish `key`, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// The largest subscribe `last`.
pub const MAX_LAST: u32 = 100;
/// The history `limit` when the request has none.
pub const DEFAULT_HISTORY_LIMIT: u32 = 100;
/// The largest history `limit`.
pub const MAX_HISTORY_LIMIT: u32 = 1000;
/// The longest `refresh` token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a request addresses: a project, or the user's personal stream (`"~user"`).
///
/// ```
/// use ws_core::envelope::v2::Target;
/// assert_eq!(Target::parse("~user"), Ok(Target::Personal));
/// assert_eq!(Target::parse("acme:web").unwrap().as_str(), "acme:web");
/// assert!(Target::parse("~alice").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A project.
    Project(ProjectId),
    /// The personal stream of the connection's user.
    Personal,
}

impl Target {
    /// Parses a frame's `project`: exactly `~user`, or a valid project id.
    pub fn parse(s: &str) -> Result<Self, InvalidProjectId> {
        if s == PERSONAL {
            Ok(Self::Personal)
        } else {
            ProjectId::parse(s).map(Self::Project)
        }
    }

    /// The `project` of frames about this target: the project id, or `~user`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Project(p) => p.as_str(),
            Self::Personal => PERSONAL,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
