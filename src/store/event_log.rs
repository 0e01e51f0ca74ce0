//! The event log: what resume stands on.
//!
//! Every event that streams give an id is appended here, in the same
//! transaction as the change it reports, and published to the hub only after
//! that transaction commits. Resume is "every event of my topics with an id
//! greater than the last one I saw", which is exact only if **ids increase
//! in commit order**: a stream that has read up to id N must never later find
//! a smaller id committed behind its back.
//!
//! How that holds:
//!
//! - **SQLite**: the database has one writer at a time. All appends of this
//!   process also go through [`EventLog::write`], which takes a process-wide
//!   async lock and opens the transaction with `BEGIN IMMEDIATE`, so ids are
//!   allocated and committed strictly one transaction after the other.
//! - **PostgreSQL** (several nodes, one database): a sequence alone hands out
//!   ids in call order, not commit order. Each write transaction therefore
//!   first takes `pg_advisory_xact_lock(LOG_LOCK)`, which every node's writer
//!   takes too and which PostgreSQL releases only at commit or rollback. Ids
//!   are drawn while the lock is held, so across all nodes a transaction with
//!   a larger id commits after every one with a smaller id.
//!
//! The same lock order makes publication ordered on one node: the hub
//! receives a transaction's events before the next writer may start, so live
//! events reach each mailbox in id order, and a stream's rule "skip what is
//! at or below my last id" never skips something it has not sent.

use std::sync::Arc;

use chrono::Utc;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use serde::Serialize;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::domain::{EventId, Topic};
use crate::hub::{Event, Hub, RouteChange};
use entity::{event, history_floor};

/// The advisory lock key that serializes appends on PostgreSQL ("tidings" in
/// ASCII, truncated): any constant works as long as every node uses it.
const LOG_LOCK: i64 = 0x7469_6469_6e67;

/// The event log and its single writer.
pub struct EventLog {
    db: DatabaseConnection,
    /// Held from `BEGIN` until the committed events are handed to the hub;
    /// see the module documentation for why this is the ordering guarantee.
    writer: Arc<Mutex<()>>,
    hub: Arc<Hub>,
}

impl EventLog {
    /// A log over `db` that publishes committed events to `hub`.
    pub fn new(db: DatabaseConnection, hub: Arc<Hub>) -> Self {
        EventLog {
            db,
            writer: Arc::new(Mutex::new(())),
            hub,
        }
    }

    /// Starts a write: a transaction in which the caller changes rows and
    /// appends the events that report the change.
    pub async fn write(&self) -> Result<LogWrite, DbErr> {
        let turn = self.writer.clone().lock_owned().await;
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        let txn = self.db.begin_with_options(options).await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({LOG_LOCK})"))
                .await?;
        }
        Ok(LogWrite {
            txn,
            outbox: Vec::new(),
            last_appended: None,
            hub: self.hub.clone(),
            _turn: turn,
        })
    }

    /// The connection pool, for reads outside a write.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }
}

/// One write transaction on the log. Dropping it without [`commit`](Self::commit)
/// rolls everything back and publishes nothing.
pub struct LogWrite {
    txn: DatabaseTransaction,
    /// Events to publish once the commit succeeded, in append order.
    outbox: Vec<Arc<Event>>,
    last_appended: Option<EventId>,
    hub: Arc<Hub>,
    _turn: OwnedMutexGuard<()>,
}

impl LogWrite {
    /// The transaction, for the caller's own changes.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Appends an event for `topic`; it is published after the commit.
    pub async fn append(&mut self, topic: &Topic, name: &str, data: &impl Serialize) -> Result<EventId, DbErr> {
        let data = serde_json::to_string(data).map_err(|e| DbErr::Custom(format!("event payload: {e}")))?;
        self.append_encoded(topic, name, data, None).await
    }

    /// Appends an already encoded event that also moves the connections of
    /// the user whose topic it is onto or off a conversation's topic.
    pub async fn append_routed(&mut self, topic: &Topic, name: &str, data: &str, route: RouteChange) -> Result<EventId, DbErr> {
        self.append_encoded(topic, name, data.to_owned(), Some(route)).await
    }

    async fn append_encoded(&mut self, topic: &Topic, name: &str, data: String, route: Option<RouteChange>) -> Result<EventId, DbErr> {
        let row = event::ActiveModel {
            topic: Set(topic.as_str().to_owned()),
            event: Set(name.to_owned()),
            data: Set(data.clone()),
            created_at: Set(Utc::now()),
            route: Set(route.as_ref().map(RouteChange::encode)),
            ..Default::default()
        };
        let id = EventId::new(event::Entity::insert(row).exec(&self.txn).await?.last_insert_id);
        let mut event = Event::persisted(id, topic.clone(), name, &data);
        event.route = route;
        self.last_appended = Some(id);
        self.outbox.push(Arc::new(event));
        Ok(id)
    }

    /// Queues a state report (such as `unread_count`) that is published after
    /// the events appended so far, tagged with the log position it reflects.
    pub fn announce(&mut self, topic: &Topic, name: &str, data: &impl Serialize) {
        let data = serde_json::to_string(data).expect("state payloads are plain JSON values");
        self.outbox.push(Arc::new(Event::state(topic.clone(), name, &data, self.last_appended)));
    }

    /// Commits, then publishes, then lets the next writer in.
    pub async fn commit(self) -> Result<(), DbErr> {
        let LogWrite { txn, outbox, hub, _turn, .. } = self;
        txn.commit().await?;
        hub.publish(outbox);
        Ok(())
    }
}

/// What one user may receive from the log: everything on their own topic,
/// and each conversation's events inside the windows of their membership.
#[derive(Debug, Clone)]
pub struct Audience {
    pub user: Topic,
    pub windows: Vec<Window>,
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
        std::iter::once(self.user.clone()).chain(self.windows.iter().map(|w| w.topic.clone())).collect()
    }

    fn condition(&self, after: EventId) -> Condition {
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
        any
    }
}

/// Up to `limit` events of `audience` after `after`, oldest first.
pub async fn read_audience_after(conn: &impl ConnectionTrait, audience: &Audience, after: EventId, limit: u64) -> Result<Vec<Event>, DbErr> {
    let rows = event::Entity::find()
        .filter(audience.condition(after))
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
    let floors: Vec<(String, i64)> = history_floor::Entity::find()
        .select_only()
        .column(history_floor::Column::Topic)
        .column(history_floor::Column::Floor)
        .filter(history_floor::Column::Topic.is_in(audience.topics().iter().map(Topic::as_str)))
        .into_tuple()
        .all(conn)
        .await?;
    Ok(floors.into_iter().any(|(topic, floor)| {
        let floor = EventId::new(floor);
        if topic == audience.user.as_str() {
            return floor > after;
        }
        audience.windows.iter().filter(|w| w.topic.as_str() == topic).any(|w| {
            let start = after.max(w.from);
            floor > start && w.until.is_none_or(|until| start < until)
        })
    }))
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
