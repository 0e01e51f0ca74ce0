//! Events as they travel: routed by topic, written as pre-encoded SSE frames.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::domain::{
    EventId, Topic, UserId,
    events,
    notification::{Audience, AudienceRequest, Notification},
};

/// An event on its way to streams. The frame is encoded once when the event
/// is created; each recipient gets a reference-counted view of the same bytes.
#[derive(Debug)]
pub struct Event {
    /// The log id for persisted events; `None` for ephemeral ones (typing,
    /// presence, counts), which are never replayed.
    pub id: Option<EventId>,
    /// For state events such as `unread_count`: the log position whose state
    /// the event reports. A stream that already sent state at least that
    /// recent skips it, so a count computed before a replay can never
    /// overwrite a fresher one sent after it.
    pub as_of: Option<EventId>,
    /// The audience.
    pub topic: Topic,
    /// The complete SSE frame, ending with the blank line.
    pub frame: Bytes,
    /// A membership change carried by this event (on a user's topic): the
    /// registry moves that user's connections onto or off the conversation's
    /// topic as it delivers the event, so the very next event of the
    /// conversation already reaches (or no longer reaches) them.
    pub route: Option<RouteChange>,
    /// A user who must not receive this event although in its audience
    /// (the sender of a `typing` event).
    pub exclude: Option<UserId>,
    /// A signal to the streams of the topic's user, never sent to a client
    /// and never crossing the bus: some of the user's tokens were revoked
    /// (see `crate::revocation`); each stream checks whether its own is.
    pub revoked: bool,
    /// What a stream must know of the event to keep its user's view of
    /// announcements, read off the payload once when the event is made
    /// (here or, on another node, from the log) rather than by every stream.
    pub notice: Option<Notice>,
}

/// The facts of an event that a stream acts on beyond forwarding its frame:
/// announcements reach a stream's user only if the token's audience covers
/// them, and they count in its unread count, which no shared frame can say.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// An announcement, new or updated by its group: unread for everyone.
    Announced(Arc<Announced>),
    /// Notifications the user read or deleted (their own or announcements).
    Settled(Box<[i64]>),
    /// The user's unread count of their own notifications, which each
    /// stream adds its unread announcements to.
    Count(u64),
}

/// Who an announcement is for, as a stream decides it.
#[derive(Debug, Clone, PartialEq)]
pub struct Announced {
    pub id: i64,
    pub audience: Audience,
    /// Its type: the user's preference for it applies.
    pub kind: String,
    /// Shown whatever the preference.
    pub critical: bool,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Notice {
    /// The notice an event of `name` on `topic` carries, read off its data.
    fn of(topic: &Topic, name: &str, data: &str) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Ids {
            #[serde(default)]
            ids: Vec<i64>,
            id: Option<i64>,
        }
        match name {
            events::NOTIFICATION if *topic == Topic::announcements() => {
                let notification: Notification = serde_json::from_str(data).ok()?;
                let audience = match notification.audience? {
                    AudienceRequest::Everyone(_) => Audience::All,
                    AudienceRequest::Topic(topic) => Audience::Topic(crate::domain::TopicName::parse(&topic.topic).ok()?),
                };
                Some(Notice::Announced(Arc::new(Announced {
                    id: notification.id,
                    audience,
                    kind: notification.kind,
                    critical: notification.critical,
                    expires_at: notification.expires_at,
                })))
            }
            events::NOTIFICATION_READ | events::NOTIFICATION_DELETED => {
                let Ids { mut ids, id } = serde_json::from_str(data).ok()?;
                ids.extend(id);
                Some(Notice::Settled(ids.into_boxed_slice()))
            }
            events::UNREAD_COUNT => Some(Notice::Count(serde_json::from_str::<events::UnreadCount>(data).ok()?.count)),
            _ => None,
        }
    }
}

/// A user joining or leaving a conversation's topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    pub conversation: Topic,
    pub joined: bool,
}

impl RouteChange {
    /// The stored form: `+c:<id>` or `-c:<id>`.
    pub fn encode(&self) -> String {
        format!("{}{}", if self.joined { '+' } else { '-' }, self.conversation)
    }

    /// Reads the stored form back.
    pub fn decode(stored: &str) -> Option<Self> {
        let (sign, topic) = stored.split_at_checked(1)?;
        let joined = match sign {
            "+" => true,
            "-" => false,
            _ => return None,
        };
        Some(RouteChange { conversation: Topic::from_stored(topic), joined })
    }
}

impl Event {
    /// An event read from or just written to the log.
    pub fn persisted(id: EventId, topic: Topic, name: &str, data: &str) -> Self {
        let notice = Notice::of(&topic, name, data);
        Event {
            id: Some(id),
            as_of: None,
            topic,
            frame: encode_frame(Some(id), name, data),
            route: None,
            exclude: None,
            revoked: false,
            notice,
        }
    }

    /// An ephemeral event (typing, presence): never stored, no id.
    pub fn ephemeral(topic: Topic, name: &str, data: &str) -> Self {
        Event::state(topic, name, data, None)
    }

    /// The signal that the user of `topic` had tokens revoked: their streams
    /// on this node re-check their own token.
    pub fn revocation(topic: Topic) -> Self {
        Event { revoked: true, frame: Bytes::new(), ..Event::ephemeral(topic, "", "") }
    }

    /// The same event, carrying a membership change.
    pub fn with_route(mut self, route: RouteChange) -> Self {
        self.route = Some(route);
        self
    }

    /// The same event, kept from `user`.
    pub fn excluding(mut self, user: UserId) -> Self {
        self.exclude = Some(user);
        self
    }

    /// A state report (no id) that reflects the log up to `as_of`.
    pub fn state(topic: Topic, name: &str, data: &str, as_of: Option<EventId>) -> Self {
        let notice = Notice::of(&topic, name, data);
        Event {
            id: None,
            as_of,
            topic,
            frame: encode_frame(None, name, data),
            route: None,
            exclude: None,
            revoked: false,
            notice,
        }
    }
}

/// Writes one SSE frame. `name` is one of our own event names (no CR/LF);
/// `data` is JSON, split on line breaks as the SSE format requires, so even a
/// payload with a raw newline cannot break the framing.
pub fn encode_frame(id: Option<EventId>, name: &str, data: &str) -> Bytes {
    debug_assert!(!name.contains(['\r', '\n']));
    let mut frame = BytesMut::with_capacity(data.len() + name.len() + 32);
    if let Some(id) = id {
        frame.put_slice(b"id: ");
        frame.put_slice(id.to_string().as_bytes());
        frame.put_u8(b'\n');
    }
    frame.put_slice(b"event: ");
    frame.put_slice(name.as_bytes());
    frame.put_u8(b'\n');
    for line in data.split('\n') {
        frame.put_slice(b"data: ");
        frame.put_slice(line.trim_end_matches('\r').as_bytes());
        frame.put_u8(b'\n');
    }
    frame.put_u8(b'\n');
    frame.freeze()
}

/// A frame with only an `id:` line: it moves the client's last event id
/// forward (EventSource updates `lastEventId` and dispatches nothing), so a
/// reconnect resumes from the log head the initial state reflected.
pub fn encode_position(id: EventId) -> Bytes {
    Bytes::from(format!("id: {id}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_has_id_event_data_and_a_blank_line() {
        let frame = encode_frame(Some(EventId::new(7)), "notification", "{\"a\":1}");
        assert_eq!(&frame[..], b"id: 7\nevent: notification\ndata: {\"a\":1}\n\n");
    }

    #[test]
    fn route_changes_survive_the_round_trip_through_the_log() {
        let route = RouteChange { conversation: Topic::conversation(7), joined: false };
        assert_eq!(route.encode(), "-c:7");
        assert_eq!(RouteChange::decode("-c:7"), Some(route));
        assert_eq!(RouteChange::decode("?"), None);
    }

    #[test]
    fn newlines_in_data_become_separate_data_lines() {
        let frame = encode_frame(None, "x", "a\r\nb");
        assert_eq!(&frame[..], b"event: x\ndata: a\ndata: b\n\n");
    }
}
