//! Topics: the audiences events are stored under and routed by.

use std::{fmt, sync::Arc};

use super::UserId;

/// An audience. Every persisted event belongs to one topic, every stream
/// listens to a set of topics, and routing is a lookup by topic, so no
/// event wakes a connection outside its audience.
///
/// Cheap to clone: the registry keeps one per subscribed connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// The private topic of one user: their notifications and everything
    /// addressed to them alone.
    pub fn user(user: &UserId) -> Self {
        Topic(format!("u:{user}").into())
    }

    /// A conversation's topic: its messages, edits, receipts and typing.
    pub fn conversation(id: i64) -> Self {
        Topic(format!("c:{id}").into())
    }

    /// The internal topic revocations travel on between nodes: only each
    /// node's revocation watcher listens to it, never a stream (user and
    /// conversation topics have other prefixes).
    pub fn revocations() -> Self {
        Topic("sys:revocations".into())
    }

    /// The conversation this topic belongs to, if it is one.
    pub fn conversation_id(&self) -> Option<i64> {
        self.0.strip_prefix("c:")?.parse().ok()
    }

    /// A topic read back from the log.
    pub fn from_stored(raw: &str) -> Self {
        Topic(raw.into())
    }

    /// The name stored in the log.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
