//! Membership changes leaving the hub: where `project_occupied`, `project_vacated`,
//! `user_joined` and `user_left` (SPEC §14) go, and the cluster's presence frames.
//!
//! Who decides a change depends on the broker. On one node (the memory broker) the hub's
//! registrations are the whole truth: [`SharedHub::report_membership`] makes the hub report
//! them. With Redis the cluster decides (a script over every node's members), and the
//! broker reports what it decided; the hub then reports nothing itself, or every event
//! would leave once per node.
//!
//! [`SharedHub::report_membership`]: crate::SharedHub::report_membership

use std::fmt;

use ws_core::webhook::EventName;
use ws_core::{ProjectId, UserId};

/// Receives membership changes, once each (the webhook sender). Called with the hub's
/// shard lock held: it must only queue, never wait.
pub trait MembershipSink: Send + Sync + fmt::Debug + 'static {
    /// `name` happened in `project` (to `user`, for `user_joined` and `user_left`).
    fn emit(&self, project: &ProjectId, name: EventName, user: Option<&UserId>);
}
