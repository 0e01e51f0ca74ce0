//! What a stream reads from the database, one function per state that
//! reads: the opening (memberships and the resume point), a fresh start, a
//! page of replay, and the unread state. Each reads what describes one
//! instant in one snapshot.

use bytes::Bytes;
use sea_orm::{AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, IsolationLevel, TransactionTrait};

use super::machine::{Page, Resume, Resumed};
use crate::{
    coalesce::Coalescer,
    domain::{EventId, Topic, UserId, events, notification::Notification},
    hub::event::encode_frame,
    notifications::{UnreadState, announcements::{self, Viewer}, unread_state},
    store::{
        chat,
        event_log::{self, Audience, Window},
        unread::{self, StreamState},
        notifications as rows,
    },
};
use entity::notification;

/// The user's membership windows, read together with other streams
/// opening now (see [`StartReads`]), and what the client's resume point
/// (`raw`, if any) claims: an id of ours, or something to `reset` from.
/// Whether the log still covers it is the resuming read's to say.
pub async fn opening(starts: &StartReads, user: &UserId, raw: Option<&str>) -> Result<(Vec<Window>, Resume), DbErr> {
    let windows = starts.memberships(user.clone()).await?;
    let resume = match raw {
        None => Resume::None,
        Some(raw) => EventId::parse(raw).map_or(Resume::Reset, Resume::After),
    };
    Ok((windows, resume))
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Db(#[from] DbErr),
    /// Retention pruned events this replay had not read yet. The stream
    /// ends; the client reconnects with its last id and is told to `reset`.
    #[error("the history after the resume point was pruned during the replay")]
    HistoryGone,
}

/// One page of the log for `user` after `after`, oldest first, so that a
/// long catch-up holds one page in memory, not all. The page reads the
/// membership windows and the events in one snapshot (a join committed
/// between the two reads could otherwise be half seen), and checks the
/// history floor: pruning that ran between pages would be a silent gap.
///
/// Broadcast topics' events are conflated by key up to the log head read
/// with the first page (`conflate_upto`): what is newer arrives live anyway.
pub async fn replay_page(db: &DatabaseConnection, user: &UserId, user_topic: &Topic, topics: &[Topic], after: EventId, page_size: u64, conflate_upto: Option<EventId>, first_page: bool) -> Result<Page, ReplayError> {
    let conflate_upto = match conflate_upto {
        Some(upto) => Some(upto),
        None if first_page && topics.iter().any(|t| t.name().is_some()) => Some(event_log::newest(db).await?),
        None => None,
    };
    let txn = snapshot(db).await?;
    let audience = audience_after(&txn, user, user_topic, topics, after).await?;
    let events = event_log::read_audience_after(&txn, &audience, after, page_size, conflate_upto).await?;
    let gone = event_log::history_gone(&txn, &audience, after).await?;
    txn.commit().await?;
    if gone {
        return Err(ReplayError::HistoryGone);
    }
    let complete = (events.len() as u64) < page_size;
    Ok(Page { events, windows: audience.windows, complete, conflate_upto })
}

/// The audience of `user` for events after `after`, from the stored windows.
pub async fn audience_after(conn: &impl ConnectionTrait, user: &UserId, user_topic: &Topic, topics: &[Topic], after: EventId) -> Result<Audience, DbErr> {
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

/// A fresh start as read: frames (with the announcement each carries, if
/// any), the head they reflect, the state at that head.
pub type FreshStart = (Vec<(EventId, Bytes, Option<i64>)>, EventId, UnreadState);

/// What one resuming stream asks of [`resumes`].
pub struct ResumeRequest {
    /// Whose state, and which announcements they see.
    pub viewer: Viewer,
    /// The user's own topic.
    pub user_topic: Topic,
    /// The stream's broadcast topics (the announcements' among them).
    pub topics: Vec<Topic>,
    /// The client's resume point.
    pub after: EventId,
}

/// What one stream asks of [`fresh_states`].
#[derive(Clone)]
pub struct FreshRequest {
    /// Whose state, and which announcements they see.
    pub viewer: Viewer,
    /// What the stream listens to: the log head is taken over its topics.
    pub audience: Audience,
    /// The log head read before the stream subscribed.
    pub floor: EventId,
    /// Asked before the stream's memberships were read: the start is only
    /// good if the user has none (see [`fresh_states`]).
    pub unless_member: bool,
}

/// The reads of stream opens, each coalesced across the streams opening at
/// the same time (see `crate::coalesce`): a surge of opens costs a
/// statement per batch, not per stream.
pub struct StartReads {
    memberships: Coalescer<UserId, Result<Vec<Window>, DbErr>>,
    fresh: Coalescer<FreshRequest, Result<Option<FreshStart>, DbErr>>,
    resumes: Coalescer<ResumeRequest, Result<Resumed, DbErr>>,
}

/// Batches of each kind that may run at once: enough to keep a few pooled
/// connections busy while the next batch gathers.
const BATCHES_IN_FLIGHT: usize = 2;

impl StartReads {
    /// Starts the batchers on the current runtime. A batch serves at most
    /// `max_batch` streams: bigger batches save a little more CPU, but
    /// every pooled connection keeps each statement shape it ran prepared
    /// (see `coalesce::padded_len`).
    pub fn spawn(db: DatabaseConnection, max_batch: usize, snapshot_limit: u64, replay_page: u64) -> Self {
        let for_members = db.clone();
        let memberships = Coalescer::spawn(max_batch, BATCHES_IN_FLIGHT, move |users: Vec<UserId>| {
            let db = for_members.clone();
            async move { memberships_of(&db, &users).await }
        });
        let for_fresh = db.clone();
        let fresh = Coalescer::spawn(max_batch, BATCHES_IN_FLIGHT, move |requests: Vec<FreshRequest>| {
            let db = for_fresh.clone();
            async move { fresh_states(&db, &requests, snapshot_limit, replay_page).await }
        });
        let resumes = Coalescer::spawn(max_batch, BATCHES_IN_FLIGHT, move |requests: Vec<ResumeRequest>| {
            let db = db.clone();
            async move { self::resumes(&db, &requests, replay_page).await }
        });
        StartReads { memberships, fresh, resumes }
    }

    /// The membership windows of `user` (an opening without a resume point).
    pub async fn memberships(&self, user: UserId) -> Result<Vec<Window>, DbErr> {
        self.memberships.call(user).await.unwrap_or_else(|| Err(batch_lost()))
    }

    /// A fresh start (see [`fresh_states`]), once the stream listens to its
    /// conversations.
    pub async fn fresh(&self, request: FreshRequest) -> Result<FreshStart, DbErr> {
        debug_assert!(!request.unless_member);
        self.fresh.call(request).await.unwrap_or_else(|| Err(batch_lost()))?.ok_or_else(batch_lost)
    }

    /// A fresh start read before the stream's memberships, `None` if the
    /// user has any: the stream must then read them and listen first.
    pub async fn fresh_unless_member(&self, request: FreshRequest) -> Result<Option<FreshStart>, DbErr> {
        debug_assert!(request.unless_member);
        self.fresh.call(request).await.unwrap_or_else(|| Err(batch_lost()))
    }

    /// A resume (see [`resumes`]).
    pub async fn resume(&self, request: ResumeRequest) -> Result<Resumed, DbErr> {
        self.resumes.call(request).await.unwrap_or_else(|| Err(batch_lost()))
    }
}

/// A batch that did not answer: retried like a broken connection.
fn batch_lost() -> DbErr {
    DbErr::Conn(sea_orm::RuntimeErr::Internal("a coalesced read did not answer".into()))
}

/// One failure of a batch, for each of its callers; whether it is worth a
/// retry is kept (see `stream::Transient`).
fn shared_error(e: &DbErr) -> DbErr {
    match e {
        DbErr::ConnectionAcquire(acquire) => DbErr::ConnectionAcquire(*acquire),
        DbErr::Conn(runtime) => DbErr::Conn(runtime.clone()),
        other => DbErr::Custom(other.to_string()),
    }
}

/// The membership windows of each of `users`, in one statement.
async fn memberships_of(db: &DatabaseConnection, users: &[UserId]) -> Vec<Result<Vec<Window>, DbErr>> {
    let mut names: Vec<&str> = users.iter().map(UserId::as_str).collect();
    // Padded with a repeated user: a few statement shapes (`padded_len`).
    if let Some(last) = names.last().copied() {
        names.resize(crate::coalesce::padded_len(names.len()), last);
    }
    match chat::memberships_of_many(db, &names).await {
        Err(e) => users.iter().map(|_| Err(shared_error(&e))).collect(),
        Ok(found) => users
            .iter()
            .map(|user| {
                Ok(found
                    .get(user.as_str())
                    .into_iter()
                    .flatten()
                    .map(|membership| Window { topic: Topic::conversation(membership.conversation_id), from: EventId::new(membership.joined_event_id), until: None })
                    .collect())
            })
            .collect(),
    }
}

/// For each resuming stream, from one snapshot shared by the batch: the
/// verdict on its resume point (beyond the log's newest id, or below a
/// history floor of its audience: reset), what it missed (as a replay page
/// reads it, see [`replay_page`]) and its unread state at the same instant.
///
/// Why together: a reconnect storm is a surge of exactly this read. Alone,
/// a resume cost about ten statements (the check, a replay page in a
/// transaction, then the count), each a round trip to a pooled connection;
/// a batch costs seven, whatever its size: the log's newest id, the
/// membership periods, the history floors, the events of every topic of the
/// batch after the oldest resume point, one for the unread states (see
/// `unread::states_of`), and the transaction's `BEGIN` and `COMMIT`.
///
/// The events are read once for the whole batch, at most `page` of them
/// plus one. More means some stream missed more than a read should hold:
/// what was read is each stream's first page, and the rest is replayed page
/// by page ([`Resumed::Long`]).
pub async fn resumes(db: &DatabaseConnection, requests: &[ResumeRequest], page: u64) -> Vec<Result<Resumed, DbErr>> {
    let together = async {
        let txn = snapshot(db).await?;
        let resumed = resumes_in(&txn, requests, page).await?;
        txn.commit().await?;
        Ok::<_, DbErr>(resumed)
    };
    match together.await {
        Ok(resumed) => resumed.into_iter().map(Ok).collect(),
        Err(e) => requests.iter().map(|_| Err(shared_error(&e))).collect(),
    }
}

/// [`resumes`] inside its snapshot.
async fn resumes_in(txn: &DatabaseTransaction, requests: &[ResumeRequest], page: u64) -> Result<Vec<Resumed>, DbErr> {
    let newest = event_log::newest(txn).await?;
    // A point beyond the newest id comes from another database.
    let Some(lowest) = requests.iter().map(|request| request.after).filter(|after| *after <= newest).min() else {
        return Ok(requests.iter().map(|_| Resumed::Reset).collect());
    };
    let users = crate::coalesce::padded(requests.iter().map(|request| request.viewer.user().as_str()).collect());
    let periods = chat::periods_after_of_many(txn, &users, lowest).await?;
    let audiences: Vec<Audience> = requests
        .iter()
        .map(|request| {
            let windows = periods
                .get(request.viewer.user().as_str())
                .into_iter()
                .flatten()
                .filter(|period| period.until_event_id.is_none_or(|until| until > request.after.get()))
                .map(|period| Window {
                    topic: Topic::conversation(period.conversation_id),
                    from: EventId::new(period.from_event_id),
                    until: period.until_event_id.map(EventId::new),
                })
                .collect();
            Audience { user: request.user_topic.clone(), windows, topics: request.topics.clone() }
        })
        .collect();
    let topics: Vec<Vec<Topic>> = audiences.iter().map(Audience::topics).collect();
    let names = crate::coalesce::padded(topics.iter().flatten().map(Topic::as_str).collect());
    let floors = event_log::floors(txn, &names).await?;
    let kept: Vec<bool> = requests.iter().zip(&audiences).map(|(request, audience)| request.after <= newest && !audience.gone_below(&floors, request.after)).collect();
    let Some(lowest) = requests.iter().zip(&kept).filter(|(_, kept)| **kept).map(|(request, _)| request.after).min() else {
        return Ok(requests.iter().map(|_| Resumed::Reset).collect());
    };
    let slice = event_log::slice_after(txn, &names, lowest, page + 1).await?;
    if slice.len() as u64 > page {
        // Cut short: complete only up to its last row. That is each
        // stream's first page, except where keyed events are conflated,
        // which needs every event up to the head (the replay does that).
        return Ok(requests
            .iter()
            .zip(audiences)
            .zip(kept)
            .map(|((request, audience), kept)| {
                if !kept {
                    return Resumed::Reset;
                }
                let conflating = request.topics.iter().any(|topic| topic.name().is_some());
                let events = if conflating { Vec::new() } else { slice.replay_for(&audience, request.after, false) };
                Resumed::Long { first: Page { events, windows: audience.windows, complete: false, conflate_upto: conflating.then_some(newest) } }
            })
            .collect());
    }
    let now = chrono::Utc::now();
    let topic_names: Vec<Vec<&str>> = topics.iter().map(|topics| topics.iter().map(Topic::as_str).collect()).collect();
    let parts: Vec<unread::FreshPart<'_>> = requests.iter().zip(&topic_names).zip(&kept).filter(|(_, kept)| **kept).map(|((request, names), _)| unread::FreshPart { user: request.viewer.user(), topics: names }).collect();
    let mut states = unread::states_of(txn, &parts, now).await?.into_iter();
    let mut resumed = Vec::with_capacity(requests.len());
    for (((request, audience), topics), kept) in requests.iter().zip(audiences).zip(&topics).zip(kept) {
        if !kept {
            resumed.push(Resumed::Reset);
            continue;
        }
        let first = states.next().expect("a state per stream kept");
        let state = if first.live_announcements == 0 && first.hiding_preferences == 0 {
            UnreadState { position: EventId::new(first.head), own: unread::visible(first.stored, first.expired), announced: Vec::new(), hidden: Vec::new() }
        } else {
            // Announcements or hidden types: their reads, in the same snapshot.
            unread_state(txn, &request.viewer, topics).await?
        };
        // Keyed events of broadcast topics are conflated up to the newest
        // id, as the first page of a replay does.
        let conflating = request.topics.iter().any(|topic| topic.name().is_some());
        let events = slice.replay_for(&audience, request.after, conflating);
        let page = Page { events, windows: audience.windows, complete: true, conflate_upto: conflating.then_some(newest) };
        resumed.push(Resumed::Caught { page, state });
    }
    Ok(resumed)
}

/// For each request: the newest unread notifications as frames with their
/// event ids, and the events of the stream's conversations and topics
/// committed after its `floor`, merged oldest first; and the log head of its
/// audience; all from one consistent snapshot.
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
///
/// The common case is one statement for the whole batch, whatever its size
/// (see [`first_reads`]).
///
/// A request `unless_member` comes from a stream that has not read its
/// memberships, so it listens to no conversation yet. Its start is good if
/// the same snapshot says its user is a member of none: then it is exactly
/// the start it would have had after reading them (none) and listening (to
/// nothing), one statement and a hand-off cheaper; a conversation joined
/// after the snapshot is announced on the user's own topic, to which the
/// stream listens already. Otherwise its answer is `None`: events of its
/// conversations committed before it listens to them would be neither in
/// this start nor in its mailbox, so it reads its memberships, listens, and
/// asks again.
pub async fn fresh_states(db: &DatabaseConnection, requests: &[FreshRequest], limit: u64, page: u64) -> Vec<Result<Option<FreshStart>, DbErr>> {
    let now = chrono::Utc::now();
    let topics: Vec<Vec<Topic>> = requests.iter().map(|request| request.audience.topics()).collect();
    let names: Vec<Vec<&str>> = topics.iter().map(|topics| topics.iter().map(Topic::as_str).collect()).collect();
    let parts: Vec<unread::FreshPart<'_>> = requests.iter().zip(&names).map(|(request, names)| unread::FreshPart { user: request.viewer.user(), topics: names }).collect();
    let firsts: Vec<Result<(StreamState, Vec<notification::Model>), DbErr>> = match first_reads(db, &parts, now, limit).await {
        Ok(firsts) => firsts.into_iter().map(Ok).collect(),
        Err(e) => parts.iter().map(|_| Err(shared_error(&e))).collect(),
    };
    let mut starts = Vec::with_capacity(requests.len());
    for ((request, first), topics) in requests.iter().zip(firsts).zip(&topics) {
        let start = match first {
            Err(e) => Err(e),
            Ok((first, _)) if request.unless_member && first.memberships > 0 => Ok(None),
            Ok((first, unread)) => finish_fresh(db, request, topics, first, unread, now, limit, page).await.map(Some),
        };
        starts.push(start);
    }
    starts
}

/// The state of each part and its page of unread notifications, as of one
/// instant. The counters say who has unread notifications: a batch where
/// no one has needs no pages, and the one statement of its states is its
/// snapshot. Otherwise the states and the pages are read together in a
/// read-only transaction (four round trips: the pages must agree with the
/// counts and heads).
async fn first_reads(db: &DatabaseConnection, parts: &[unread::FreshPart<'_>], now: chrono::DateTime<chrono::Utc>, limit: u64) -> Result<Vec<(StreamState, Vec<notification::Model>)>, DbErr> {
    let states = unread::states_of(db, parts, now).await?;
    if states.iter().all(|state| state.stored == 0) {
        return Ok(states.into_iter().map(|state| (state, Vec::new())).collect());
    }
    let users: Vec<&UserId> = parts.iter().map(|part| part.user).collect();
    let txn = snapshot(db).await?;
    let states = unread::states_of(&txn, parts, now).await?;
    let pages = unread::newest_unread_of(&txn, &users, now, limit).await?;
    txn.commit().await?;
    Ok(parts
        .iter()
        .zip(states)
        .map(|(part, state)| {
            // A user with two streams in the batch gets the page twice.
            let page = pages.get(part.user.as_str()).cloned().unwrap_or_default();
            (state, page)
        })
        .collect())
}

/// The rest of one fresh start after the common statement: nothing more
/// unless an announcement is live or a preference hides a type, then the
/// shared events up to the head, and the frames.
#[allow(clippy::too_many_arguments)]
async fn finish_fresh(db: &DatabaseConnection, request: &FreshRequest, topics: &[Topic], first: StreamState, unread: Vec<notification::Model>, now: chrono::DateTime<chrono::Utc>, limit: u64, page: u64) -> Result<FreshStart, DbErr> {
    let FreshRequest { viewer, audience, floor, .. } = request;
    let user = viewer.user();
    let (unread, state, shared) = if first.live_announcements == 0 && first.hiding_preferences == 0 {
        // No announcement is live and no preference hides a type: the state
        // needs nothing more. The shared events up to the head are read
        // after the statement, outside it, and are still exactly what it
        // saw: every id up to the head is committed and stays as it is
        // (ids are given in commit order, see `store::event_log`).
        let state = UnreadState { position: EventId::new(first.head), own: unread::visible(first.stored, first.expired), announced: Vec::new(), hidden: Vec::new() };
        let shared = shared_since(db, audience, *floor, state.position, page).await?;
        (unread, state, shared)
    } else {
        // Announcements or hidden types: their reads and the rest share one
        // snapshot, so that the count and the frames agree.
        let txn = snapshot(db).await?;
        let unread = rows::newest_unread(&txn, user, now, limit).await?;
        let state = unread_state(&txn, viewer, topics).await?;
        let shared = shared_since(&txn, audience, *floor, state.position, page).await?;
        txn.commit().await?;
        (unread, state, shared)
    };
    let mut notifications: Vec<(EventId, Notification)> = unread
        .into_iter()
        .map(|row| (EventId::new(row.event_id), Notification::from(row)))
        .chain(state.announced.iter().map(|seen| (EventId::new(seen.row.event_id), announcements::notification(&seen.row, None))))
        .collect();
    // Which of them are announcements: their deliveries are counted.
    // The newest `limit` of both kinds, oldest first.
    notifications.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    notifications.truncate(limit as usize);
    let mut frames: Vec<(EventId, Bytes, Option<i64>)> = notifications
        .into_iter()
        .map(|(id, notification)| {
            let data = serde_json::to_string(&notification).expect("notifications encode");
            let announcement = notification.user_id.is_none().then_some(notification.id);
            (id, encode_frame(Some(id), events::NOTIFICATION, &data), announcement)
        })
        .collect();
    frames.extend(shared.into_iter().filter_map(|event| event.id.map(|id| (id, event.frame, None))));
    frames.sort_by_key(|(id, _, _)| *id);
    Ok((frames, state.position, state))
}

/// The events of the stream's conversations and topics in `(floor, head]`
/// (see [`fresh_state`] for why), oldest first. The user's own events and
/// announcements up to the head are in the unread notifications already.
async fn shared_since(conn: &impl ConnectionTrait, audience: &Audience, floor: EventId, head: EventId, page: u64) -> Result<Vec<crate::hub::Event>, DbErr> {
    let mut shared = Vec::new();
    if audience.windows.is_empty() && audience.topics.is_empty() {
        return Ok(shared);
    }
    let mut after = floor;
    while after < head {
        let events = event_log::read_audience_after(conn, audience, after, page, None).await?;
        let Some(last) = events.last().and_then(|e| e.id) else { break };
        after = last;
        shared.extend(events.into_iter().filter(|e| e.topic != audience.user && e.topic != Topic::announcements() && e.id.is_some_and(|id| id <= head)));
    }
    Ok(shared)
}

/// A read-only transaction that sees one instant of the database: in SQLite's
/// WAL mode any read transaction does; PostgreSQL needs REPEATABLE READ.
pub async fn snapshot(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    match db.get_database_backend() {
        DbBackend::Postgres => db.begin_with_config(Some(IsolationLevel::RepeatableRead), Some(AccessMode::ReadOnly)).await,
        _ => db.begin().await,
    }
}

impl super::Transient for ReplayError {
    fn is_transient(&self) -> bool {
        matches!(self, ReplayError::Db(e) if super::Transient::is_transient(e))
    }
}
