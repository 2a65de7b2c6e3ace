//! Identifiers: connections, projects and users.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
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

/// A map keyed by [`ConnId`], hashed by one multiplication instead of SipHash.
///
/// SipHash guards maps whose keys an attacker picks (project and user ids); connection ids
/// come from the server's own counter, so a cheap hash is safe here, and these maps are on
/// the paths run for every subscription and every delivered frame.
///
/// ```
/// use ws_core::ids::{ConnId, ConnIdMap};
/// let mut members: ConnIdMap<&str> = ConnIdMap::default();
/// members.insert(ConnId(7), "p");
/// assert_eq!(members.get(&ConnId(7)), Some(&"p"));
/// ```
pub type ConnIdMap<V> = HashMap<ConnId, V, BuildHasherDefault<ConnIdHasher>>;

/// The hasher of [`ConnIdMap`]: the 128-bit product of the id with a constant, folded,
/// so consecutive ids spread over every bit the table uses (its low bits for the bucket,
/// its top seven for the control byte).
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnIdHasher(u64);

impl Hasher for ConnIdHasher {
    fn finish(&self) -> u64 {
        let product = u128::from(self.0) * 0x9e37_79b9_7f4a_7c15;
        (product as u64) ^ ((product >> 64) as u64)
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(5) ^ n;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than `ConnId`; correct, not fast.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
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

    /// The prefix of every personal stream's id.
    const PERSONAL_PREFIX: &'static str = "~u:";

    /// The internal id of `user`'s personal stream, which clients address as `~user`
    /// (SPEC §11): `~u:` followed by the user id with every byte outside `[A-Za-z0-9._-]`
    /// percent-encoded as `%XX` (upper-case hex), so it is safe inside Redis keys and hash
    /// tags (`{…}`) whatever the `sub` claim holds (`auth0|5f7c`, `alice@example.com`).
    ///
    /// The encoding is injective (`%` itself is encoded), so distinct users never share a
    /// stream. [`ProjectId::parse`] refuses `~`, so a personal id is never produced by it and
    /// cannot clash with a real project. It is not bounded by [`ProjectId::MAX_LEN`].
    ///
    /// ```
    /// use ws_core::{ProjectId, UserId};
    /// let id = ProjectId::personal(&UserId::new("auth0|5f7c"));
    /// assert_eq!(id.as_str(), "~u:auth0%7C5f7c");
    /// assert!(id.is_personal());
    /// assert!(ProjectId::parse(id.as_str()).is_err());
    /// ```
    pub fn personal(user: &UserId) -> Self {
        use fmt::Write as _;
        let sub = user.as_str();
        let mut id = String::with_capacity(Self::PERSONAL_PREFIX.len() + sub.len());
        id.push_str(Self::PERSONAL_PREFIX);
        for b in sub.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                id.push(char::from(b));
            } else {
                let _ = write!(id, "%{b:02X}");
            }
        }
        Self(id.into())
    }

    /// Reads back a stream id that [`ProjectId::as_str`] gave: a project id, or a personal
    /// stream's id exactly as [`ProjectId::personal`] writes it (upper-case `%XX` escapes
    /// for every byte it escapes, nothing else). For ids a broker keeps (Redis keys and
    /// channels), never for what clients send: they address their own stream as `~user`.
    ///
    /// ```
    /// use ws_core::{ProjectId, UserId};
    /// let mine = ProjectId::personal(&UserId::new("auth0|5f7c"));
    /// assert_eq!(ProjectId::parse_stream(mine.as_str()), Some(mine));
    /// assert_eq!(ProjectId::parse_stream("chat"), ProjectId::parse("chat").ok());
    /// assert_eq!(ProjectId::parse_stream("~u:a|b"), None); // `|` would have been escaped
    /// ```
    pub fn parse_stream(s: &str) -> Option<Self> {
        let Some(encoded) = s.strip_prefix(Self::PERSONAL_PREFIX) else {
            return Self::parse(s).ok();
        };
        let mut bytes = Vec::with_capacity(encoded.len());
        let mut rest = encoded.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            if b == b'%' {
                let hex = |i: usize| {
                    tail.get(i)
                        .filter(|d| d.is_ascii_digit() || (b'A'..=b'F').contains(d))
                };
                let (Some(hi), Some(lo)) = (hex(0), hex(1)) else {
                    return None;
                };
                let digit = |d: u8| char::from(d).to_digit(16).unwrap_or(0) as u8;
                bytes.push(digit(*hi) * 16 + digit(*lo));
                rest = &tail[2..];
            } else {
                bytes.push(b);
                rest = tail;
            }
        }
        let user = UserId::new(String::from_utf8(bytes).ok()?);
        let id = Self::personal(&user);
        // Only the one spelling `personal` produces: no two ids for one stream.
        (id.as_str() == s).then_some(id)
    }

    /// Whether this is a user's personal stream ([`ProjectId::personal`]).
    pub fn is_personal(&self) -> bool {
        self.0.starts_with(Self::PERSONAL_PREFIX)
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
    use proptest::prelude::*;

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

    #[test]
    fn personal_ids_encode_every_byte_outside_the_safe_set() {
        let cases = [
            ("alice", "~u:alice"),
            ("a.b_c-9", "~u:a.b_c-9"),
            ("auth0|5f7c", "~u:auth0%7C5f7c"),
            ("alice@example.com", "~u:alice%40example.com"),
            ("a:b{c}%", "~u:a%3Ab%7Bc%7D%25"),
            ("é", "~u:%C3%A9"),
            ("", "~u:"),
        ];
        for (user, id) in cases {
            let personal = ProjectId::personal(&UserId::new(user));
            assert_eq!(personal.as_str(), id, "{user}");
            assert!(personal.is_personal());
            assert!(ProjectId::parse(personal.as_str()).is_err(), "{user}");
        }
        assert!(!ProjectId::parse("u:alice").unwrap().is_personal());
    }

    proptest! {
        /// Distinct users get distinct personal ids, which `parse` always refuses.
        #[test]
        fn personal_ids_are_injective_and_never_parse(a in ".{0,12}", b in ".{0,12}") {
            let (pa, pb) = (ProjectId::personal(&UserId::new(a.as_str())), ProjectId::personal(&UserId::new(b.as_str())));
            prop_assert_eq!(a == b, pa == pb, "{:?} {:?}", pa, pb);
            prop_assert!(ProjectId::parse(pa.as_str()).is_err());
            prop_assert!(pa.is_personal());
        }

        /// Same, with user ids drawn from a small alphabet (with `%` and hex digits), where
        /// a careless encoding would collide (`%41` next to `A`).
        #[test]
        fn personal_ids_are_injective_on_tricky_alphabets(a in "[%A4a1|@]{0,6}", b in "[%A4a1|@]{0,6}") {
            let (pa, pb) = (ProjectId::personal(&UserId::new(a.as_str())), ProjectId::personal(&UserId::new(b.as_str())));
            prop_assert_eq!(a == b, pa == pb, "{:?} {:?}", pa, pb);
        }

        /// A personal id read back from its text is the same stream; any other spelling of
        /// `~u:…` is refused, so a broker never sees one stream under two names.
        #[test]
        fn personal_ids_read_back_and_only_in_their_one_spelling(a in ".{0,12}", junk in "~u:[%A4a1|@.]{0,6}") {
            let pa = ProjectId::personal(&UserId::new(a.as_str()));
            let read = ProjectId::parse_stream(pa.as_str());
            prop_assert_eq!(read.as_ref(), Some(&pa));
            if let Some(read) = ProjectId::parse_stream(&junk) {
                prop_assert_eq!(read.as_str(), junk.as_str());
            }
        }
    }
}
