//! What a token lets its holder do: which [`Operation`]s on which projects (SPEC §12).
//!
//! A token grants operations two ways. The v1 claim `projects` lists project ids (`"*"` for
//! every project) and grants all four operations on each. The v2 claim `caps` maps a
//! *pattern* to the operations it grants:
//!
//! ```text
//!   {"caps": {"chat:*": ["subscribe", "publish", "presence", "history"],
//!             "feed:*": ["subscribe"],
//!             "lobby":  ["subscribe", "presence"]}}
//!
//!   pattern   matches                                   stored in
//!   ───────   ───────────────────────────────────────   ──────────────────────────────
//!   *         every project                             one `Ops` for all projects
//!   lobby     the project `lobby` only                  a hash map: O(1)
//!   chat:*    every project starting with `chat:`       a sorted list, scanned linearly
//!             (`chat:` itself too: `*` matches nothing)
//! ```
//!
//! # Rules
//!
//! - **`caps` decides alone.** When the claim is present, `projects` is ignored; an empty
//!   `caps` object grants nothing. Without it, `projects: [p]` means exactly
//!   `caps: {p: all four}`.
//! - **Matches add up.** When several patterns match a project, its operations are the union
//!   of theirs: `{"*": ["subscribe"], "chat:a": ["publish"]}` lets `chat:a` be subscribed to
//!   and published to. No pattern takes operations away.
//! - **v1 entries are not patterns.** An entry of `projects` is `"*"` or matched exactly, as
//!   v1 always did: `projects: ["chat:*"]` grants no prefix (it names no project and grants
//!   nothing), so an existing token never gains projects it did not have. Entries that are not
//!   project ids are ignored for the same reason, and are not errors.
//! - **A `caps` claim of the wrong shape is an error** ([`GrantsError`]): the token's issuer
//!   made a mistake and silently granting less (or more) would hide it. At most
//!   [`MAX_PATTERNS`] patterns are accepted, which bounds the linear scan over prefixes.
//! - **The personal stream** [`PERSONAL_STREAM`] (`~user`) is not a project id, so no pattern
//!   matches it, not even `*`. Its owner may [`Subscribe`](Operation::Subscribe),
//!   [`History`](Operation::History) and [`Presence`](Operation::Presence) on it (presence
//!   shows the owner's own connections), unless the token says `"personal": false`. Nobody may
//!   [`Publish`](Operation::Publish) to it from a client: only the backend writes to a user's
//!   personal stream, so that what arrives there can be trusted as coming from the service.
//!
//! ```
//! use ws_core::ProjectId;
//! use ws_core::grants::{Grants, Operation};
//!
//! let caps = serde_json::json!({"chat:*": ["subscribe", "publish"], "feed:*": ["subscribe"]});
//! let grants = Grants::from_claims(&[], Some(&caps), true)?;
//! let project = |s: &str| ProjectId::parse(s).unwrap();
//! assert!(grants.allows(&project("chat:42"), Operation::Publish));
//! assert!(!grants.allows(&project("feed:news"), Operation::Publish));
//! assert!(!grants.allows(&project("other"), Operation::Subscribe));
//! assert!(grants.allows_personal(Operation::Subscribe));
//! assert!(!grants.allows_personal(Operation::Publish));
//! # Ok::<(), ws_core::grants::GrantsError>(())
//! ```

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use crate::ids::{InvalidProjectId, ProjectId};

mod ops;

pub use ops::{Operation, Ops, UnknownOperation};

/// How clients address their personal stream: not a project id, so it never clashes with one.
pub const PERSONAL_STREAM: &str = "~user";

/// The most patterns a `caps` claim may hold. Bounds the work of every lookup (prefixes are
/// scanned linearly) and the memory a token's grants take; a token needing more should use
/// prefix patterns.
pub const MAX_PATTERNS: usize = 256;

/// Why a `caps` claim was refused. Each names the pattern at fault, when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantsError {
    /// The claim is not a JSON object.
    #[error(
        "the `caps` claim must be an object mapping patterns to lists of operations, got {found}"
    )]
    NotAnObject {
        /// What the claim is instead (`an array`, `a string`, ..).
        found: &'static str,
    },
    /// More than [`MAX_PATTERNS`] patterns.
    #[error(
        "the `caps` claim has {count} patterns, more than the {max} allowed: use prefix patterns such as `chat:*`"
    )]
    TooManyPatterns {
        /// How many the claim has.
        count: usize,
        /// [`MAX_PATTERNS`].
        max: usize,
    },
    /// A key of the claim is not a pattern.
    #[error(
        "caps pattern `{pattern}` is invalid ({reason}): use `*`, a project id, or a project-id prefix followed by one `*`"
    )]
    InvalidPattern {
        /// The key as written.
        pattern: String,
        /// What is wrong with it (or with its prefix, for `prefix*`).
        reason: InvalidProjectId,
    },
    /// A pattern maps to something other than an array.
    #[error("caps pattern `{pattern}` must map to an array of operation names, got {found}")]
    NotAList {
        /// The pattern.
        pattern: String,
        /// What it maps to instead.
        found: &'static str,
    },
    /// A pattern's array holds something other than a string.
    #[error(
        "caps pattern `{pattern}` lists {found} where an operation name belongs: use strings such as \"subscribe\""
    )]
    NotAName {
        /// The pattern.
        pattern: String,
        /// What the array holds instead.
        found: &'static str,
    },
    /// A pattern lists an operation this server does not know.
    #[error(
        "caps pattern `{pattern}` lists unknown operation `{operation}`: use subscribe, publish, presence or history"
    )]
    UnknownOperation {
        /// The pattern.
        pattern: String,
        /// The name as written.
        operation: String,
    },
}

/// The operations one token grants on every project and on its holder's personal stream.
///
/// Built once per connection (or API request) from the token's claims; asking is cheap. See
/// the [module docs](self) for the rules.
#[derive(Clone, PartialEq, Eq)]
pub struct Grants {
    /// Granted on every project (the pattern `*`).
    any: Ops,
    /// Exact patterns: project id → operations.
    exact: HashMap<Box<str>, Ops>,
    /// Prefix patterns (without their `*`), sorted and distinct: every prefix of a project
    /// sorts before or at it, so a lookup scans only the part up to the project.
    prefixes: Vec<(Box<str>, Ops)>,
    /// Whether the personal stream is open to its owner (the `personal` claim).
    personal: bool,
}

impl Grants {
    /// Everything: every operation on every project, and the personal stream (which is never
    /// published to by a client). For development mode and API keys.
    pub fn all() -> Self {
        Self {
            any: Ops::ALL,
            exact: HashMap::new(),
            prefixes: Vec::new(),
            personal: true,
        }
    }

    /// Nothing at all: no project, no personal stream.
    pub fn none() -> Self {
        Self {
            any: Ops::NONE,
            exact: HashMap::new(),
            prefixes: Vec::new(),
            personal: false,
        }
    }

    /// The grants of a token: its v1 `projects` list, its v2 `caps` claim as it came in the
    /// token (`None` when absent), and its `personal` claim (`true` when absent).
    ///
    /// When `caps` is given it decides alone and `projects` is ignored.
    ///
    /// # Errors
    ///
    /// A `caps` claim of the wrong shape: see [`GrantsError`].
    pub fn from_claims(
        projects: &[String],
        caps: Option<&Value>,
        personal: bool,
    ) -> Result<Self, GrantsError> {
        let mut grants = Self {
            personal,
            ..Self::none()
        };
        match caps {
            Some(caps) => grants.add_caps(caps)?,
            None => {
                for project in projects {
                    if project == "*" {
                        grants.any = Ops::ALL;
                    } else if ProjectId::parse(project).is_ok() {
                        *grants.exact.entry(project.as_str().into()).or_default() = Ops::ALL;
                    }
                }
            }
        }
        Ok(grants)
    }

    fn add_caps(&mut self, caps: &Value) -> Result<(), GrantsError> {
        let Value::Object(caps) = caps else {
            return Err(GrantsError::NotAnObject { found: kind(caps) });
        };
        if caps.len() > MAX_PATTERNS {
            return Err(GrantsError::TooManyPatterns {
                count: caps.len(),
                max: MAX_PATTERNS,
            });
        }
        let mut prefixes = HashMap::new();
        for (pattern, ops) in caps {
            let ops = parse_ops(pattern, ops)?;
            match Pattern::parse(pattern)? {
                Pattern::Any => self.any |= ops,
                Pattern::Exact => *self.exact.entry(pattern.as_str().into()).or_default() |= ops,
                Pattern::Prefix(prefix) => *prefixes.entry(prefix).or_default() |= ops,
            }
        }
        self.prefixes = prefixes.into_iter().map(|(p, o)| (p.into(), o)).collect();
        self.prefixes.sort_unstable();
        Ok(())
    }

    /// The operations granted on `project`: the union over every matching pattern.
    ///
    /// O(1) for `*` and exact patterns, plus a scan of the prefix patterns that sort before
    /// `project` (at most [`MAX_PATTERNS`]).
    pub fn ops(&self, project: &ProjectId) -> Ops {
        let project = project.as_str();
        let mut ops = self.any | self.exact.get(project).copied().unwrap_or_default();
        let end = self.prefixes.partition_point(|(p, _)| &**p <= project);
        for (prefix, granted) in &self.prefixes[..end] {
            if project.starts_with(&**prefix) {
                ops |= *granted;
            }
        }
        ops
    }

    /// Whether `op` is granted on `project`. A refusal answers `error` `forbidden`.
    pub fn allows(&self, project: &ProjectId, op: Operation) -> bool {
        self.ops(project).contains(op)
    }

    /// The operations its owner may perform on the personal stream: subscribe, history and
    /// presence, or nothing when the token says `"personal": false`. Never publish.
    pub fn personal_ops(&self) -> Ops {
        if self.personal {
            Ops::ALL.without(Operation::Publish)
        } else {
            Ops::NONE
        }
    }

    /// Whether its owner may perform `op` on the personal stream (see [`Grants::personal_ops`]).
    pub fn allows_personal(&self, op: Operation) -> bool {
        self.personal_ops().contains(op)
    }
}

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut exact: Vec<_> = self.exact.iter().collect();
        exact.sort_unstable();
        let mut map = f.debug_map();
        if !self.any.is_empty() {
            map.entry(&"*", &self.any);
        }
        map.entries(exact);
        for (prefix, ops) in &self.prefixes {
            map.entry(&format!("{prefix}*"), ops);
        }
        map.entry(&PERSONAL_STREAM, &self.personal_ops());
        map.finish()
    }
}

/// A key of the `caps` claim, validated.
enum Pattern<'a> {
    /// `*`.
    Any,
    /// A project id.
    Exact,
    /// A non-empty project-id prefix, without its `*`.
    Prefix(&'a str),
}

impl<'a> Pattern<'a> {
    fn parse(pattern: &'a str) -> Result<Self, GrantsError> {
        let invalid = |reason| GrantsError::InvalidPattern {
            pattern: pattern.to_owned(),
            reason,
        };
        if pattern == "*" {
            return Ok(Self::Any);
        }
        match pattern.strip_suffix('*') {
            Some(prefix) => ProjectId::parse(prefix)
                .map(|_| Self::Prefix(prefix))
                .map_err(invalid),
            None => ProjectId::parse(pattern)
                .map(|_| Self::Exact)
                .map_err(invalid),
        }
    }
}

/// The operations listed for `pattern`.
fn parse_ops(pattern: &str, ops: &Value) -> Result<Ops, GrantsError> {
    let Value::Array(names) = ops else {
        return Err(GrantsError::NotAList {
            pattern: pattern.to_owned(),
            found: kind(ops),
        });
    };
    names.iter().try_fold(Ops::NONE, |ops, name| {
        let Value::String(name) = name else {
            return Err(GrantsError::NotAName {
                pattern: pattern.to_owned(),
                found: kind(name),
            });
        };
        let op = name
            .parse::<Operation>()
            .map_err(|_| GrantsError::UnknownOperation {
                pattern: pattern.to_owned(),
                operation: name.clone(),
            })?;
        Ok(ops | op)
    })
}

/// What a JSON value is, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
