//! The claims of a wshub user token, and the request extensions the auth layer reads and writes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use ws_core::{Grants, GrantsError, Operation, ProjectId};

/// The claims of a wshub user token.
///
/// [`JwtAuth`](crate::JwtAuth) inserts the verified `Claims` into the request extensions, so the
/// upgrade handler reads the user id (`sub`), the granted projects and the expiry (`exp`, which
/// the connection enforces with close code 4001) with `req.extensions().get::<Claims>()`.
/// There is no separate identity type: the claims *are* the identity.
///
/// On the wire, `projects` may be omitted (no project is granted) and the optional claims are
/// left out when `None`. `aud` must be a single string; a token with an `aud` array is rejected
/// as malformed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The projects the user may join; `"*"` grants every project.
    #[serde(default)]
    pub projects: Vec<String>,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// Not before, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// v2 grants (SPEC §12): a map from a project pattern to the operations it grants,
    /// kept as the token said it; when present it decides alone. Read it with
    /// [`Claims::grants`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<serde_json::Value>,
    /// `false` turns the user's personal stream (`~user`, SPEC §11) off for this token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal: Option<bool>,
}

impl Claims {
    /// Claims for `user` granting `projects`, issued now and expiring after `ttl`.
    ///
    /// `iss`, `aud` and `nbf` are left empty; set the public fields to add them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ws_auth::Claims;
    ///
    /// let claims = Claims::new("alice", ["chat"], Duration::from_secs(3600));
    /// assert_eq!(claims.exp, claims.iat.unwrap() + 3600);
    /// assert!(claims.allows("chat"));
    /// assert!(!claims.allows("billing"));
    /// ```
    pub fn new(
        user: impl Into<String>,
        projects: impl IntoIterator<Item = impl Into<String>>,
        ttl: Duration,
    ) -> Self {
        let now = unix_seconds(SystemTime::now());
        Self {
            sub: user.into(),
            projects: projects.into_iter().map(Into::into).collect(),
            exp: now.saturating_add(ttl.as_secs()),
            nbf: None,
            iat: Some(now),
            iss: None,
            aud: None,
            caps: None,
            personal: None,
        }
    }

    /// Whether these claims let the holder join `project` (the `subscribe` operation): it is
    /// listed in `projects`, or `"*"` is; with a `caps` claim, a pattern of it grants
    /// `subscribe` on `project`. A `caps` claim of the wrong shape grants nothing
    /// ([`JwtAuth`](crate::JwtAuth) refuses such a token with `401 invalid_token` first).
    pub fn allows(&self, project: &str) -> bool {
        if self.caps.is_none() {
            // The v1 rule, without building the grants: the hot path of every handshake.
            return self.projects.iter().any(|p| p == "*" || p == project);
        }
        match (ProjectId::parse(project), self.grants()) {
            (Ok(project), Ok(grants)) => grants.allows(&project, Operation::Subscribe),
            _ => false,
        }
    }

    /// What the token allows, per operation and project (SPEC §12): its `projects`, its
    /// `caps` when present, and its personal stream unless `personal` is `false`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ws_auth::Claims;
    /// use ws_core::{Operation, ProjectId};
    ///
    /// let mut claims = Claims::new("alice", ["ignored"], Duration::from_secs(60));
    /// claims.caps = Some(serde_json::json!({"feed:*": ["subscribe"]}));
    /// let grants = claims.grants().unwrap();
    /// let feed = ProjectId::parse("feed:news").unwrap();
    /// assert!(grants.allows(&feed, Operation::Subscribe));
    /// assert!(!grants.allows(&feed, Operation::Publish));
    /// assert!(!claims.allows("ignored"));
    /// ```
    pub fn grants(&self) -> Result<Grants, GrantsError> {
        Grants::from_claims(
            &self.projects,
            self.caps.as_ref(),
            self.personal.unwrap_or(true),
        )
    }

    /// The instant `exp` names, or `None` when it lies beyond what [`SystemTime`] can hold.
    ///
    /// A verified token may carry any `exp` up to `u64::MAX` seconds (year 584 billion), but
    /// `SystemTime` on Unix ends at `i64::MAX` seconds, and `UNIX_EPOCH + Duration` panics past
    /// that. An `exp` so far off never passes, so `None` means "never expires"; callers adding
    /// a leeway should use [`SystemTime::checked_add`] and read an overflow the same way.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use ws_auth::Claims;
    ///
    /// let mut claims = Claims::new("alice", ["chat"], Duration::from_secs(60));
    /// claims.exp = 5;
    /// assert_eq!(claims.expires_at(), Some(UNIX_EPOCH + Duration::from_secs(5)));
    /// claims.exp = u64::MAX;
    /// assert_eq!(claims.expires_at(), None);
    /// ```
    pub fn expires_at(&self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(Duration::from_secs(self.exp))
    }
}

/// Seconds since the Unix epoch; instants before it count as 0.
fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The project a request is scoped to.
///
/// The server's router inserts it into the request extensions *before* the auth service runs.
/// When present, [`JwtAuth`](crate::JwtAuth) also checks [`Claims::allows`] and answers
/// `403 forbidden` otherwise; when absent, it only authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProjectScope(pub String);

/// Where the accepted token was found; inserted into the request extensions beside [`Claims`].
///
/// For logs and metrics: to see, say, whether any client still sends its token in the query
/// before turning that carrier off ([`JwtAuthLayer::allow_query_token`]). It decides nothing
/// about the subprotocol answer: the transport answers `wshub.v1` when the client offered it,
/// whichever carrier held the token.
///
/// [`JwtAuthLayer::allow_query_token`]: crate::JwtAuthLayer::allow_query_token
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenCarrier {
    /// `Authorization: Bearer <jwt>`.
    AuthorizationHeader,
    /// `Sec-WebSocket-Protocol: wshub.v1, wshub.bearer.<jwt>`.
    Subprotocol,
    /// Query parameter `access_token=<jwt>`.
    Query,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_grants_every_project() {
        let claims = Claims::new("u", ["*"], Duration::from_secs(60));
        assert!(claims.allows("anything"));
        assert!(claims.allows("other"));
    }

    #[test]
    fn listed_projects_only() {
        let claims = Claims::new("u", ["a", "b"], Duration::from_secs(60));
        assert!(claims.allows("a"));
        assert!(claims.allows("b"));
        assert!(!claims.allows("c"));
        assert!(!claims.allows("*"));
        let none = Claims::new("u", Vec::<String>::new(), Duration::from_secs(60));
        assert!(!none.allows("a"));
    }

    #[test]
    fn serialisation_skips_none_and_defaults_projects() {
        let claims = Claims::new("u", ["a"], Duration::from_secs(60));
        let json = serde_json::to_value(&claims).unwrap();
        let obj = json.as_object().unwrap();
        assert!(obj.contains_key("iat"));
        assert!(!obj.contains_key("nbf"));
        assert!(!obj.contains_key("iss"));
        assert!(!obj.contains_key("aud"));

        let parsed: Claims = serde_json::from_str(r#"{"sub":"u","exp":5}"#).unwrap();
        assert!(parsed.projects.is_empty());
        assert_eq!(parsed.nbf, None);
        assert_eq!(
            parsed.expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(5))
        );
    }
}
