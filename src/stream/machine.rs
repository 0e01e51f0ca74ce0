//! The stream's states and transitions, as plain functions of what
//! happened: what was read, what the mailbox brought, what the clock says.
//! No I/O here; [`super::body`] performs the reads each state asks for and
//! feeds the results back. Every transition queues the frames it produces,
//! in order, and names the next state:
//!
//! ```text
//! Opening ─┬─ resume point ─► Resuming ─┬─ gap read with the count ────────► Live
//!          │                             ├─ gap longer than one read ─► Replay ─► Counting ─► Live
//!          │                             └─ point gone: `reset` ─► Fresh
//!          ├─ no resume point ──────────► Fresh ──────────────────────────────────────────► Live
//!          └─ not an id of ours: `reset` ► Fresh
//! Live ─ mailbox overflowed (lag) ─► Replay (catch-up from the last id) ─► Counting ─► Live
//! any ─ token expired / revoked / shutdown / read failed ─► Ended
//! ```

use std::{collections::VecDeque, sync::Arc};

use bytes::Bytes;
use tokio::time::Instant;

use crate::{
    domain::{EventId, Topic, UserId, events, events::UnreadCount},
    hub::{Announced, Event, Notice, RouteChange, event::encode_frame, event::encode_position},
    notifications::{UnreadState, announcements::{SeenTally, Viewer}},
    store::event_log::{Audience, Window},
};

/// The last words of a stream whose token expired.
pub const EXPIRED_FAREWELL: &[u8] = b": token expired, reconnect with a fresh token\n\n";
/// The last words of a stream whose token was revoked: a comment, so that
/// EventSource reconnects (and is then refused until it has a new token).
pub const REVOKED_FAREWELL: &[u8] = b": token revoked, reconnect with a fresh token\n\n";
/// The last words of every stream when the node shuts down.
pub const SHUTDOWN_FAREWELL: &[u8] = b": server shutting down\n\n";
/// The heartbeat comment.
pub const PING: &[u8] = b": ping\n\n";

/// Where a stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Reading memberships and checking the resume point; without a resume
    /// point, first the initial state as if the user were in no
    /// conversation (see `reads::fresh_states`).
    Opening,
    /// Reading the starting state of a stream without a (valid) resume point.
    Fresh,
    /// Checking the resume point and reading what was missed after it with
    /// the unread state, in one snapshot shared with other streams resuming
    /// at the same time (see `reads::StartReads`).
    Resuming,
    /// Reading the log after the cursor, a page at a time: on resume, and
    /// to catch up after the mailbox overflowed. `conflate_upto` is the log
    /// head when the replay began, once read (topics' keyed events are
    /// conflated up to it).
    Replay { conflate_upto: Option<EventId>, first_page: bool },
    /// Reading the unread count that follows a replay.
    Counting,
    /// Forwarding what the mailbox brings.
    Live,
    /// Over: the frames still queued are the last.
    Ended,
}

/// How the opening read judged the client's resume point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// None was given: start fresh.
    None,
    /// An id of ours: resume after it, if the log still holds what follows
    /// (decided by the resuming read, see [`Resumed`]).
    After(EventId),
    /// It cannot be honoured (garbage, another database, pruned history):
    /// say `reset`, then start fresh.
    Reset,
}

/// What the resuming read found.
pub enum Resumed {
    /// The point is beyond the log (another database) or older than its
    /// retained history: `reset`, then start fresh.
    Reset,
    /// Everything missed, and the unread state, from one snapshot.
    Caught { page: Page, state: UnreadState },
    /// More was missed than one read holds: the first page (what the
    /// shared read held of it, complete up to its last event; empty where
    /// keyed events are conflated), then replay page by page.
    Long { first: Page },
}

/// How far this stream has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last event id sent (or reflected by the state sent).
    pub last: EventId,
    /// The log position of the last state report sent (`unread_count`).
    pub state_as_of: EventId,
}

/// The stream's knowledge of its user's membership windows.
pub struct Windows {
    pub user: Topic,
    pub windows: Vec<Window>,
    /// The broadcast topics the stream listens to (the announcements' included).
    pub topics: Vec<Topic>,
}

impl Windows {
    /// What the stream may read from the log.
    pub fn audience(&self) -> Audience {
        Audience { user: self.user.clone(), windows: self.windows.clone(), topics: self.topics.clone() }
    }

    /// Applies a membership change carried by a logged event, in log order;
    /// applying one twice changes nothing.
    pub fn apply(&mut self, id: EventId, route: &RouteChange) {
        if route.joined {
            if !self.windows.iter().any(|w| w.topic == route.conversation && w.from >= id) {
                self.windows.push(Window { topic: route.conversation.clone(), from: id, until: None });
            }
        } else {
            for window in self.windows.iter_mut().filter(|w| w.topic == route.conversation && w.from < id && w.until.is_none()) {
                window.until = Some(id);
            }
        }
    }

    /// Whether an event of a broadcast topic was asked for, or one of a
    /// conversation falls inside a window.
    pub fn admits(&self, event: &Event) -> bool {
        if self.topics.contains(&event.topic) {
            return true;
        }
        self.windows.iter().filter(|w| w.topic == event.topic).any(|w| match event.id {
            Some(id) => id > w.from && w.until.is_none_or(|until| id <= until),
            None => w.until.is_none(),
        })
    }
}

/// The stream's view of announcements: which ones reach its user (judged
/// by the token it was opened with) and which of those are unread, so that
/// the unread count it sends includes them. A shared `unread_count` frame
/// carries the user's own count only; this stream adds its own part.
pub struct AnnouncementView {
    pub viewer: Viewer,
    /// Types the user's preferences hide, as of the last state read.
    pub hidden: Vec<String>,
    /// Unread announcements this stream's user sees, with their expiry.
    pub unread: Vec<(i64, Option<chrono::DateTime<chrono::Utc>>)>,
    /// The user's own unread count, as last sent.
    pub own: u64,
}

impl AnnouncementView {
    /// A view with nothing read yet.
    pub fn new(viewer: Viewer) -> Self {
        AnnouncementView { viewer, hidden: Vec::new(), unread: Vec::new(), own: 0 }
    }

    /// Takes a freshly read state.
    fn reset(&mut self, state: &UnreadState) {
        self.own = state.own;
        self.hidden.clone_from(&state.hidden);
        self.unread = state.announced.iter().map(|seen| (seen.row.id, seen.row.expires_at)).collect();
    }

    /// Whether an announcement reaches this stream.
    fn shows(&self, announced: &Announced) -> bool {
        self.viewer.shows(announced, &self.hidden)
    }

    /// The count the user sees: their own and the live unread announcements.
    fn count(&self) -> u64 {
        let now = chrono::Utc::now();
        self.own + self.unread.iter().filter(|(_, expires)| expires.is_none_or(|at| at > now)).count() as u64
    }
}

/// Counters a transition adds to, flushed into the hub's metrics by the body.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Frames of persisted events sent.
    pub delivered: u64,
    /// Events read back from the log and sent.
    pub replayed: u64,
    /// Catch-ups after an overflow.
    pub catch_ups: u64,
}

/// One replayed page, as read.
pub struct Page {
    pub events: Vec<Event>,
    /// The membership windows the page was read under.
    pub windows: Vec<Window>,
    /// Fewer events than a page: the replay has reached the end.
    pub complete: bool,
    /// The head the replay conflates up to, read with the first page.
    pub conflate_upto: Option<EventId>,
}

/// A stream's whole state, and the frames it has yet to send.
pub struct Machine {
    pub phase: Phase,
    pub cursor: Cursor,
    pub windows: Windows,
    pub announced: AnnouncementView,
    user: UserId,
    /// When the token expires: the stream ends then.
    pub expires: Instant,
    /// Frames produced and not yet handed to the connection, oldest first.
    out: VecDeque<Bytes>,
    /// Counters since the last flush.
    pub tally: Tally,
    /// Where deliveries of announcements are counted (their `sent`).
    seen: Arc<SeenTally>,
    /// Conversations the user left since the body last looked: their
    /// topics stop routing to this stream.
    pub left: Vec<Topic>,
}

impl Machine {
    /// A stream of `user` that starts by opening, with its first frame (the
    /// reconnection delay) queued.
    pub fn new(user: UserId, windows: Windows, viewer: Viewer, expires: Instant, retry_ms: u128, seen: Arc<SeenTally>) -> Self {
        let mut out = VecDeque::new();
        out.push_back(Bytes::from(format!("retry: {retry_ms}\n\n")));
        Machine {
            phase: Phase::Opening,
            cursor: Cursor { last: EventId::ZERO, state_as_of: EventId::ZERO },
            windows,
            announced: AnnouncementView::new(viewer),
            user,
            expires,
            out,
            tally: Tally::default(),
            seen,
            left: Vec::new(),
        }
    }

    /// The next frame to send, if any.
    pub fn next_frame(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    /// Whether the stream is over (its queued frames may still be sent).
    pub fn ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Ends the stream, after `farewell` (nothing when a read failed).
    pub fn end(&mut self, farewell: Option<&'static [u8]>) {
        if let Some(farewell) = farewell {
            self.out.push_back(Bytes::from_static(farewell));
        }
        self.phase = Phase::Ended;
    }

    /// Opening read: the memberships (their windows) and the verdict on the
    /// resume point.
    pub fn opened(&mut self, memberships: Vec<Window>, resume: Resume) {
        self.windows.windows.extend(memberships);
        self.phase = match resume {
            Resume::None => Phase::Fresh,
            Resume::Reset => {
                self.out.push_back(encode_frame(None, events::RESET, "{}"));
                Phase::Fresh
            }
            Resume::After(after) => {
                self.cursor.last = after;
                Phase::Resuming
            }
        };
    }

    /// Resuming read: a reset, or what was missed and the count (then
    /// live), or a gap to replay page by page.
    pub fn resumed(&mut self, resumed: Resumed) {
        match resumed {
            Resumed::Reset => {
                self.out.push_back(encode_frame(None, events::RESET, "{}"));
                self.phase = Phase::Fresh;
            }
            Resumed::Caught { page, state } => {
                debug_assert!(page.complete, "a caught-up resume read everything");
                self.replayed(page);
                self.counted(&state);
            }
            Resumed::Long { first } => {
                debug_assert!(!first.complete, "a long resume goes on reading");
                self.replayed(first);
            }
        }
    }

    /// Fresh start read: the unread notifications (and events of the
    /// stream's conversations and topics since it subscribed), the head
    /// they reflect, and the count at that head. Then live.
    pub fn started(&mut self, frames: Vec<(EventId, Bytes, Option<i64>)>, head: EventId, state: &UnreadState) {
        for (id, frame, announcement) in frames {
            self.cursor.last = id;
            self.tally.delivered += 1;
            if let Some(announcement) = announcement {
                self.seen.count(announcement);
            }
            self.out.push_back(frame);
        }
        if head > self.cursor.last {
            self.cursor.last = head;
            self.out.push_back(encode_position(head));
        }
        // The count read in the same snapshot, at the same position.
        self.cursor.state_as_of = head;
        self.announced.reset(state);
        self.out.push_back(count_frame(self.announced.count()));
        self.phase = Phase::Live;
    }

    /// One replayed page: its events go out (announcements only where the
    /// token's audience reaches), the windows are those it was read under.
    /// The last page leads to counting.
    pub fn replayed(&mut self, page: Page) {
        self.windows.windows = page.windows;
        for event in page.events {
            self.cursor.last = event.id.unwrap_or(self.cursor.last);
            if let Some(Notice::Announced(a)) = &event.notice {
                if !self.announced.shows(a) {
                    continue;
                }
                self.seen.count(a.id);
            }
            self.tally.replayed += 1;
            self.tally.delivered += 1;
            self.out.push_back(event.frame);
        }
        self.phase = if page.complete { Phase::Counting } else { Phase::Replay { conflate_upto: page.conflate_upto, first_page: false } };
    }

    /// The unread state after a replay: the count goes out, then live.
    pub fn counted(&mut self, state: &UnreadState) {
        self.cursor.state_as_of = state.position;
        self.announced.reset(state);
        self.out.push_back(count_frame(self.announced.count()));
        self.phase = Phase::Live;
    }

    /// Live events from the mailbox, in order. `revoked` says whether the
    /// stream's own token is revoked; it is asked only when a revocation
    /// signal for the user is in the batch.
    pub fn delivered(&mut self, batch: &mut Vec<Arc<Event>>, revoked: impl Fn() -> bool) {
        let mut is_revoked = false;
        for event in batch.drain(..) {
            if event.revoked {
                is_revoked |= revoked();
                continue;
            }
            if is_revoked {
                continue;
            }
            if let (Some(id), Some(route)) = (event.id, &event.route) {
                self.windows.apply(id, route);
                if !route.joined {
                    self.left.push(route.conversation.clone());
                }
            }
            if let Some(frame) = self.admit(&event) {
                self.tally.delivered += u64::from(event.id.is_some());
                self.out.push_back(frame);
                // A new announcement is one more unread: the count follows
                // it, as it follows a notification.
                if let Some(Notice::Announced(a)) = &event.notice {
                    self.seen.count(a.id);
                    if !self.announced.unread.iter().any(|(id, _)| *id == a.id) {
                        self.announced.unread.push((a.id, a.expires_at));
                        self.out.push_back(count_frame(self.announced.count()));
                    }
                }
            }
        }
        if is_revoked {
            self.end(Some(REVOKED_FAREWELL));
        }
    }

    /// The mailbox overflowed: catch up from the last id sent, unless the
    /// dropped events may have held a revocation of this token.
    pub fn lagged(&mut self, revoked: bool) {
        if revoked {
            self.end(Some(REVOKED_FAREWELL));
            return;
        }
        self.tally.catch_ups += 1;
        self.phase = Phase::Replay { conflate_upto: None, first_page: true };
    }

    /// The shared heartbeat: a ping, or the end if the token has expired.
    pub fn heartbeat(&mut self, now: Instant) {
        if now >= self.expires {
            self.end(Some(EXPIRED_FAREWELL));
        } else {
            self.out.push_back(Bytes::from_static(PING));
        }
    }

    /// Decides whether a live event goes out: never to a user it excludes,
    /// a conversation's only inside a membership window, logged events only
    /// past the last id sent, state reports only when fresher than the last
    /// one sent. Announcements go only where the token's audience and the
    /// user's preferences let them; what the user read or deleted leaves
    /// the unread announcements; a shared count gets the stream's own part
    /// added.
    fn admit(&mut self, event: &Event) -> Option<Bytes> {
        if event.exclude.as_ref() == Some(&self.user) {
            return None;
        }
        if event.topic != self.windows.user && !self.windows.admits(event) {
            return None;
        }
        match &event.notice {
            Some(Notice::Announced(a)) if !self.announced.shows(a) => return None,
            Some(Notice::Settled(ids)) if event.id.is_some_and(|id| id > self.cursor.last) => {
                self.announced.unread.retain(|(id, _)| !ids.contains(id));
            }
            _ => {}
        }
        match (event.id, event.as_of) {
            (Some(id), _) if id > self.cursor.last => {
                self.cursor.last = id;
                Some(event.frame.clone())
            }
            (Some(_), _) => None,
            (None, Some(as_of)) if as_of <= self.cursor.state_as_of => None,
            (None, as_of) => {
                if let Some(as_of) = as_of {
                    self.cursor.state_as_of = as_of;
                }
                match event.notice {
                    Some(Notice::Count(own)) => {
                        self.announced.own = own;
                        if self.announced.unread.is_empty() { Some(event.frame.clone()) } else { Some(count_frame(self.announced.count())) }
                    }
                    _ => Some(event.frame.clone()),
                }
            }
        }
    }
}

/// The `unread_count` frame of `count`.
pub fn count_frame(count: u64) -> Bytes {
    let data = serde_json::to_string(&UnreadCount { count }).expect("counts encode");
    encode_frame(None, events::UNREAD_COUNT, &data)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{auth::Principal, topics::TopicAccess};

    fn user() -> UserId {
        UserId::parse("ann").unwrap()
    }

    fn machine(expires_in: Duration) -> Machine {
        let principal = Principal::for_tests(user(), &[]);
        let viewer = Viewer::new(&principal, &TopicAccess::default());
        let windows = Windows { user: Topic::user(&user()), windows: Vec::new(), topics: vec![Topic::announcements()] };
        Machine::new(user(), windows, viewer, Instant::now() + expires_in, 3000, Arc::default())
    }

    fn frames(machine: &mut Machine) -> Vec<String> {
        std::iter::from_fn(|| machine.next_frame()).map(|b| String::from_utf8(b.to_vec()).unwrap()).collect()
    }

    fn own(id: i64, title: &str) -> Event {
        Event::persisted(EventId::new(id), Topic::user(&user()), events::NOTIFICATION, &format!("{{\"title\":\"{title}\"}}"))
    }

    fn state(position: i64, own: u64) -> UnreadState {
        UnreadState { position: EventId::new(position), own, announced: Vec::new(), hidden: Vec::new() }
    }

    fn page(events: Vec<Event>, complete: bool) -> Page {
        Page { events, windows: Vec::new(), complete, conflate_upto: None }
    }

    #[test]
    fn a_stream_starts_with_the_retry_delay_and_a_fresh_start_ends_live_with_the_count() {
        let mut m = machine(Duration::from_secs(60));
        m.opened(Vec::new(), Resume::None);
        assert_eq!(m.phase, Phase::Fresh);
        m.started(vec![(EventId::new(3), Bytes::from_static(b"id: 3\n\n"), None)], EventId::new(9), &state(9, 1));
        assert_eq!(m.phase, Phase::Live);
        let sent = frames(&mut m);
        assert_eq!(sent[0], "retry: 3000\n\n");
        assert_eq!(sent[1], "id: 3\n\n");
        assert_eq!(sent[2], "id: 9\n\n", "the position moves to the head");
        assert!(sent[3].contains("unread_count") && sent[3].contains("\"count\":1"));
        assert_eq!(m.cursor, Cursor { last: EventId::new(9), state_as_of: EventId::new(9) });
    }

    #[test]
    fn an_unusable_resume_point_says_reset_then_starts_fresh() {
        let mut m = machine(Duration::from_secs(60));
        m.opened(Vec::new(), Resume::Reset);
        assert_eq!(m.phase, Phase::Fresh);
        let sent = frames(&mut m);
        assert!(sent[1].starts_with("event: reset\n"), "{sent:?}");
    }

    #[test]
    fn a_resume_read_whole_sends_the_gap_then_the_count_at_its_snapshot_then_goes_live() {
        let mut m = machine(Duration::from_secs(60));
        m.opened(Vec::new(), Resume::After(EventId::new(5)));
        assert_eq!(m.phase, Phase::Resuming);
        m.resumed(Resumed::Caught { page: page(vec![own(6, "a"), own(7, "b")], true), state: state(9, 2) });
        assert_eq!(m.phase, Phase::Live);
        assert_eq!(m.cursor, Cursor { last: EventId::new(7), state_as_of: EventId::new(9) });
        let sent = frames(&mut m);
        assert_eq!(sent.len(), 1 + 2 + 1);
        assert!(sent[1].starts_with("id: 6\n") && sent[2].starts_with("id: 7\n"));
        assert!(sent[3].contains("unread_count") && sent[3].contains("\"count\":2"));
    }

    #[test]
    fn a_resume_point_the_log_no_longer_covers_says_reset_then_starts_fresh() {
        let mut m = machine(Duration::from_secs(60));
        m.opened(Vec::new(), Resume::After(EventId::new(5)));
        m.resumed(Resumed::Reset);
        assert_eq!(m.phase, Phase::Fresh);
        assert!(frames(&mut m)[1].starts_with("event: reset\n"));
    }

    #[test]
    fn a_long_resume_replays_page_by_page_then_counts_then_goes_live() {
        let mut m = machine(Duration::from_secs(60));
        m.opened(Vec::new(), Resume::After(EventId::new(5)));
        m.resumed(Resumed::Long { first: page(vec![own(6, "a"), own(7, "b")], false) });
        assert_eq!(m.phase, Phase::Replay { conflate_upto: None, first_page: false });
        assert_eq!(m.cursor.last, EventId::new(7), "the next page starts after the first");
        m.replayed(page(vec![own(8, "c")], true));
        assert_eq!(m.phase, Phase::Counting);
        m.counted(&state(8, 3));
        assert_eq!(m.phase, Phase::Live);
        assert_eq!(m.cursor.last, EventId::new(8));
        assert_eq!(m.tally.replayed, 3);
        assert_eq!(frames(&mut m).len(), 1 + 3 + 1);
    }

    #[test]
    fn live_events_at_or_below_the_last_id_are_skipped_and_later_ones_go_out_in_order() {
        let mut m = machine(Duration::from_secs(60));
        m.opened(Vec::new(), Resume::After(EventId::new(5)));
        m.resumed(Resumed::Caught { page: page(vec![own(6, "a")], true), state: state(6, 0) });
        frames(&mut m);
        let mut batch = vec![Arc::new(own(6, "a")), Arc::new(own(7, "b"))];
        m.delivered(&mut batch, || false);
        let sent = frames(&mut m);
        assert_eq!(sent.len(), 1);
        assert!(sent[0].starts_with("id: 7\n"));
    }

    #[test]
    fn a_lag_catches_up_from_the_last_id_sent_then_counts_again() {
        let mut m = machine(Duration::from_secs(60));
        m.opened(Vec::new(), Resume::None);
        m.started(Vec::new(), EventId::new(4), &state(4, 0));
        m.lagged(false);
        assert_eq!(m.phase, Phase::Replay { conflate_upto: None, first_page: true });
        assert_eq!(m.cursor.last, EventId::new(4), "the replay starts after what was sent");
        assert_eq!(m.tally.catch_ups, 1);
        m.replayed(page(vec![own(5, "missed")], true));
        m.counted(&state(5, 1));
        assert_eq!(m.phase, Phase::Live);
    }

    #[test]
    fn a_lag_that_may_have_dropped_a_revocation_of_this_token_ends_the_stream() {
        let mut m = machine(Duration::from_secs(60));
        m.opened(Vec::new(), Resume::None);
        m.started(Vec::new(), EventId::new(1), &state(1, 0));
        frames(&mut m);
        m.lagged(true);
        assert!(m.ended());
        assert_eq!(frames(&mut m), vec![String::from_utf8(REVOKED_FAREWELL.to_vec()).unwrap()]);
    }

    #[test]
    fn the_heartbeat_pings_and_ends_the_stream_once_the_token_expired() {
        let mut m = machine(Duration::from_secs(60));
        m.heartbeat(Instant::now());
        assert!(!m.ended());
        assert_eq!(frames(&mut m).last().unwrap(), ": ping\n\n");
        m.heartbeat(Instant::now() + Duration::from_secs(61));
        assert!(m.ended());
        assert_eq!(frames(&mut m), vec![String::from_utf8(EXPIRED_FAREWELL.to_vec()).unwrap()]);
    }

    #[test]
    fn expiry_during_a_replay_ends_the_stream_at_the_next_check_without_losing_the_order() {
        let mut m = machine(Duration::from_millis(0));
        m.opened(Vec::new(), Resume::After(EventId::new(1)));
        m.resumed(Resumed::Long { first: page(Vec::new(), false) });
        m.replayed(page(vec![own(2, "a")], true));
        m.heartbeat(Instant::now());
        assert!(m.ended());
        let sent = frames(&mut m);
        assert!(sent[1].starts_with("id: 2\n"), "what was replayed is sent before the farewell");
        assert_eq!(sent.last().unwrap().as_bytes(), EXPIRED_FAREWELL);
    }

    #[test]
    fn a_revocation_signal_ends_the_stream_only_if_its_own_token_is_covered() {
        let mut m = machine(Duration::from_secs(60));
        m.opened(Vec::new(), Resume::None);
        m.started(Vec::new(), EventId::new(1), &state(1, 0));
        frames(&mut m);
        let signal = Arc::new(Event::revocation(Topic::user(&user())));
        m.delivered(&mut vec![signal.clone(), Arc::new(own(2, "a"))], || false);
        assert!(!m.ended());
        assert_eq!(frames(&mut m).len(), 1);
        m.delivered(&mut vec![signal, Arc::new(own(3, "b"))], || true);
        assert!(m.ended());
        assert_eq!(frames(&mut m), vec![String::from_utf8(REVOKED_FAREWELL.to_vec()).unwrap()], "nothing after the signal");
    }

    #[test]
    fn an_announcement_outside_the_tokens_audience_is_dropped_and_one_inside_adds_to_the_count() {
        let mut m = machine(Duration::from_secs(60));
        m.opened(Vec::new(), Resume::None);
        m.started(Vec::new(), EventId::new(1), &state(1, 2));
        frames(&mut m);
        let announcement = |id: i64, audience: serde_json::Value| {
            let data = serde_json::json!({
                "id": id, "user_id": null, "type": "news", "title": "t", "body": "", "data": null, "action_url": null,
                "group_key": null, "count": 1, "created_at": "2026-12-02T00:00:00.000Z", "updated_at": "2026-12-02T00:00:00.000Z",
                "expires_at": null, "read_at": null, "audience": audience,
            });
            Arc::new(Event::persisted(EventId::new(id), Topic::announcements(), events::NOTIFICATION, &data.to_string()))
        };
        m.delivered(&mut vec![announcement(2, serde_json::json!({"topic": "secret"}))], || false);
        assert!(frames(&mut m).is_empty(), "not this token's topic");
        m.delivered(&mut vec![announcement(3, serde_json::json!("all"))], || false);
        let sent = frames(&mut m);
        assert!(sent[0].starts_with("id: 3\nevent: notification\n"));
        assert!(sent[1].contains("\"count\":3"), "2 own + 1 announcement: {sent:?}");
        assert!(matches!(&m.announced.unread[..], [(3, None)]));
        // A shared count of the user's own gets the announcement added.
        let shared = Arc::new(Event::state(Topic::user(&user()), events::UNREAD_COUNT, "{\"count\":5}", Some(EventId::new(3))));
        m.delivered(&mut vec![shared], || false);
        assert!(frames(&mut m)[0].contains("\"count\":6"));
    }
}
