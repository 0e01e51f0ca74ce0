//! One user's SSE stream: from the resume point, through replay, to live.
//!
//! The order of operations is the correctness argument:
//!
//! 1. **Subscribe first.** The connection's mailbox joins the registry
//!    before anything is read, so every event committed from then on is
//!    queued for it.
//! 2. **Initial state.** With a resume point, every logged event of the
//!    user's topics after it, oldest first, in pages. Without one (or after
//!    `reset`), the newest unread notifications and the log head, read in
//!    one read-only transaction so they describe the same instant; a frame
//!    with only `id: <head>` then moves the client's resume point there.
//! 3. **`unread_count`**, with the log position it reflects.
//! 4. **Live.** Queued events at or below the last id sent were covered by
//!    step 2 and are skipped; the rest go out in order. Because ids grow in
//!    commit order (see `store::event_log`), nothing is lost between the
//!    replay and the live tail, and nothing is sent twice.
//!
//! A stream whose mailbox overflowed catches up from the log from its last
//! id, exactly like step 2 with a resume point, then carries on live.
//!
//! Conversations: the stream also listens to the topic of every conversation
//! its user is a member of, registered before the initial state is read. A
//! member receives a conversation's events only inside the windows of their
//! membership (`store::event_log::Audience`): replay reads the windows and
//! the events in one snapshot; live, the stream keeps the windows up to date
//! from the membership events on its own topic (which arrive in log order,
//! before any event of the conversation that follows them) and drops what
//! falls outside, so a member never receives an event from before joining or
//! after leaving.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::Stream;
use sea_orm::{AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, IsolationLevel, TransactionTrait};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Principal,
    domain::{EventId, Topic, UserId, events::{self, UnreadCount}, notification::Notification},
    hub::{Announced, Delivery, Event, Hub, Notice, Refusal, RouteChange, Subscription, event::{encode_frame, encode_position}},
    notifications::{UnreadState, announcements::{self, Viewer}, unread_state},
    presence::Presence,
    revocation::Revocations,
    store::{
        chat,
        event_log::{self, Audience, Window},
        notifications as rows,
    },
};

/// Tunables of every stream.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// How often an idle stream sends `: ping`, so proxies and clients see
    /// it alive and dead connections are noticed.
    pub heartbeat: Duration,
    /// The reconnection delay suggested to clients in the first frame.
    pub retry: Duration,
    /// How many unread notifications a stream without a resume point starts with.
    pub snapshot_limit: u64,
    /// Events read from the log per query during replay and catch-up.
    pub replay_page: u64,
    /// Streams that may read their starting state at once on this node.
    /// A surge beyond it waits (see `open_deadline`) instead of piling
    /// onto the database pool, where every open would time out together.
    pub max_opening: usize,
    /// How long an open waits for its turn before it is refused with 503
    /// and `Retry-After`, before any byte of the stream is sent.
    pub open_deadline: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            snapshot_limit: 100,
            replay_page: 1000,
            max_opening: 64,
            open_deadline: Duration::from_secs(2),
        }
    }
}

/// What a stream needs from the application.
#[derive(Clone)]
pub struct StreamContext {
    pub db: DatabaseConnection,
    pub hub: Arc<Hub>,
    pub presence: Arc<dyn Presence>,
    pub settings: Arc<StreamSettings>,
    /// Cancelled at shutdown: open streams end so the server can stop.
    pub shutdown: CancellationToken,
    /// Revocations in force: a stream whose token is revoked ends at once.
    pub revocations: Arc<Revocations>,
    /// Turns to read a starting state (see [`StreamSettings::max_opening`]).
    pub opening: Arc<tokio::sync::Semaphore>,
    /// Where deliveries of announcements are counted (their `sent`).
    pub seen: Arc<announcements::SeenTally>,
}

/// A turn to read a starting state, held from before the stream's 200
/// until its first `unread_count`.
pub type OpeningTurn = tokio::sync::OwnedSemaphorePermit;

/// Waits for a turn to open, at most the configured deadline: `None` means
/// the node is too busy opening streams and the client should retry.
pub async fn opening_turn(ctx: &StreamContext) -> Option<OpeningTurn> {
    tokio::time::timeout(ctx.settings.open_deadline, ctx.opening.clone().acquire_owned()).await.ok()?.ok()
}

/// Reads that a stream retries rather than end on: the pool had no free
/// connection in time, or a connection broke. A stream that answered 200
/// must not end because the database was briefly busy.
async fn patiently<T, F, Fut>(what: &str, mut read: F) -> Result<T, DbErr>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbErr>>,
{
    let mut wait = Duration::from_millis(50);
    for _ in 0..6 {
        match read().await {
            Err(e @ (DbErr::ConnectionAcquire(_) | DbErr::Conn(_))) => {
                tracing::debug!(error = %e, what, "stream read retried");
                let jitter = Duration::from_millis(rand::random::<u64>() % (wait.as_millis() as u64 + 1));
                tokio::time::sleep(wait + jitter).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
    read().await
}

/// How far this stream has come.
struct Cursor {
    /// The last event id sent (or reflected by the state sent).
    last: EventId,
    /// The log position of the last state report sent (`unread_count`).
    state_as_of: EventId,
}

/// The stream's view of announcements: which ones reach its user (judged
/// by the token it was opened with) and which of those are unread, so that
/// the unread count it sends includes them. A shared `unread_count` frame
/// carries the user's own count only; this stream adds its own part.
struct AnnouncementView {
    viewer: Viewer,
    /// Types the user's preferences hide, as of the last state read.
    hidden: Vec<String>,
    /// Unread announcements this stream's user sees, with their expiry.
    unread: Vec<(i64, Option<chrono::DateTime<chrono::Utc>>)>,
    /// The user's own unread count, as last sent.
    own: u64,
}

impl AnnouncementView {
    /// Takes a freshly read state.
    fn reset(&mut self, state: UnreadState) {
        self.own = state.own;
        self.hidden = state.hidden;
        self.unread = state.announced.iter().map(|a| (a.id, a.expires_at)).collect();
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

    /// The `unread_count` frame to send for a shared one reporting `own`:
    /// the shared frame itself unless announcements add to it.
    fn count_frame(&mut self, own: u64, shared: &Bytes) -> Bytes {
        self.own = own;
        if self.unread.is_empty() { shared.clone() } else { count_frame(self.count()) }
    }
}

/// The stream's knowledge of its user's membership windows.
struct Windows {
    user: Topic,
    windows: Vec<Window>,
    /// The broadcast topics the stream asked for.
    topics: Vec<Topic>,
}

impl Windows {
    fn audience(&self) -> Audience {
        Audience { user: self.user.clone(), windows: self.windows.clone(), topics: self.topics.clone() }
    }

    /// Applies a membership change carried by a logged event, in log order;
    /// applying one twice changes nothing.
    fn apply(&mut self, id: EventId, route: &RouteChange) {
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
    fn admits(&self, event: &Event) -> bool {
        if self.topics.contains(&event.topic) {
            return true;
        }
        self.windows.iter().filter(|w| w.topic == event.topic).any(|w| match event.id {
            Some(id) => id > w.from && w.until.is_none_or(|until| id <= until),
            None => w.until.is_none(),
        })
    }
}

/// Where a stream starts.
enum Start {
    /// Send the user's unread notifications, then go live.
    Fresh,
    /// Send every logged event after this id, then go live.
    After(EventId),
}

/// Opens the stream of `principal`. `resume_from` is the client's
/// `Last-Event-ID` (or `last_event_id` parameter), if any. Refused, before
/// anything is sent, when a stream limit is reached.
/// `topics` are the broadcast topics the stream adds, already authorized.
///
/// `floor` is the newest event id of the log read *before* this call: a
/// stream that starts fresh also sends the events of its conversations and
/// topics committed after it, which may already sit below the head it
/// reports (see `fresh_state`).
/// `viewer` decides which announcements reach the stream (every stream
/// listens to the announcements' topic and keeps what its token covers).
pub fn open(ctx: StreamContext, principal: Principal, viewer: Viewer, resume_from: Option<String>, mut topics: Vec<Topic>, floor: EventId, turn: OpeningTurn) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static, Refusal> {
    let user = principal.user.clone();
    topics.push(Topic::announcements());
    let subscription = ctx.hub.subscribe(Topic::user(&user), topics.clone())?;
    let online = ctx.presence.connected(&user);
    // A token's `exp` is the client's number: `remaining` is capped, and
    // were a clock still to overflow, the stream ends in a day instead of
    // panicking (the client reconnects and resumes).
    let now = Instant::now();
    let expires = now.checked_add(principal.remaining()).or_else(|| now.checked_add(Duration::from_secs(24 * 3600))).unwrap_or(now);
    Ok(frames(ctx, Token { user, issued_at: principal.issued_at, expires }, subscription, online, Opening { resume_from, topics, floor, turn, viewer }))
}

/// What a stream was asked for when it opened.
struct Opening {
    /// The client's `Last-Event-ID`, if any.
    resume_from: Option<String>,
    /// The broadcast topics it added.
    topics: Vec<Topic>,
    /// The log head read before it subscribed (see `fresh_state`).
    floor: EventId,
    /// Its turn to read its starting state, given back after the first count.
    turn: OpeningTurn,
    /// Who the stream's announcements are judged for.
    viewer: Viewer,
}

/// What a stream remembers of the token it was opened with.
struct Token {
    user: UserId,
    /// Its `iat`: a revocation of the user ends the stream if it covers this.
    issued_at: u64,
    /// When it expires: the stream ends then.
    expires: Instant,
}

/// The frames of an accepted stream, in the order the module documentation gives.
fn frames(
    ctx: StreamContext,
    token: Token,
    subscription: Subscription,
    online: Box<dyn Send>,
    opening: Opening,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    async_stream::stream! {
        let Opening { resume_from, topics, floor, turn, viewer } = opening;
        let mut announced = AnnouncementView { viewer, hidden: Vec::new(), unread: Vec::new(), own: 0 };
        let mut turn = Some(turn);
        let Token { user, issued_at, expires } = token;
        let _online = online;
        let settings = ctx.settings.clone();
        yield Ok(Bytes::from(format!("retry: {}\n\n", settings.retry.as_millis())));

        let mut windows = Windows { user: subscription.owner().clone(), windows: Vec::new(), topics };
        // One-shot steps are boxed: their state is freed once done, instead
        // of sizing the generator that every open stream keeps alive.
        match Box::pin(patiently("memberships", || chat::memberships_of(&ctx.db, &user))).await {
            Ok(memberships) => {
                for membership in memberships {
                    let topic = Topic::conversation(membership.conversation_id);
                    subscription.listen(&topic);
                    windows.windows.push(Window { topic, from: EventId::new(membership.joined_event_id), until: None });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "stream ended: could not read memberships");
                return;
            }
        }
        let mut cursor = Cursor { last: EventId::ZERO, state_as_of: EventId::ZERO };

        let start = match resume_from.as_deref() {
            None => Start::Fresh,
            Some(raw) => match Box::pin(patiently("resume point", || resume_point(&ctx.db, &user, &windows, raw))).await {
                Ok(Some(after)) => Start::After(after),
                Ok(None) => {
                    yield Ok(encode_frame(None, events::RESET, "{}"));
                    Start::Fresh
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stream ended: could not check its resume point");
                    return;
                }
            },
        };
        // Replay (on resume, and again whenever the mailbox overflowed) and
        // the unread count after it are one code path.
        let mut replay_from = None;
        let mut starting_count = None;
        let audience = windows.audience();
        match start {
            Start::After(after) => {
                cursor.last = after;
                replay_from = Some(after);
            }
            Start::Fresh => match Box::pin(patiently("initial state", || fresh_state(&ctx.db, &announced.viewer, &audience, settings.snapshot_limit, floor, settings.replay_page))).await {
                Ok((frames, head, state)) => {
                    for (id, frame) in frames {
                        cursor.last = id;
                        subscription.count_delivered(1);
                        yield Ok(frame);
                    }
                    if head > cursor.last {
                        cursor.last = head;
                        yield Ok(encode_position(head));
                    }
                    // The count read in the same snapshot, at the same position.
                    cursor.state_as_of = head;
                    for a in &state.announced {
                        ctx.seen.count(a.id);
                    }
                    announced.reset(state);
                    starting_count = Some(announced.count());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stream ended: initial state failed");
                    return;
                }
            },
        }

        drop(audience);
        let mut heartbeat = tokio::time::interval_at(Instant::now() + settings.heartbeat, settings.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let token_expiry = tokio::time::sleep_until(expires);
        tokio::pin!(token_expiry);
        let mut batch: Vec<Arc<Event>> = Vec::new();
        let mut report_unread = true;
        if let Some(count) = starting_count {
            report_unread = false;
            drop(turn.take());
            yield Ok(count_frame(count));
        }
        loop {
            if let Some(after) = replay_from.take() {
                for await page in Box::pin(replay(ctx.db.clone(), user.clone(), windows.user.clone(), windows.topics.clone(), after, settings.replay_page)) {
                    match page {
                        Ok(page) => {
                            windows.windows = page.windows;
                            for event in page.events {
                                cursor.last = event.id.unwrap_or(cursor.last);
                                if let Some(Notice::Announced(a)) = &event.notice {
                                    if !announced.shows(a) {
                                        continue;
                                    }
                                    ctx.seen.count(a.id);
                                }
                                subscription.count_replayed(1);
                                subscription.count_delivered(1);
                                yield Ok(event.frame);
                            }
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "stream ended during replay");
                            return;
                        }
                    }
                }
                report_unread = true;
            }
            if report_unread {
                report_unread = false;
                let topics = windows.audience().topics();
                match Box::pin(patiently("unread count", || unread_state(&ctx.db, &announced.viewer, &topics))).await {
                    Ok(state) => {
                        cursor.state_as_of = state.position;
                        announced.reset(state);
                        let frame = count_frame(announced.count());
                        // The stream has its starting state: the next may open.
                        drop(turn.take());
                        yield Ok(frame);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "stream ended: unread count failed");
                        return;
                    }
                }
            }
            let step = tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => Step::End(": server shutting down\n\n"),
                _ = &mut token_expiry => Step::End(": token expired, reconnect with a fresh token\n\n"),
                delivery = subscription.next(&mut batch) => Step::Deliver(delivery),
                _ = heartbeat.tick() => Step::Ping,
            };
            match step {
                Step::End(farewell) => {
                    yield Ok(Bytes::from_static(farewell.as_bytes()));
                    break;
                }
                Step::Ping => yield Ok(Bytes::from_static(b": ping\n\n")),
                Step::Deliver(Delivery::Events) => {
                    let mut delivered = 0;
                    let mut revoked = false;
                    for event in batch.drain(..) {
                        if event.revoked {
                            revoked |= ctx.revocations.is_revoked(&user, issued_at);
                            continue;
                        }
                        if revoked {
                            continue;
                        }
                        if let (Some(id), Some(route)) = (event.id, &event.route) {
                            windows.apply(id, route);
                            if !route.joined {
                                subscription.forget(&route.conversation);
                            }
                        }
                        if let Some(frame) = admit(&mut cursor, &windows, &mut announced, &user, &event) {
                            delivered += u64::from(event.id.is_some());
                            yield Ok(frame);
                            // A new announcement is one more unread: the
                            // count follows it, as it follows a notification.
                            if let Some(Notice::Announced(a)) = &event.notice {
                                ctx.seen.count(a.id);
                                if !announced.unread.iter().any(|(id, _)| *id == a.id) {
                                    announced.unread.push((a.id, a.expires_at));
                                    yield Ok(count_frame(announced.count()));
                                }
                            }
                        }
                    }
                    subscription.count_delivered(delivered);
                    if revoked {
                        yield Ok(Bytes::from_static(REVOKED_FAREWELL));
                        break;
                    }
                }
                Step::Deliver(Delivery::Lagged) => {
                    // The dropped events may have held a revocation signal.
                    if ctx.revocations.is_revoked(&user, issued_at) {
                        yield Ok(Bytes::from_static(REVOKED_FAREWELL));
                        break;
                    }
                    subscription.count_catch_up();
                    replay_from = Some(cursor.last);
                }
            }
        }
        drop(subscription);
    }
}

/// The last words of a stream whose token was revoked: a comment, so that
/// EventSource reconnects (and is then refused until it has a new token).
const REVOKED_FAREWELL: &[u8] = b": token revoked, reconnect with a fresh token\n\n";

enum Step {
    End(&'static str),
    Ping,
    Deliver(Delivery),
}

/// Decides whether a live event goes out: never to a user it excludes, a
/// conversation's only inside a membership window, logged events only past
/// the last id sent, state reports only when fresher than the last one sent.
///
/// Announcements go only where the token's audience and the user's
/// preferences let them; what the user read or deleted leaves the stream's
/// unread announcements; a shared count gets the stream's own part added.
fn admit(cursor: &mut Cursor, windows: &Windows, announced: &mut AnnouncementView, user: &UserId, event: &Event) -> Option<Bytes> {
    if event.exclude.as_ref() == Some(user) {
        return None;
    }
    if event.topic != windows.user && !windows.admits(event) {
        return None;
    }
    match &event.notice {
        Some(Notice::Announced(a)) if !announced.shows(a) => return None,
        Some(Notice::Settled(ids)) if event.id.is_some_and(|id| id > cursor.last) => announced.unread.retain(|(id, _)| !ids.contains(id)),
        _ => {}
    }
    match (event.id, event.as_of) {
        (Some(id), _) if id > cursor.last => {
            cursor.last = id;
            Some(event.frame.clone())
        }
        (Some(_), _) => None,
        (None, Some(as_of)) if as_of <= cursor.state_as_of => None,
        (None, as_of) => {
            if let Some(as_of) = as_of {
                cursor.state_as_of = as_of;
            }
            match event.notice {
                Some(Notice::Count(own)) => Some(announced.count_frame(own, &event.frame)),
                _ => Some(event.frame.clone()),
            }
        }
    }
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error(transparent)]
    Db(#[from] DbErr),
    /// Retention pruned events this replay had not read yet. The stream
    /// ends; the client reconnects with its last id and is told to `reset`.
    #[error("the history after the resume point was pruned during the replay")]
    HistoryGone,
}

/// One page of a replay, with the membership windows it was read under.
struct ReplayPage {
    events: Vec<Event>,
    windows: Vec<Window>,
}

/// Every logged event for `user` after `after`, oldest first, read a page at
/// a time so that a long catch-up holds one page in memory, not all. Each
/// page reads the membership windows and the events in one snapshot (a join
/// committed between the two reads could otherwise be half seen), and checks
/// the history floor: pruning that ran between pages would be a silent gap.
///
/// Broadcast topics' events are conflated by key up to the log head at the
/// start of the replay: what is newer arrives live anyway.
fn replay(db: DatabaseConnection, user: UserId, user_topic: Topic, topics: Vec<Topic>, after: EventId, page_size: u64) -> impl Stream<Item = Result<ReplayPage, ReplayError>> {
    async_stream::try_stream! {
        let mut after = after;
        let conflate_upto = if topics.iter().all(|t| t.name().is_none()) { None } else { Some(event_log::newest(&db).await?) };
        loop {
            let txn = patiently("replay", || snapshot(&db)).await?;
            let audience = audience_after(&txn, &user, &user_topic, &topics, after).await?;
            let events = event_log::read_audience_after(&txn, &audience, after, page_size, conflate_upto).await?;
            let gone = event_log::history_gone(&txn, &audience, after).await?;
            txn.commit().await?;
            if gone {
                Err(ReplayError::HistoryGone)?;
            }
            let complete = (events.len() as u64) < page_size;
            after = events.last().and_then(|e| e.id).unwrap_or(after);
            yield ReplayPage { events, windows: audience.windows };
            if complete {
                break;
            }
        }
    }
}

/// The audience of `user` for events after `after`, from the stored windows.
async fn audience_after(conn: &impl ConnectionTrait, user: &UserId, user_topic: &Topic, topics: &[Topic], after: EventId) -> Result<Audience, DbErr> {
    let windows = chat::periods_after(conn, user, after)
        .await?
        .into_iter()
        .map(|period| Window {
            topic: Topic::conversation(period.conversation_id),
            from: EventId::new(period.from_event_id),
            until: period.until_event_id.map(EventId::new),
        })
        .collect();
    Ok(Audience { user: user_topic.clone(), windows, topics: topics.to_vec() })
}

/// Checks a client's resume point. `None` means the stream must `reset`:
/// the id is not one we issued, is beyond anything in this log (another
/// database), or is older than the retained history.
async fn resume_point(db: &DatabaseConnection, user: &UserId, windows: &Windows, raw: &str) -> Result<Option<EventId>, DbErr> {
    let Some(after) = EventId::parse(raw) else {
        return Ok(None);
    };
    if after > event_log::newest(db).await? {
        return Ok(None);
    }
    let audience = audience_after(db, user, &windows.user, &windows.topics, after).await?;
    if event_log::history_gone(db, &audience, after).await? {
        return Ok(None);
    }
    Ok(Some(after))
}

/// The newest unread notifications as frames with their event ids, and
/// the events of the stream's conversations and topics committed after
/// `floor`, merged oldest first; and the log head of the audience; all from
/// one consistent snapshot.
///
/// Why the second part: the connection subscribed after `floor` was read,
/// so every event committed since may sit in its mailbox, and the stream
/// then skips live events at or below the head it reports. The user's own
/// events up to the head are reflected in the unread notifications; a
/// conversation's or topic's are not, so they are sent here, or they would
/// fall between the snapshot and the live tail.
///
/// Announcements the viewer sees and has not read are among the unread
/// notifications (by the id of the event that last carried each); the
/// state returned holds them apart from the user's own count.
async fn fresh_state(db: &DatabaseConnection, viewer: &Viewer, audience: &Audience, limit: u64, floor: EventId, page: u64) -> Result<(Vec<(EventId, Bytes)>, EventId, UnreadState), DbErr> {
    let user = viewer.user();
    let txn = snapshot(db).await?;
    let now = chrono::Utc::now();
    let unread = rows::newest_unread(&txn, user, now, limit).await?;
    let state = unread_state(&txn, viewer, &audience.topics()).await?;
    let head = state.position;
    let unread_announcements = announcements::unread_given(&txn, viewer, &state.hidden, now).await?;
    let mut shared = Vec::new();
    if !audience.windows.is_empty() || !audience.topics.is_empty() {
        let mut after = floor;
        while after < head {
            let events = event_log::read_audience_after(&txn, audience, after, page, None).await?;
            let Some(last) = events.last().and_then(|e| e.id) else { break };
            after = last;
            // The user's own events and announcements up to the head are in
            // the unread notifications already.
            shared.extend(events.into_iter().filter(|e| e.topic != audience.user && e.topic != Topic::announcements() && e.id.is_some_and(|id| id <= head)));
        }
    }
    txn.commit().await?;
    let mut notifications: Vec<(EventId, Notification)> = unread
        .into_iter()
        .map(|row| (EventId::new(row.event_id), Notification::from(row)))
        .chain(unread_announcements.iter().map(|seen| (EventId::new(seen.row.event_id), announcements::notification(&seen.row, None))))
        .collect();
    // The newest `limit` of both kinds, oldest first.
    notifications.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    notifications.truncate(limit as usize);
    let mut frames: Vec<(EventId, Bytes)> = notifications
        .into_iter()
        .map(|(id, notification)| {
            let data = serde_json::to_string(&notification).expect("notifications encode");
            (id, encode_frame(Some(id), events::NOTIFICATION, &data))
        })
        .collect();
    frames.extend(shared.into_iter().filter_map(|event| event.id.map(|id| (id, event.frame))));
    frames.sort_by_key(|(id, _)| *id);
    Ok((frames, head, state))
}

/// A read-only transaction that sees one instant of the database: in SQLite's
/// WAL mode any read transaction does; PostgreSQL needs REPEATABLE READ.
async fn snapshot(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    match db.get_database_backend() {
        DbBackend::Postgres => db.begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly)).await,
        _ => db.begin().await,
    }
}

/// The `unread_count` frame of `count`.
fn count_frame(count: u64) -> Bytes {
    let data = serde_json::to_string(&UnreadCount { count }).expect("counts encode");
    encode_frame(None, events::UNREAD_COUNT, &data)
}
