//! Identifiers: connections, projects and users.

use std::fmt;
use std::sync::Arc;

/// A connection's id, unique for the life of the process.
///
/// The transport hands them out from a counter, so an id is never reused and a stale
/// handle can never reach a newer connection (the ABA guard of h2's store keys).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// A project id: 1–128 characters of `[A-Za-z0-9._:-]` (SPEC §2).
///
/// Cheap to clone: the hub keeps one per member.
///
/// ```
/// use ws_core::ProjectId;
/// assert!(ProjectId::parse("acme:web-1").is_ok());
/// assert!(ProjectId::parse("").is_err());
/// assert!(ProjectId::parse("a/b").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(Arc<str>);

/// Why a string is not a project id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidProjectId {
    /// Empty or over 128 characters: send 1–128.
    #[error("project id must be 1 to 128 characters long, got {0}")]
    Length(usize),
    /// A character outside `[A-Za-z0-9._:-]`.
    #[error("project id may only contain A-Z a-z 0-9 . _ : -")]
    Character,
}

impl ProjectId {
    /// The longest project id.
    pub const MAX_LEN: usize = 128;

    /// Validates `s` as a project id.
    pub fn parse(s: &str) -> Result<Self, InvalidProjectId> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return Err(InvalidProjectId::Length(s.len()));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(InvalidProjectId::Character);
        }
        Ok(Self(s.into()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user id: the `sub` claim of the token. Shared by all of a user's connections.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    /// Wraps a user id.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_follow_the_spec() {
        let ok = ["a", "A.b_c:d-9", &"x".repeat(128)];
        for s in ok {
            assert_eq!(ProjectId::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(ProjectId::parse(""), Err(InvalidProjectId::Length(0)));
        assert_eq!(
            ProjectId::parse(&"x".repeat(129)),
            Err(InvalidProjectId::Length(129))
        );
        for s in ["a b", "a/b", "é", "a%20", "a?b", "a#b"] {
            assert_eq!(ProjectId::parse(s), Err(InvalidProjectId::Character), "{s}");
        }
    }
}
