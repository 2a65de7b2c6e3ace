//! Per-namespace policy: history, presence events and client publishing (SPEC §12).
//!
//! The part of a project id before its first `:` names its namespace: `chat:room-1` is in
//! `chat`, `a:b:c` is in `a`. A project without a `:` (or starting with one) is in no
//! namespace. A `[namespaces.<name>]` table of the configuration overrides some settings for
//! the projects of that namespace only; every setting it leaves out keeps the global value.
//!
//! ```text
//!   defaults (history.*, presence.*, limits.allow_client_publish)
//!       │   + [namespaces.chat] history_size = 50, presence = false
//!       ▼
//!   Namespaces::policy("chat:42") ──► { history_size: 50, presence_events: false, .. }
//!   Namespaces::policy("lobby")   ──► the defaults
//! ```
//!
//! Overrides are merged once, in [`Namespaces::new`]: a lookup is one hash of the namespace
//! and returns a `Copy` [`NamespacePolicy`]. Parsing the configuration is the server's job;
//! this module validates what it was given and names the configuration key at fault.
//!
//! ```
//! use std::time::Duration;
//! use ws_core::ProjectId;
//! use ws_core::namespace::{NamespaceOverrides, NamespacePolicy, Namespaces};
//!
//! let mut chat = NamespaceOverrides::default();
//! chat.history_size = Some(50);
//! chat.presence_events = Some(false);
//! let namespaces = Namespaces::new(NamespacePolicy::default(), [("chat".to_owned(), chat)])?;
//!
//! let policy = namespaces.policy(&ProjectId::parse("chat:42").unwrap());
//! assert_eq!((policy.history_size, policy.presence_events), (50, false));
//! assert_eq!(policy.history_ttl, Duration::from_secs(600)); // not overridden
//! assert_eq!(namespaces.policy(&ProjectId::parse("lobby").unwrap()), NamespacePolicy::default());
//! # Ok::<(), ws_core::namespace::NamespaceError>(())
//! ```

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::Duration;

use crate::history::HistoryConfig;
use crate::ids::ProjectId;

/// The settings that apply to one project, after its namespace's overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NamespacePolicy {
    /// Messages of history kept per project (`history.size`).
    pub history_size: usize,
    /// How long history is kept, and how long idempotency keys are remembered (`history.ttl`).
    pub history_ttl: Duration,
    /// Whether join and leave events are sent (`presence.events`).
    pub presence_events: bool,
    /// Above this many members, no join and leave events (`presence.max_members_for_events`).
    pub max_members_for_events: usize,
    /// Whether clients may publish over the WebSocket (`limits.allow_client_publish`).
    pub allow_client_publish: bool,
}

impl NamespacePolicy {
    /// A policy of the given settings.
    pub const fn new(
        history_size: usize,
        history_ttl: Duration,
        presence_events: bool,
        max_members_for_events: usize,
        allow_client_publish: bool,
    ) -> Self {
        Self {
            history_size,
            history_ttl,
            presence_events,
            max_members_for_events,
            allow_client_publish,
        }
    }

    /// This policy with the settings `overrides` sets replaced.
    #[must_use]
    pub fn with_overrides(self, overrides: &NamespaceOverrides) -> Self {
        Self {
            history_size: overrides.history_size.unwrap_or(self.history_size),
            history_ttl: overrides.history_ttl.unwrap_or(self.history_ttl),
            presence_events: overrides.presence_events.unwrap_or(self.presence_events),
            max_members_for_events: overrides
                .max_members_for_events
                .unwrap_or(self.max_members_for_events),
            allow_client_publish: overrides
                .allow_client_publish
                .unwrap_or(self.allow_client_publish),
        }
    }
}

/// The SPEC defaults: 1000 messages for 10 minutes, presence events up to 1000 members,
/// client publishing allowed.
impl Default for NamespacePolicy {
    fn default() -> Self {
        Self::new(1000, Duration::from_secs(600), true, 1000, true)
    }
}

/// What a `[namespaces.<name>]` table sets; `None` keeps the global value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct NamespaceOverrides {
    /// `history_size`: at least 1.
    pub history_size: Option<usize>,
    /// `history_ttl`: more than zero.
    pub history_ttl: Option<Duration>,
    /// `presence`: join and leave events on or off.
    pub presence_events: Option<bool>,
    /// `max_members_for_events`.
    pub max_members_for_events: Option<usize>,
    /// `allow_client_publish`.
    pub allow_client_publish: Option<bool>,
}

/// Why the namespace overrides were refused. [`NamespaceError::key`] names the configuration
/// key to point at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceError {
    /// A name that no project's namespace can have.
    #[error(
        "namespace name `{name}` is invalid: use 1 to {max} characters of A-Z a-z 0-9 . _ - (the part of a project id before its first `:`)",
        max = MAX_NAME_LEN
    )]
    InvalidName {
        /// The name as given.
        name: String,
    },
    /// The same namespace given twice.
    #[error("namespaces.{name} is configured twice: merge the two tables")]
    Duplicate {
        /// The namespace.
        name: String,
    },
    /// A setting that must be more than zero is zero.
    #[error(
        "namespaces.{namespace}.{field} must be more than zero: leave it out to keep the global value"
    )]
    Zero {
        /// The namespace.
        namespace: String,
        /// The setting: `history_size` or `history_ttl`.
        field: &'static str,
    },
}

impl NamespaceError {
    /// The configuration key at fault: `namespaces.chat` or `namespaces.chat.history_size`.
    pub fn key(&self) -> String {
        match self {
            Self::InvalidName { name } | Self::Duplicate { name } => format!("namespaces.{name}"),
            Self::Zero { namespace, field } => format!("namespaces.{namespace}.{field}"),
        }
    }
}

/// The longest namespace name: a project id is at most 128 characters and needs the `:`.
pub const MAX_NAME_LEN: usize = ProjectId::MAX_LEN - 1;

/// The defaults and each namespace's resolved policy. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    defaults: NamespacePolicy,
    /// Namespace → the defaults with its overrides applied.
    policies: HashMap<Box<str>, NamespacePolicy>,
}

impl Namespaces {
    /// The defaults alone: every project gets them.
    pub fn defaults_only(defaults: NamespacePolicy) -> Self {
        Self {
            defaults,
            policies: HashMap::new(),
        }
    }

    /// The global `defaults` (already validated by the caller) and each namespace's overrides.
    ///
    /// # Errors
    ///
    /// A name that is empty, longer than [`MAX_NAME_LEN`] or has a character outside
    /// `[A-Za-z0-9._-]`; a name given twice; a `history_size` of 0 or a zero `history_ttl`.
    pub fn new(
        defaults: NamespacePolicy,
        overrides: impl IntoIterator<Item = (String, NamespaceOverrides)>,
    ) -> Result<Self, NamespaceError> {
        let mut policies = HashMap::new();
        for (name, overrides) in overrides {
            validate(&name, &overrides)?;
            match policies.entry(name.into_boxed_str()) {
                Entry::Occupied(entry) => {
                    return Err(NamespaceError::Duplicate {
                        name: entry.key().to_string(),
                    });
                }
                Entry::Vacant(entry) => {
                    entry.insert(defaults.with_overrides(&overrides));
                }
            }
        }
        Ok(Self { defaults, policies })
    }

    /// The global settings: the policy of projects outside every configured namespace.
    pub fn defaults(&self) -> NamespacePolicy {
        self.defaults
    }

    /// The policy of namespace `name`, when it is configured.
    pub fn get(&self, name: &str) -> Option<NamespacePolicy> {
        self.policies.get(name).copied()
    }

    /// The configured namespaces, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(|name| &**name)
    }

    /// The retention of `project`: `base` (the global `[history]`) with the size and ttl of
    /// its namespace's table, when it has one. One rule for every broker.
    pub fn history_config(&self, project: &ProjectId, base: HistoryConfig) -> HistoryConfig {
        match namespace_of(project).and_then(|name| self.get(name)) {
            Some(policy) => HistoryConfig {
                size: policy.history_size,
                ttl: policy.history_ttl,
                max_bytes: base.max_bytes,
            },
            None => base,
        }
    }

    /// The longest any project keeps history: `base`'s ttl or a namespace's longer one.
    pub fn longest_history_ttl(&self, base: Duration) -> Duration {
        self.names()
            .filter_map(|name| self.get(name))
            .map(|policy| policy.history_ttl)
            .fold(base, Duration::max)
    }

    /// The policy of `project`: its namespace's, or the defaults when it is in none or in
    /// one without overrides.
    pub fn policy(&self, project: &ProjectId) -> NamespacePolicy {
        namespace_of(project)
            .and_then(|name| self.get(name))
            .unwrap_or(self.defaults)
    }
}

/// The namespace of `project`: the part before its first `:`, or `None` when it has no `:`
/// or starts with one.
///
/// ```
/// use ws_core::ProjectId;
/// use ws_core::namespace::namespace_of;
/// let ns = |s: &str| namespace_of(&ProjectId::parse(s).unwrap()).map(str::to_owned);
/// assert_eq!(ns("chat:room:1").as_deref(), Some("chat"));
/// assert_eq!(ns("lobby"), None);
/// assert_eq!(ns(":x"), None);
/// ```
pub fn namespace_of(project: &ProjectId) -> Option<&str> {
    project
        .as_str()
        .split_once(':')
        .map(|(namespace, _)| namespace)
        .filter(|namespace| !namespace.is_empty())
}

fn validate(name: &str, overrides: &NamespaceOverrides) -> Result<(), NamespaceError> {
    let valid = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(NamespaceError::InvalidName {
            name: name.to_owned(),
        });
    }
    let zero = |field| NamespaceError::Zero {
        namespace: name.to_owned(),
        field,
    };
    if overrides.history_size == Some(0) {
        return Err(zero("history_size"));
    }
    if overrides.history_ttl == Some(Duration::ZERO) {
        return Err(zero("history_ttl"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
