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

    /// Where announcements (notifications for `all` or a topic's readers,
    /// stored once) are logged and routed. Every stream listens to it and
    /// keeps what its own token's audience covers; the prefix is no user's,
    /// conversation's or named topic's.
    pub fn announcements() -> Self {
        static ANNOUNCEMENTS: std::sync::LazyLock<Topic> = std::sync::LazyLock::new(|| Topic("sys:announcements".into()));
        ANNOUNCEMENTS.clone()
    }

    /// The conversation this topic belongs to, if it is one.
    pub fn conversation_id(&self) -> Option<i64> {
        self.0.strip_prefix("c:")?.parse().ok()
    }

    /// A named broadcast topic (`t:<name>`): a dashboard, a status page, an
    /// organisation. Stored apart from users' and conversations' topics, so
    /// no name can reach into them.
    pub fn named(name: &TopicName) -> Self {
        Topic(format!("t:{}", name.as_str()).into())
    }

    /// The broadcast name of this topic, if it is one.
    pub fn name(&self) -> Option<&str> {
        self.0.strip_prefix("t:")
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

/// The name of a broadcast topic as clients give it: 1-100 characters of
/// `a-z 0-9 _ . : -`, checked once at the edge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicName(String);

/// Most characters of a topic name.
pub const MAX_TOPIC_NAME: usize = 100;

impl TopicName {
    /// Checks the contract's rule; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_TOPIC_NAME {
            return Err(format!("topic names are 1-{MAX_TOPIC_NAME} characters"));
        }
        if !raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-')) {
            return Err("topic names use only a-z 0-9 _ . : -".into());
        }
        Ok(TopicName(raw.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `name` matches `pattern`: `*` stands for any run of characters
/// without `:`, `**` for any run at all, everything else for itself. So
/// `org:42:*` covers `org:42:alerts` but not `org:42:team:a`, which
/// `org:42:**` covers.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p {
            [] => n.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=n.len()).any(|i| go(rest, &n[i..])),
            [b'*', rest @ ..] => {
                let mut i = 0;
                loop {
                    if go(rest, &n[i..]) {
                        return true;
                    }
                    if i == n.len() || n[i] == b':' {
                        return false;
                    }
                    i += 1;
                }
            }
            [c, rest @ ..] => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    // Patterns come from tokens and settings: bounded so matching stays cheap.
    pattern.len() <= 2 * MAX_TOPIC_NAME && go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert!(TopicName::parse("org:42:alerts").is_ok());
        assert!(TopicName::parse("status").is_ok());
        assert!(TopicName::parse("").is_err());
        assert!(TopicName::parse("Upper").is_err());
        assert!(TopicName::parse("a b").is_err());
        assert!(TopicName::parse(&"a".repeat(101)).is_err());
    }

    #[test]
    fn one_star_stays_within_a_segment_and_two_cross_them() {
        assert!(pattern_matches("org:42:*", "org:42:alerts"));
        assert!(!pattern_matches("org:42:*", "org:42:team:a"));
        assert!(pattern_matches("org:42:**", "org:42:team:a"));
        assert!(pattern_matches("*", "status"));
        assert!(!pattern_matches("*", "org:1"));
        assert!(pattern_matches("**", "org:1"));
        assert!(pattern_matches("status", "status"));
        assert!(!pattern_matches("status", "status2"));
        assert!(pattern_matches("org:*:alerts", "org:7:alerts"));
        assert!(!pattern_matches("org:*:alerts", "org:7:8:alerts"));
    }

    #[test]
    fn named_topics_cannot_reach_users_or_conversations() {
        let topic = Topic::named(&TopicName::parse("u:alice").unwrap());
        assert_eq!(topic.as_str(), "t:u:alice");
        assert_eq!(topic.name(), Some("u:alice"));
        assert_eq!(topic.conversation_id(), None);
    }
}
