//! Event ids: positions in the event log.

use std::fmt;

/// The id of a persisted event. Clients see it as an opaque string; inside,
/// it is the log position, strictly increasing in commit order, which is what
/// makes "everything after N" a complete answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(i64);

impl EventId {
    /// The position before any event.
    pub const ZERO: EventId = EventId(0);

    /// Wraps a log position read from the database.
    pub fn new(position: i64) -> Self {
        EventId(position)
    }

    /// Parses a client's `Last-Event-ID`. `None` for anything that is not an
    /// id this server could have issued, which the stream answers with `reset`.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        raw.parse().ok().map(EventId)
    }

    /// The log position.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::EventId;

    #[test]
    fn decimal_ids_parse_and_anything_else_does_not() {
        assert_eq!(EventId::parse("42"), Some(EventId::new(42)));
        assert_eq!(EventId::parse(" 7 "), Some(EventId::new(7)));
        assert_eq!(EventId::parse(""), None);
        assert_eq!(EventId::parse("-1"), None);
        assert_eq!(EventId::parse("abc"), None);
        assert_eq!(EventId::parse("99999999999999999999"), None);
    }
}
