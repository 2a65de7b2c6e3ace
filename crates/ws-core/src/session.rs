//! What one v2 connection may do (SPEC §10–§12): the project a request names (the personal
//! stream `~user` resolved to its owner's), whether the token's grants and the project's
//! namespace allow the operation, and which subscriptions a refreshed token revokes.
//!
//! The transport asks before it acts: a refused request is answered with an `error` frame
//! ([`Denied::code`], [`Denied::message`]) and touches nothing else, so one forbidden
//! project never harms the connection's other subscriptions.
//!
//! ```text
//!   Request ─► Session::check(target, op) ─► Ok(project): register / publish / read it
//!                                         └► Err(Denied): `error` frame, nothing else
//!   refresh ─► Session::handle_refresh(user, grants, subscribed) ─► revoked projects
//! ```
//!
//! ```
//! use ws_core::envelope::v2::Target;
//! use ws_core::grants::{Grants, Operation};
//! use ws_core::session::{Denied, Session};
//! use ws_core::{ProjectId, UserId};
//!
//! let caps = serde_json::json!({"feed:*": ["subscribe"]});
//! let grants = Grants::from_claims(&[], Some(&caps), true).unwrap();
//! let session = Session::new(UserId::new("auth0|5f7c"), grants);
//! let feed = Target::Project(ProjectId::parse("feed:news").unwrap());
//! assert!(session.check(&feed, Operation::Subscribe).is_ok());
//! assert_eq!(session.check(&feed, Operation::Publish), Err(Denied::Forbidden));
//! // `~user` is the caller's own stream, whatever characters its `sub` has.
//! let mine = session.check(&Target::Personal, Operation::Subscribe).unwrap();
//! assert_eq!(mine, ProjectId::personal(&UserId::new("auth0|5f7c")));
//! assert_eq!(Session::wire_name(&mine), "~user");
//! ```

use crate::envelope::code;
use crate::envelope::v2::{PERSONAL, Target};
use crate::grants::{Grants, Operation};
use crate::ids::{ProjectId, UserId};
use crate::namespace::NamespacePolicy;

/// Why a request was not allowed. Answered with an `error` frame; the connection and its
/// other subscriptions carry on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// The token does not grant the operation on that project (or the personal stream is
    /// off for it, or a client tried to publish to a personal stream): ask the backend for
    /// a token that does.
    #[error("the token does not grant this operation on this project")]
    Forbidden,
    /// The project's namespace does not accept publishes from clients: publish through the
    /// backend's HTTP API.
    #[error("this project's namespace does not accept publishes from clients")]
    PublishNotAllowed,
}

impl Denied {
    /// The `code` of the `error` frame that answers it.
    pub fn code(self) -> &'static str {
        match self {
            Self::Forbidden => code::FORBIDDEN,
            Self::PublishNotAllowed => code::PUBLISH_NOT_ALLOWED,
        }
    }

    /// The `message` of the `error` frame.
    pub fn message(self) -> &'static str {
        match self {
            Self::Forbidden => "the token does not grant this operation on this project",
            Self::PublishNotAllowed => {
                "this project's namespace does not accept publishes from clients"
            }
        }
    }
}

/// Why a `refresh` changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshRefused {
    /// The new token names another user: a connection never changes hands. Reconnect
    /// with the other user's token instead.
    #[error("the token is for another user; reconnect to change users")]
    OtherUser,
}

/// The policy of one v2 connection. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Session {
    user: UserId,
    /// The internal id of the user's own stream, made once.
    personal: ProjectId,
    grants: Grants,
}

impl Session {
    /// The session of `user`, allowed what `grants` say.
    pub fn new(user: UserId, grants: Grants) -> Self {
        Self {
            personal: ProjectId::personal(&user),
            user,
            grants,
        }
    }

    /// The connection's user.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// What the current token grants.
    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// The stream a target names: a project, or the caller's own personal stream.
    pub fn resolve(&self, target: &Target) -> ProjectId {
        match target {
            Target::Project(project) => project.clone(),
            Target::Personal => self.personal.clone(),
        }
    }

    /// How frames name `project` to its subscribers: `~user` for a personal stream (only its
    /// owner ever receives them), the project id otherwise.
    pub fn wire_name(project: &ProjectId) -> &str {
        if project.is_personal() {
            PERSONAL
        } else {
            project.as_str()
        }
    }

    /// Whether the token allows `op` on `target`; the stream it names when it does.
    pub fn check(&self, target: &Target, op: Operation) -> Result<ProjectId, Denied> {
        let allowed = match target {
            Target::Project(project) => self.grants.allows(project, op),
            Target::Personal => self.grants.allows_personal(op),
        };
        allowed
            .then(|| self.resolve(target))
            .ok_or(Denied::Forbidden)
    }

    /// Whether a client may publish to `target`: the `publish` grant, then the project's
    /// namespace (`policy`, `allow_client_publish`).
    pub fn check_publish(
        &self,
        target: &Target,
        policy: &NamespacePolicy,
    ) -> Result<ProjectId, Denied> {
        let project = self.check(target, Operation::Publish)?;
        if policy.allow_client_publish {
            Ok(project)
        } else {
            Err(Denied::PublishNotAllowed)
        }
    }

    /// A `refresh` verified a new token for `user` granting `grants`: from now on they
    /// decide. Returns the `subscribed` streams the new token no longer allows to be read
    /// (the caller ends them with `unsubscribed` `forbidden`), in the order given.
    pub fn handle_refresh<'a>(
        &mut self,
        user: &UserId,
        grants: Grants,
        subscribed: impl IntoIterator<Item = &'a ProjectId>,
    ) -> Result<Vec<ProjectId>, RefreshRefused> {
        if *user != self.user {
            return Err(RefreshRefused::OtherUser);
        }
        self.grants = grants;
        Ok(subscribed
            .into_iter()
            .filter(|project| !self.may_read(project))
            .cloned()
            .collect())
    }

    /// Whether the current grants let a subscription to `project` stay.
    fn may_read(&self, project: &ProjectId) -> bool {
        if *project == self.personal {
            self.grants.allows_personal(Operation::Subscribe)
        } else {
            self.grants.allows(project, Operation::Subscribe)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn session(projects: &[&str], caps: Option<serde_json::Value>, personal: bool) -> Session {
        let projects: Vec<String> = projects.iter().map(|p| (*p).to_owned()).collect();
        let grants = Grants::from_claims(&projects, caps.as_ref(), personal).unwrap();
        Session::new(UserId::new("alice@example.com"), grants)
    }

    fn target(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    /// `(target, operation, allowed)` for one session.
    fn check(session: &Session, cases: &[(&str, Operation, bool)]) {
        for (t, op, allowed) in cases {
            let got = session.check(&target(t), *op);
            assert_eq!(got.is_ok(), *allowed, "{t} {op}: {got:?}");
            if let Ok(project) = got {
                assert_eq!(project, session.resolve(&target(t)));
            }
        }
    }

    #[test]
    fn grants_decide_per_operation() {
        use Operation::*;
        let caps = json!({"chat:*": ["subscribe", "publish"], "feed": ["subscribe", "history"]});
        let s = session(&["ignored"], Some(caps), true);
        check(
            &s,
            &[
                ("chat:1", Subscribe, true),
                ("chat:1", Publish, true),
                ("chat:1", Presence, false),
                ("feed", History, true),
                ("feed", Publish, false),
                ("ignored", Subscribe, false),
                ("~user", Subscribe, true),
                ("~user", History, true),
                ("~user", Publish, false),
            ],
        );
        let v1 = session(&["a"], None, false);
        check(
            &v1,
            &[
                ("a", Publish, true),
                ("b", Subscribe, false),
                ("~user", Subscribe, false),
            ],
        );
    }

    #[test]
    fn the_personal_stream_is_the_callers_own() {
        let s = session(&[], None, true);
        let mine = s.resolve(&Target::Personal);
        assert!(mine.is_personal());
        assert_eq!(mine, ProjectId::personal(&UserId::new("alice@example.com")));
        assert_eq!(Session::wire_name(&mine), "~user");
        let project = ProjectId::parse("p").unwrap();
        assert_eq!(Session::wire_name(&project), "p");
    }

    #[test]
    fn namespaces_can_refuse_client_publishes() {
        let s = session(&["*"], None, true);
        let open = NamespacePolicy::default();
        let closed = NamespacePolicy {
            allow_client_publish: false,
            ..open
        };
        assert!(s.check_publish(&target("x"), &open).is_ok());
        assert_eq!(
            s.check_publish(&target("x"), &closed),
            Err(Denied::PublishNotAllowed)
        );
        // The grant is checked first: a forbidden publish is forbidden wherever it goes.
        assert_eq!(
            s.check_publish(&Target::Personal, &open),
            Err(Denied::Forbidden)
        );
        assert_eq!(Denied::Forbidden.code(), "forbidden");
        assert_eq!(Denied::PublishNotAllowed.code(), "publish_not_allowed");
    }

    #[test]
    fn a_refresh_revokes_what_the_new_token_no_longer_allows() {
        let mut s = session(&["a", "b"], None, true);
        let [a, b] = ["a", "b"].map(|p| ProjectId::parse(p).unwrap());
        let mine = s.resolve(&Target::Personal);
        let narrower = Grants::from_claims(&["b".to_owned()], None, false).unwrap();
        let revoked = s
            .handle_refresh(&UserId::new("alice@example.com"), narrower, [&a, &b, &mine])
            .unwrap();
        assert_eq!(revoked, [a.clone(), mine]);
        assert!(s.check(&Target::Project(a), Operation::Subscribe).is_err());
        assert!(
            s.check(&Target::Project(b.clone()), Operation::Subscribe)
                .is_ok()
        );
        // Another user's token changes nothing.
        let before = s.grants().clone();
        assert_eq!(
            s.handle_refresh(&UserId::new("mallory"), Grants::all(), [&b]),
            Err(RefreshRefused::OtherUser)
        );
        assert_eq!(s.grants(), &before);
    }
}
