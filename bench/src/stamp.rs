//! The stamp every published message carries in `data.bench`: which message
//! it is, whom it is for, and when it left the publisher. It is what makes
//! loss, duplication and latency measurable on any hub, whatever its ids.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A message's identity and send time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamp {
    /// Unique per run; dense from 0, so per-message tallies are vectors.
    pub seq: u32,
    /// The user or audience the message was published to.
    pub to: String,
    /// Wall-clock send time in ns since the Unix epoch. Publisher and
    /// workers are processes on one machine, so they share this clock.
    pub sent_ns: u64,
}

/// The part of an event's data the bench reads. Tidings sends the
/// notification object (`event: notification`) or the topic event object
/// (`event: topic.event`), whose `data` is in both cases what we published
/// in `data`; a channel hub sends our body as is, whose `data` is the same
/// object. So the stamp is at `data.bench` whichever the event.
#[derive(Deserialize)]
struct Received<'a> {
    #[serde(borrow)]
    data: Option<ReceivedData<'a>>,
}

#[derive(Deserialize)]
struct ReceivedData<'a> {
    #[serde(borrow)]
    bench: Option<ReceivedStamp<'a>>,
}

/// A stamp as read from an event, borrowing its `to`.
#[derive(Debug, Deserialize)]
pub struct ReceivedStamp<'a> {
    pub seq: u32,
    #[serde(borrow)]
    pub to: &'a str,
    pub sent_ns: u64,
}

/// The stamp in an event's data, if it carries one (other events, such as
/// Tidings' `unread_count`, do not).
pub fn read(data: &str) -> Option<ReceivedStamp<'_>> {
    serde_json::from_str::<Received<'_>>(data).ok()?.data?.bench
}

/// Now, in ns since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_stamp_from_a_tidings_notification_and_a_raw_body() {
        let tidings = r#"{"id":3,"user_id":"u","type":"bench","title":"t","body":"","data":{"bench":{"seq":7,"to":"u","sent_ns":11}},"count":1}"#;
        let raw = r#"{"type":"bench","title":"t","body":"x","data":{"bench":{"seq":8,"to":"room","sent_ns":12}}}"#;
        assert_eq!(read(tidings).map(|s| (s.seq, s.to, s.sent_ns)), Some((7, "u", 11)));
        assert_eq!(read(raw).map(|s| (s.seq, s.to)), Some((8, "room")));
        assert!(read(r#"{"count":3}"#).is_none());
        // `event: topic.event`: the published `data` object inside the event's `data`.
        let topic = r#"{"id":9,"topic":"bench:r","type":"bench","data":{"bench":{"seq":4,"to":"r","sent_ns":13},"body":"xx"},"key":null,"created_at":"2026-01-01T00:00:00.000Z"}"#;
        assert_eq!(read(topic).map(|s| (s.seq, s.to, s.sent_ns)), Some((4, "r", 13)));
        // An announcement: `user_id` null, `audience` "all", the stamp in `data` as in any notification.
        let announcement = r#"{"id":12,"user_id":null,"audience":"all","type":"bench","title":"bench","body":"x","data":{"bench":{"seq":5,"to":"b1-all0","sent_ns":14}},"read_at":null,"count":1}"#;
        assert_eq!(read(announcement).map(|s| (s.seq, s.to, s.sent_ns)), Some((5, "b1-all0", 14)));
        assert!(read("not json").is_none());
    }
}
