//! The four operations a grant names, and a set of them.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};
use std::str::FromStr;

/// Something a client does with a project, as named in the `caps` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// Receive the project's messages (`"subscribe"`).
    Subscribe,
    /// Publish to the project (`"publish"`).
    Publish,
    /// See who is there: the presence list and join/leave events (`"presence"`).
    Presence,
    /// Recover missed messages with `since` (`"history"`).
    History,
}

impl Operation {
    /// Every operation, in wire order.
    pub const ALL: [Self; 4] = [
        Self::Subscribe,
        Self::Publish,
        Self::Presence,
        Self::History,
    ];

    /// The wire name: `subscribe`, `publish`, `presence` or `history`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
            Self::Presence => "presence",
            Self::History => "history",
        }
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an [`Operation`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown operation `{0}`: use subscribe, publish, presence or history")]
pub struct UnknownOperation(pub String);

impl FromStr for Operation {
    type Err = UnknownOperation;

    /// Parses a wire name (exact, lowercase).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| UnknownOperation(s.to_owned()))
    }
}

/// A set of [`Operation`]s, one bit each.
///
/// ```
/// use ws_core::grants::{Operation, Ops};
/// let ops = Ops::NONE | Operation::Subscribe | Operation::History;
/// assert!(ops.contains(Operation::History) && !ops.contains(Operation::Publish));
/// assert_eq!(Ops::ALL.without(Operation::Publish).len(), 3);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ops(u8);

impl Ops {
    /// No operation.
    pub const NONE: Self = Self(0);
    /// All four operations.
    pub const ALL: Self = Self(0b1111);

    /// The set holding `op` alone.
    pub const fn of(op: Operation) -> Self {
        Self(op.bit())
    }

    /// Whether `op` is in the set.
    pub const fn contains(self, op: Operation) -> bool {
        self.0 & op.bit() != 0
    }

    /// The set with `op` added.
    #[must_use]
    pub const fn with(self, op: Operation) -> Self {
        Self(self.0 | op.bit())
    }

    /// The set with `op` removed.
    #[must_use]
    pub const fn without(self, op: Operation) -> Self {
        Self(self.0 & !op.bit())
    }

    /// The operations in either set.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many operations the set holds.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The operations in the set, in wire order.
    pub fn iter(self) -> impl Iterator<Item = Operation> {
        Operation::ALL
            .into_iter()
            .filter(move |op| self.contains(*op))
    }
}

impl From<Operation> for Ops {
    fn from(op: Operation) -> Self {
        Self::of(op)
    }
}

impl FromIterator<Operation> for Ops {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        iter.into_iter().fold(Self::NONE, Self::with)
    }
}

impl BitOr for Ops {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl BitOr<Operation> for Ops {
    type Output = Self;

    fn bitor(self, op: Operation) -> Self {
        self.with(op)
    }
}

impl BitOrAssign for Ops {
    fn bitor_assign(&mut self, other: Self) {
        *self = self.union(other);
    }
}

/// Lists the wire names: `{subscribe, history}`.
impl fmt::Debug for Ops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, op) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(op.as_str())?;
        }
        f.write_str("}")
    }
}
