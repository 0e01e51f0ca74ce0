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
//! its user is a member of, registered before the initial state is read.
//! Most users are in none, so a stream without a resume point first reads
//! its initial state as if its user were in none, with a count of the
//! user's memberships in the same snapshot; only if that count is not zero
//! does it read the memberships, listen, and read the initial state again
//! (`reads::fresh_states`). A member receives a conversation's events only inside the windows of their
//! membership (`store::event_log::Audience`): replay reads the windows and
//! the events in one snapshot; live, the stream keeps the windows up to date
//! from the membership events on its own topic (which arrive in log order,
//! before any event of the conversation that follows them) and drops what
//! falls outside, so a member never receives an event from before joining or
//! after leaving.
//!
//! The parts: [`machine`] holds the states and transitions as plain
//! functions (unit-tested there); `reads` the database reads the states
//! ask for; `body` the response body, a hand-written `Stream` that feeds
//! reads and mailbox deliveries to the machine. Heartbeats come from the
//! node's one ticker ([`Hub::spawn_heartbeat`]), not a timer per stream.

mod body;
pub mod machine;
mod reads;

use std::{sync::Arc, time::Duration};

use sea_orm::{DatabaseConnection, DbErr};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Principal,
    domain::{EventId, Topic},
    hub::{Hub, Refusal},
    notifications::announcements::{self, Viewer},
    presence::Presence,
    revocation::Revocations,
};
pub use body::SseStream;
pub use reads::StartReads;
use machine::{Machine, Windows};

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
    /// Streams opening at the same time whose starting state is read in
    /// one batch, at most (see `crate::coalesce`); 1 reads each alone.
    pub open_batch: usize,
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
            max_opening: 256,
            open_batch: 16,
            open_deadline: Duration::from_secs(10),
        }
    }
}

/// What a stream needs from the application: one for the node, shared by
/// every stream (a stream holds a pointer to it, not copies of its parts).
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
    /// The reads of opening streams, coalesced across streams.
    pub starts: Arc<StartReads>,
}

/// A turn to read a starting state, held from before the stream's 200
/// until its first `unread_count`.
pub type OpeningTurn = tokio::sync::OwnedSemaphorePermit;

/// Waits for a turn to open, at most the configured deadline: `None` means
/// the node is too busy opening streams and the client should retry.
pub async fn opening_turn(ctx: &StreamContext) -> Option<OpeningTurn> {
    tokio::time::timeout(ctx.settings.open_deadline, ctx.opening.clone().acquire_owned()).await.ok()?.ok()
}

/// An error a stream's read may retry: the pool had no free connection in
/// time, or a connection broke.
trait Transient: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl Transient for DbErr {
    fn is_transient(&self) -> bool {
        matches!(self, DbErr::ConnectionAcquire(_) | DbErr::Conn(_))
    }
}

/// Reads that a stream retries rather than end on (see [`Transient`]), with
/// backoff and jitter. A stream that answered 200 must not end because the
/// database was briefly busy.
async fn patiently<T, E, F, Fut>(what: &str, mut read: F) -> Result<T, E>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut wait = Duration::from_millis(50);
    for _ in 0..6 {
        match read().await {
            Err(e) if e.is_transient() => {
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
pub fn open(ctx: Arc<StreamContext>, principal: Principal, viewer: Viewer, resume_from: Option<String>, mut topics: Vec<Topic>, floor: EventId, turn: OpeningTurn) -> Result<SseStream, Refusal> {
    let user = principal.user.clone();
    topics.push(Topic::announcements());
    let subscription = ctx.hub.subscribe(Topic::user(&user), topics.clone())?;
    let online = ctx.presence.connected(&user);
    // A token's `exp` is the client's number: `remaining` is capped, and
    // were a clock still to overflow, the stream ends in a day instead of
    // panicking (the client reconnects and resumes).
    let now = Instant::now();
    let expires = now.checked_add(principal.remaining()).or_else(|| now.checked_add(Duration::from_secs(24 * 3600))).unwrap_or(now);
    let windows = Windows { user: subscription.owner().clone(), windows: Vec::new(), topics };
    let machine = Machine::new(user.clone(), windows, viewer, expires, ctx.settings.retry.as_millis(), ctx.seen.clone());
    Ok(SseStream::new(ctx, machine, subscription, online, turn, resume_from, floor, user, principal.issued_at))
}

