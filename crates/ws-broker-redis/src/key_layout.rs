//! Where a project lives in Redis. Every key of a project carries the project id between
//! braces (`wshub:{shop}:meta`): project ids cannot contain braces, so no two projects'
//! keys collide, and a Redis Cluster hash tag would put all of a project's keys in one slot.

use ws_core::ProjectId;

/// The key names of one deployment (one `key_prefix`).
#[derive(Debug, Clone)]
pub(crate) struct KeyLayout {
    prefix: String,
}

impl KeyLayout {
    /// `prefix` must not contain braces (checked by the broker's configuration).
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, project: &ProjectId, what: &str) -> String {
        format!("{}:{{{}}}:{what}", self.prefix, project.as_str())
    }

    /// A hash: `epoch` (names the stream) and `top` (the newest offset).
    pub(crate) fn meta(&self, project: &ProjectId) -> String {
        self.key(project, "meta")
    }

    /// A list of the retained messages, oldest first: `"<offset> <ms> <frame>"`.
    pub(crate) fn history(&self, project: &ProjectId) -> String {
        self.key(project, "history")
    }

    /// Exact publishing: a hash idempotency key → the offset of its first publish.
    pub(crate) fn keys(&self, project: &ProjectId) -> String {
        self.key(project, "keys")
    }

    /// Exact publishing: a sorted set of the keys of [`KeyLayout::keys`] by the Redis ms
    /// they were recorded, so the oldest are forgotten first.
    pub(crate) fn key_order(&self, project: &ProjectId) -> String {
        self.key(project, "key-order")
    }

    /// The pub/sub channel of the project's messages (`frame::parse_live`):
    /// `"<epoch> <offset>[@<node>:<conn>] <frame>"` for a stored message,
    /// `"- -[@<node>:<conn>] <frame>"` for an ephemeral one.
    pub(crate) fn channel(&self, project: &ProjectId) -> String {
        self.key(project, "messages")
    }

    /// A sorted set of the nodes that announced members of the project (score: when their
    /// announcement expires, in Redis milliseconds).
    pub(crate) fn presence(&self, project: &ProjectId) -> String {
        self.key(project, "presence")
    }

    /// One node's members of the project: a hash user → connections, with a TTL.
    pub(crate) fn presence_of(&self, project: &ProjectId, node: &str) -> String {
        format!("{}:{node}", self.presence(project))
    }

    /// The deployment's budget: a sorted set of projects by the Redis ms of their last
    /// publish. `*` cannot be in a project id, so `{*}` is no project's hash tag.
    pub(crate) fn streams(&self) -> String {
        format!("{}:{{*}}:streams", self.prefix)
    }

    /// A hash project → its history's bytes, as last reported.
    pub(crate) fn stream_bytes(&self) -> String {
        format!("{}:{{*}}:stream-bytes", self.prefix)
    }

    /// The sum of [`KeyLayout::stream_bytes`].
    pub(crate) fn total_bytes(&self) -> String {
        format!("{}:{{*}}:bytes", self.prefix)
    }

    /// Held (`SET NX PX`) by the node sweeping the budget, so nodes do not free twice.
    pub(crate) fn sweeper(&self) -> String {
        format!("{}:{{*}}:sweeper", self.prefix)
    }

    /// The project whose channel is `channel`.
    pub(crate) fn project_of_channel(&self, channel: &str) -> Option<ProjectId> {
        let rest = channel.strip_prefix(self.prefix.as_str())?;
        let id = rest.strip_prefix(":{")?.strip_suffix("}:messages")?;
        ProjectId::parse_stream(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_project_between_braces() {
        let keys = KeyLayout::new("wshub");
        let p = ProjectId::parse("shop:eu").unwrap();
        assert_eq!(keys.meta(&p), "wshub:{shop:eu}:meta");
        assert_eq!(keys.history(&p), "wshub:{shop:eu}:history");
        assert_eq!(keys.channel(&p), "wshub:{shop:eu}:messages");
        assert_eq!(keys.keys(&p), "wshub:{shop:eu}:keys");
        assert_eq!(keys.key_order(&p), "wshub:{shop:eu}:key-order");
        assert_eq!(keys.presence_of(&p, "n1"), "wshub:{shop:eu}:presence:n1");
        assert_eq!(keys.project_of_channel(&keys.channel(&p)), Some(p));
        assert_eq!(keys.project_of_channel("other:{shop}:messages"), None);
        assert_eq!(keys.project_of_channel("wshub:{sh op}:messages"), None);
        assert_eq!(keys.project_of_channel("wshub:{shop}:meta"), None);
    }
}
