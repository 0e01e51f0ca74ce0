//! The event log: what resume stands on.
//!
//! Every event that streams give an id is appended, in the same
//! transaction as the change it reports, by the [`Writer`](crate::writer),
//! which also hands committed events to the hub. Resume is "every event of
//! my topics with an id greater than the last one I saw", exact because ids
//! increase in commit order (see `writer` for how that holds). This module
//! holds the reads: replay, tail, history floors and heads.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::domain::{EventId, Topic};
use crate::hub::{Event, RouteChange};
use entity::{event, history_floor};

/// What one user may receive from the log: everything on their own topic,
/// and each conversation's events inside the windows of their membership.
#[derive(Debug, Clone)]
pub struct Audience {
    pub user: Topic,
    pub windows: Vec<Window>,
    /// Broadcast topics the stream asked for: every event of each.
    pub topics: Vec<Topic>,
}

/// A stretch of membership: the conversation's events with ids in
/// `(from, until]` belong to the member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub topic: Topic,
    pub from: EventId,
    pub until: Option<EventId>,
}

impl Audience {
    /// Every topic involved.
    pub fn topics(&self) -> Vec<Topic> {
        std::iter::once(self.user.clone())
            .chain(self.windows.iter().map(|w| w.topic.clone()))
            .chain(self.topics.iter().cloned())
            .collect()
    }

    /// The events of the audience after `after`. With `conflate_upto`, a
    /// broadcast topic's event with a key is left out when a newer event of
    /// the same topic and key exists up to that id: a catching-up
    /// subscriber gets only the newest per key of its gap.
    fn condition(&self, after: EventId, conflate_upto: Option<EventId>) -> Condition {
        let mut any = Condition::any().add(
            Condition::all()
                .add(event::Column::Topic.eq(self.user.as_str()))
                .add(event::Column::Id.gt(after.get())),
        );
        for window in &self.windows {
            let mut inside = Condition::all()
                .add(event::Column::Topic.eq(window.topic.as_str()))
                .add(event::Column::Id.gt(after.max(window.from).get()));
            if let Some(until) = window.until {
                inside = inside.add(event::Column::Id.lte(until.get()));
            }
            any = any.add(inside);
        }
        for topic in &self.topics {
            let mut of_topic = Condition::all().add(event::Column::Topic.eq(topic.as_str())).add(event::Column::Id.gt(after.get()));
            if let Some(upto) = conflate_upto {
                // The head is a number of ours, not client input: written inline.
                let newest_of_key = sea_orm::sea_query::Expr::cust(format!(
                    "NOT EXISTS (SELECT 1 FROM events AS newer WHERE newer.topic = events.topic AND newer.key = events.key \
                     AND newer.id > events.id AND newer.id <= {})",
                    upto.get()
                ));
                of_topic = of_topic.add(Condition::any().add(event::Column::Key.is_null()).add(newest_of_key));
            }
            any = any.add(of_topic);
        }
        any
    }
}

/// Up to `limit` events of `audience` after `after`, oldest first,
/// conflated by key up to `conflate_upto` (see [`Audience`]'s condition).
pub async fn read_audience_after(conn: &impl ConnectionTrait, audience: &Audience, after: EventId, limit: u64, conflate_upto: Option<EventId>) -> Result<Vec<Event>, DbErr> {
    let rows = event::Entity::find()
        .filter(audience.condition(after, conflate_upto))
        .order_by_asc(event::Column::Id)
        .limit(limit)
        .all(conn)
        .await?;
    Ok(rows.into_iter().map(stored_event).collect())
}

/// Every event of the log after `after`, oldest first: what a node's tail
/// reader hands to its registry when the log, not the bus, carries events.
pub async fn read_all_after(conn: &impl ConnectionTrait, after: EventId, limit: u64) -> Result<Vec<Event>, DbErr> {
    let rows = event::Entity::find()
        .filter(event::Column::Id.gt(after.get()))
        .order_by_asc(event::Column::Id)
        .limit(limit)
        .all(conn)
        .await?;
    Ok(rows.into_iter().map(stored_event).collect())
}

/// An event as read back from the log, with its membership change.
fn stored_event(row: event::Model) -> Event {
    let mut event = Event::persisted(EventId::new(row.id), Topic::from_stored(&row.topic), &row.event, &row.data);
    event.route = row.route.as_deref().and_then(RouteChange::decode);
    event
}

/// Whether retention removed events of `audience` after `after`: then
/// "everything after `after`" can no longer be given.
pub async fn history_gone(conn: &impl ConnectionTrait, audience: &Audience, after: EventId) -> Result<bool, DbErr> {
    let topics = audience.topics();
    let names: Vec<&str> = topics.iter().map(Topic::as_str).collect();
    Ok(audience.gone_below(&floors(conn, &names).await?, after))
}

/// The history floor of each of `topics` that has one.
pub async fn floors(conn: &impl ConnectionTrait, topics: &[&str]) -> Result<HashMap<String, EventId>, DbErr> {
    let floors: Vec<(String, i64)> = history_floor::Entity::find()
        .select_only()
        .column(history_floor::Column::Topic)
        .column(history_floor::Column::Floor)
        .filter(history_floor::Column::Topic.is_in(topics.iter().copied()))
        .into_tuple()
        .all(conn)
        .await?;
    Ok(floors.into_iter().map(|(topic, floor)| (topic, EventId::new(floor))).collect())
}

impl Audience {
    /// Whether `floors` (history floors by topic) say that events of this
    /// audience after `after` were pruned.
    pub fn gone_below(&self, floors: &HashMap<String, EventId>, after: EventId) -> bool {
        floors.iter().any(|(topic, &floor)| {
            if topic == self.user.as_str() || self.topics.iter().any(|t| t.as_str() == topic) {
                return floor > after;
            }
            self.windows.iter().filter(|w| w.topic.as_str() == topic).any(|w| {
                let start = after.max(w.from);
                floor > start && w.until.is_none_or(|until| start < until)
            })
        })
    }

    /// Whether this audience receives `row` replaying after `after`: the
    /// same rule as the statement of [`read_audience_after`], for rows
    /// already read. `superseded` says whether a newer event of the row's
    /// topic and key exists up to the conflation head (only asked of
    /// broadcast topics' keyed rows, and only when conflating).
    fn receives(&self, row: &event::Model, after: EventId, conflating: bool, superseded: impl Fn(&event::Model) -> bool) -> bool {
        let id = EventId::new(row.id);
        if id <= after {
            return false;
        }
        if row.topic == self.user.as_str() {
            return true;
        }
        if self.topics.iter().any(|t| t.as_str() == row.topic) {
            return !(conflating && row.key.is_some() && superseded(row));
        }
        self.windows
            .iter()
            .any(|w| w.topic.as_str() == row.topic && id > w.from && w.until.is_none_or(|until| id <= until))
    }
}

/// Every event of `topics` with an id above `after`, oldest first, at most
/// `limit`: what a batch of resuming streams shares (see
/// [`LogSlice::replay_for`]).
pub async fn slice_after(conn: &impl ConnectionTrait, topics: &[&str], after: EventId, limit: u64) -> Result<LogSlice, DbErr> {
    let rows = event::Entity::find()
        .filter(event::Column::Topic.is_in(topics.iter().copied()))
        .filter(event::Column::Id.gt(after.get()))
        .order_by_asc(event::Column::Id)
        .limit(limit)
        .all(conn)
        .await?;
    let mut newest_of_key = std::collections::HashSet::new();
    let mut superseded = std::collections::HashSet::new();
    for row in rows.iter().rev() {
        if let Some(key) = &row.key
            && !newest_of_key.insert((row.topic.as_str(), key.as_str()))
        {
            superseded.insert(row.id);
        }
    }
    Ok(LogSlice { rows, superseded })
}

/// A stretch of the log over some topics, read once and replayed to each
/// of several audiences, with what conflation would leave out: a keyed row
/// with a newer row of its topic and key in the stretch. The stretch must
/// reach the conflation head: it does when it was read in the same snapshot
/// as that head and not cut short by its limit.
pub struct LogSlice {
    rows: Vec<event::Model>,
    superseded: std::collections::HashSet<i64>,
}

impl LogSlice {
    /// How many rows were read: as many as the limit means the slice may
    /// have been cut short.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// What [`read_audience_after`] gives `audience` after `after`, when
    /// the slice holds every event of the audience's topics after `after`
    /// up to the conflation head. `conflating` as there.
    pub fn replay_for(&self, audience: &Audience, after: EventId, conflating: bool) -> Vec<Event> {
        self.rows
            .iter()
            .filter(|row| audience.receives(row, after, conflating, |row| self.superseded.contains(&row.id)))
            .cloned()
            .map(stored_event)
            .collect()
    }
}

/// The newest event id of `topics`, or zero.
pub async fn head(conn: &impl ConnectionTrait, topics: &[Topic]) -> Result<EventId, DbErr> {
    newest_where(conn, Some(topics)).await
}

/// The newest event id of the whole log, or zero: no client can have seen
/// an id above it, so a resume point beyond it comes from another database.
pub async fn newest(conn: &impl ConnectionTrait) -> Result<EventId, DbErr> {
    newest_where(conn, None).await
}

async fn newest_where(conn: &impl ConnectionTrait, topics: Option<&[Topic]>) -> Result<EventId, DbErr> {
    let mut query = event::Entity::find().select_only().column_as(event::Column::Id.max(), "head");
    if let Some(topics) = topics {
        query = query.filter(event::Column::Topic.is_in(topics.iter().map(Topic::as_str)));
    }
    let newest: Option<Option<i64>> = query.into_tuple().one(conn).await?;
    Ok(EventId::new(newest.flatten().unwrap_or(0)))
}
