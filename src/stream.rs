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

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::Stream;
use sea_orm::{AccessMode, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, IsolationLevel, TransactionTrait};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::Principal,
    domain::{EventId, Topic, UserId, events::{self, UnreadCount}, notification::Notification},
    hub::{Delivery, Event, Hub, Refusal, Subscription, event::{encode_frame, encode_position}},
    notifications::unread_state,
    store::{event_log, notifications as rows},
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
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            snapshot_limit: 100,
            replay_page: 1000,
        }
    }
}

/// What a stream needs from the application.
#[derive(Clone)]
pub struct StreamContext {
    pub db: DatabaseConnection,
    pub hub: Arc<Hub>,
    pub settings: Arc<StreamSettings>,
    /// Cancelled at shutdown: open streams end so the server can stop.
    pub shutdown: CancellationToken,
}

/// How far this stream has come.
struct Cursor {
    /// The last event id sent (or reflected by the state sent).
    last: EventId,
    /// The log position of the last state report sent (`unread_count`).
    state_as_of: EventId,
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
pub fn open(ctx: StreamContext, principal: Principal, resume_from: Option<String>) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static, Refusal> {
    let user = principal.user.clone();
    let subscription = ctx.hub.subscribe(Topic::user(&user), Vec::new())?;
    let expires = Instant::now() + principal.remaining();
    Ok(frames(ctx, user, subscription, resume_from, expires))
}

/// The frames of an accepted stream, in the order the module documentation gives.
fn frames(ctx: StreamContext, user: UserId, subscription: Subscription, resume_from: Option<String>, expires: Instant) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {

    async_stream::stream! {
        let settings = ctx.settings.clone();
        yield Ok(Bytes::from(format!("retry: {}\n\n", settings.retry.as_millis())));
        let topics = subscription.topics().to_vec();
        let mut cursor = Cursor { last: EventId::ZERO, state_as_of: EventId::ZERO };

        let start = match resume_from.as_deref() {
            None => Start::Fresh,
            Some(raw) => match resume_point(&ctx.db, &topics, raw).await {
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
        match start {
            Start::After(after) => {
                cursor.last = after;
                for await event in replay(ctx.db.clone(), topics.clone(), after, settings.replay_page) {
                    match event {
                        Ok(event) => {
                            cursor.last = event.id.unwrap_or(cursor.last);
                            subscription.count_replayed(1);
                            subscription.count_delivered(1);
                            yield Ok(event.frame);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "stream ended: replay failed");
                            return;
                        }
                    }
                }
            }
            Start::Fresh => match fresh_state(&ctx.db, &user, &topics, settings.snapshot_limit).await {
                Ok((frames, head)) => {
                    for (id, frame) in frames {
                        cursor.last = id;
                        subscription.count_delivered(1);
                        yield Ok(frame);
                    }
                    if head > cursor.last {
                        cursor.last = head;
                        yield Ok(encode_position(head));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stream ended: initial state failed");
                    return;
                }
            },
        }
        match unread_frame(&ctx.db, &user, &topics).await {
            Ok((position, frame)) => {
                cursor.state_as_of = position;
                yield Ok(frame);
            }
            Err(e) => {
                tracing::warn!(error = %e, "stream ended: unread count failed");
                return;
            }
        }

        let mut heartbeat = tokio::time::interval_at(Instant::now() + settings.heartbeat, settings.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let token_expiry = tokio::time::sleep_until(expires);
        tokio::pin!(token_expiry);
        let mut batch: Vec<Arc<Event>> = Vec::new();
        loop {
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
                    for event in batch.drain(..) {
                        if let Some(frame) = admit(&mut cursor, &event) {
                            delivered += u64::from(event.id.is_some());
                            yield Ok(frame);
                        }
                    }
                    subscription.count_delivered(delivered);
                }
                Step::Deliver(Delivery::Lagged) => {
                    subscription.count_catch_up();
                    for await event in replay(ctx.db.clone(), topics.clone(), cursor.last, settings.replay_page) {
                        match event {
                            Ok(event) => {
                                cursor.last = event.id.unwrap_or(cursor.last);
                                subscription.count_replayed(1);
                                subscription.count_delivered(1);
                                yield Ok(event.frame);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "stream ended: catch-up failed");
                                return;
                            }
                        }
                    }
                    match unread_frame(&ctx.db, &user, &topics).await {
                        Ok((position, frame)) => {
                            cursor.state_as_of = position;
                            yield Ok(frame);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "stream ended: unread count failed");
                            return;
                        }
                    }
                }
            }
        }
        drop(subscription);
    }
}

enum Step {
    End(&'static str),
    Ping,
    Deliver(Delivery),
}

/// Decides whether a live event goes out: logged events only past the last
/// id sent, state reports only when fresher than the last one sent.
fn admit(cursor: &mut Cursor, event: &Event) -> Option<Bytes> {
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
            Some(event.frame.clone())
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

/// Every logged event of `topics` after `after`, oldest first, read a page
/// at a time so that a long catch-up holds one page in memory, not all.
/// After each page the history floor is checked again: pruning that ran
/// between the pages would otherwise be a silent gap.
fn replay(db: DatabaseConnection, topics: Vec<Topic>, after: EventId, page_size: u64) -> impl Stream<Item = Result<Event, ReplayError>> {
    async_stream::try_stream! {
        let mut after = after;
        loop {
            let page = event_log::read_after(&db, &topics, after, page_size).await?;
            if event_log::floor(&db, &topics).await? > after {
                Err(ReplayError::HistoryGone)?;
            }
            let complete = (page.len() as u64) < page_size;
            for event in page {
                after = event.id.unwrap_or(after);
                yield event;
            }
            if complete {
                break;
            }
        }
    }
}

/// Checks a client's resume point. `None` means the stream must `reset`:
/// the id is not one we issued, is beyond anything in this log (another
/// database), or is older than the retained history of these topics.
async fn resume_point(db: &DatabaseConnection, topics: &[Topic], raw: &str) -> Result<Option<EventId>, DbErr> {
    let Some(after) = EventId::parse(raw) else {
        return Ok(None);
    };
    if after > event_log::newest(db).await? {
        return Ok(None);
    }
    if after < event_log::floor(db, topics).await? {
        return Ok(None);
    }
    Ok(Some(after))
}

/// The newest unread notifications as frames with their event ids, oldest
/// first, and the log head of `topics`, from one consistent snapshot.
async fn fresh_state(db: &DatabaseConnection, user: &UserId, topics: &[Topic], limit: u64) -> Result<(Vec<(EventId, Bytes)>, EventId), DbErr> {
    let txn = snapshot(db).await?;
    let unread = rows::newest_unread(&txn, user, chrono::Utc::now(), limit).await?;
    let head = event_log::head(&txn, topics).await?;
    txn.commit().await?;
    let frames = unread
        .into_iter()
        .map(|row| {
            let id = EventId::new(row.event_id);
            let data = serde_json::to_string(&Notification::from(row)).expect("notifications encode");
            (id, encode_frame(Some(id), events::NOTIFICATION, &data))
        })
        .collect();
    Ok((frames, head))
}

/// A read-only transaction that sees one instant of the database: in SQLite's
/// WAL mode any read transaction does; PostgreSQL needs REPEATABLE READ.
async fn snapshot(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    match db.get_database_backend() {
        DbBackend::Postgres => db.begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly)).await,
        _ => db.begin().await,
    }
}

async fn unread_frame(db: &DatabaseConnection, user: &UserId, topics: &[Topic]) -> Result<(EventId, Bytes), DbErr> {
    let (position, count) = unread_state(db, user, topics).await?;
    let data = serde_json::to_string(&UnreadCount { count }).expect("counts encode");
    Ok((position, encode_frame(None, events::UNREAD_COUNT, &data)))
}
