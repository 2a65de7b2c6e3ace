//! Following a project's stream kept elsewhere (the Redis broker's pub/sub channel): which
//! live message to deliver, which to drop, when to fill a gap from the history and when the
//! members' messages are gone.
//!
//! A node learns a project's messages from a channel that carries `(epoch, offset)` with
//! each frame. The [`Follower`] knows the stream's epoch and the last offset delivered on
//! this node, and decides for every message:
//!
//! ```text
//!  handle_message(epoch, offset)
//!    epoch unknown ─────────────► taken as the stream's epoch, then as below
//!    epoch differs ─────────────► Lost(EpochChanged): close the project's members (1013);
//!                                 the stream restarts at offset - 1: admit(offset)
//!    offset <= last ────────────► Duplicate: drop it
//!    offset == last + 1 ────────► Deliver
//!    offset >  last + 1 ────────► Gap { from, to }: read the history after last(),
//!                                 handle_fill(head), admit(m) each retained message,
//!                                 then admit(offset)
//!
//!  handle_fill(epoch, top, first)   the history read after last()
//!    recoverable ───────────────► Fill::Replay: admit(m) each retained message
//!    epoch changed, out of range,
//!    from the future ───────────► Fill::Lost(reason): close the project's members (1013);
//!                                 the stream continues after top
//! ```
//!
//! The fill is also what a node does after it reconnected to the channel: whatever was
//! published meanwhile is in the history. A follower performs no IO: the caller reads the
//! channel and the history, delivers, and closes.
//!
//! ```
//! use ws_core::follower::{Fill, Follower, Verdict};
//! use ws_core::history::LostReason;
//!
//! let mut follower = Follower::new(Some("e1".to_owned()), 4);
//! assert_eq!(follower.handle_message("e1", 5), Verdict::Deliver);
//! assert_eq!(follower.handle_message("e1", 5), Verdict::Duplicate);
//! // 6 and 7 never arrived: read them from the history (retained: 3..=8).
//! assert_eq!(follower.handle_message("e1", 8), Verdict::Gap { from: 6, to: 7 });
//! assert_eq!(follower.last(), 5);
//! assert_eq!(follower.handle_fill("e1", 8, 3), Fill::Replay);
//! let delivered: Vec<u64> = (6..=8).filter(|&m| follower.admit(m)).collect();
//! assert_eq!(delivered, [6, 7, 8]);
//! assert!(!follower.admit(8)); // the live copy of 8, delivered from the history
//! // Redis lost the project's stream: a new epoch starts.
//! assert_eq!(
//!     follower.handle_message("e2", 1),
//!     Verdict::Lost(LostReason::EpochChanged)
//! );
//! assert!(follower.admit(1));
//! ```

use crate::history::{LostReason, decide_recovery};

/// Where one project's stream stands on this node: its epoch and the last offset delivered.
/// See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    /// `None` until a message, a fill or a member names it.
    epoch: Option<String>,
    /// The last offset delivered here (or the newest offset when the node subscribed).
    last: u64,
}

/// What to do with a live message, from [`Follower::handle_message`].
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next message: deliver it (it is recorded as delivered).
    Deliver,
    /// At or below the last offset delivered: drop it.
    Duplicate,
    /// Offsets `from..=to` were missed: read the history after [`Follower::last`]
    /// (`from - 1`), pass it to [`Follower::handle_fill`], deliver what it admits, then
    /// deliver this message if [`Follower::admit`] says so.
    Gap {
        /// The first offset missed.
        from: u64,
        /// The last offset missed (the message's offset minus one).
        to: u64,
    },
    /// The members' messages are gone ([`LostReason::EpochChanged`]: Redis lost the
    /// project's stream): close the project's members (1013) so that they recover; the
    /// follower now follows the new epoch from just below this message, so deliver it if
    /// [`Follower::admit`] says so.
    Lost(LostReason),
}

/// What to do with a history read after [`Follower::last`], from [`Follower::handle_fill`].
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Every message after `last` is retained: deliver each one [`Follower::admit`] lets
    /// through, oldest first.
    Replay,
    /// The missed messages are gone: close the project's members (1013) so that they
    /// recover; deliver none of the history. The follower continues after the stream's top.
    Lost(LostReason),
}

impl Follower {
    /// A stream of `epoch` (`None`: not known yet) whose messages up to `last` are
    /// delivered, or were before this node subscribed.
    pub fn new(epoch: Option<String>, last: u64) -> Self {
        Self { epoch, last }
    }

    /// The epoch followed, once known.
    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The last offset delivered; a fill reads the history after it.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// A member was told the stream's epoch is `epoch`: taken if none is known yet.
    pub fn handle_seed(&mut self, epoch: &str) {
        if self.epoch.is_none() {
            self.epoch = Some(epoch.to_owned());
        }
    }

    /// A live message at `offset` of `epoch` arrived. See [`Verdict`].
    pub fn handle_message(&mut self, epoch: &str, offset: u64) -> Verdict {
        match &self.epoch {
            Some(known) if known != epoch => {
                self.epoch = Some(epoch.to_owned());
                self.last = offset.saturating_sub(1);
                return Verdict::Lost(LostReason::EpochChanged);
            }
            Some(_) => {}
            None => self.epoch = Some(epoch.to_owned()),
        }
        if offset <= self.last {
            Verdict::Duplicate
        } else if offset > self.last.saturating_add(1) {
            Verdict::Gap {
                from: self.last + 1,
                to: offset - 1,
            }
        } else {
            self.last = offset;
            Verdict::Deliver
        }
    }

    /// The history was read after [`Follower::last`]: the stream is named `epoch`, its
    /// newest offset is `top` and its oldest retained one `first` (`top + 1` when nothing
    /// is retained). See [`Fill`].
    pub fn handle_fill(&mut self, epoch: &str, top: u64, first: u64) -> Fill {
        let known = self.epoch.as_deref().unwrap_or(epoch);
        let fill = match decide_recovery(epoch, top, first, self.last, known) {
            Ok(()) => Fill::Replay,
            Err(reason) => {
                self.last = top;
                Fill::Lost(reason)
            }
        };
        if self.epoch.as_deref() != Some(epoch) {
            self.epoch = Some(epoch.to_owned());
        }
        fill
    }

    /// Whether the message at `offset` must be delivered, after a [`Fill::Replay`] or
    /// with the message of a [`Verdict::Gap`] or [`Verdict::Lost`]: only if it is above
    /// everything delivered; records it if so.
    #[must_use]
    pub fn admit(&mut self, offset: u64) -> bool {
        if offset > self.last {
            self.last = offset;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests;
