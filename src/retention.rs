//! Retention: the event log and notifications do not grow forever.
//!
//! A background task prunes, on an interval:
//!
//! - events older than `event_max_age`, and each topic's events beyond the
//!   newest `events_per_topic`. Each pruned topic's history floor moves up
//!   in the same transaction, so a client resuming from below it gets
//!   `reset` rather than a silent gap (see `stream`);
//! - notifications read, expired or deleted more than `notification_max_age` ago,
//!   with their outbox deliveries.
//!   Statistics are computed from the notifications that remain, so they
//!   cover that window.
//!
//! Pruning runs as small jobs of the writer, so that it never holds a batch
//! open for more than a few milliseconds: first one job raises the history
//! floors (a client resuming from below one gets `reset` from then on, even
//! while the events are still there), then jobs of at most
//! [`CHUNK`] rows each delete what lies below them.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, sea_query::{ExprTrait, OnConflict},
};
use tokio_util::sync::CancellationToken;

use crate::{domain::DomainError, store::unread, writer::Writer};
use entity::{event, history_floor, notification};

/// Most rows one pruning job deletes.
pub const CHUNK: u64 = 2000;

/// How much history is kept.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Events older than this are pruned.
    pub event_max_age: Duration,
    /// At most this many events are kept per topic (per user).
    pub events_per_topic: u64,
    /// Notifications read, expired or deleted longer ago than this are removed.
    pub notification_max_age: Duration,
    /// How often the pruning runs.
    pub interval: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            event_max_age: Duration::from_secs(7 * 24 * 3600),
            events_per_topic: 10_000,
            notification_max_age: Duration::from_secs(30 * 24 * 3600),
            interval: Duration::from_secs(60),
        }
    }
}

/// What one run removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub notifications: u64,
}

/// The pruning task.
pub struct Retention {
    writer: Arc<Writer>,
    /// The pool, for the reads that decide what to prune.
    db: DatabaseConnection,
    settings: RetentionSettings,
}

impl Retention {
    /// Pruning through `writer` under `settings`.
    pub fn new(writer: Arc<Writer>, db: DatabaseConnection, settings: RetentionSettings) -> Self {
        Retention { writer, db, settings }
    }

    /// Runs every `interval` until `shutdown`.
    pub fn spawn(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(self.settings.interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = every.tick() => {}
                }
                match self.run_once().await {
                    Ok(pruned) if pruned != Pruned::default() => tracing::info!(events = pruned.events, notifications = pruned.notifications, "retention pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention failed; will retry"),
                }
            }
        });
    }

    /// One pruning pass.
    pub async fn run_once(&self) -> Result<Pruned, DomainError> {
        let floors = self.floors().await?;
        let mut pruned = Pruned::default();
        if !floors.is_empty() {
            let raised = floors.clone();
            self.writer
                .run(move |write| {
                    Box::pin(async move {
                        for (topic, floor) in &raised {
                            set_floor(write.conn(), topic, *floor).await?;
                        }
                        Ok(())
                    })
                })
                .await?;
        }
        for (topic, floor) in floors {
            loop {
                let topic = topic.clone();
                let deleted = self.writer.run(move |write| Box::pin(async move { Ok(delete_events_below(write.conn(), &topic, floor).await?) })).await?;
                pruned.events += deleted;
                if deleted < CHUNK {
                    break;
                }
            }
        }
        let horizon = Utc::now() - chrono::Duration::from_std(self.settings.notification_max_age).unwrap_or(chrono::Duration::MAX);
        // Asked of the read pool first, so that a pass with nothing to prune
        // never queues a write.
        if notification::Entity::find().select_only().column(notification::Column::Id).filter(prunable(horizon)).limit(1).into_tuple::<i64>().one(&self.db).await?.is_none() {
            return Ok(pruned);
        }
        loop {
            let deleted = self.writer.run(move |write| Box::pin(async move { Ok(delete_notifications_before(write.conn(), horizon).await?) })).await?;
            pruned.notifications += deleted;
            if deleted < CHUNK {
                break;
            }
        }
        Ok(pruned)
    }

    /// Per topic, the newest id to prune: by age, then by count.
    async fn floors(&self) -> Result<BTreeMap<String, i64>, DbErr> {
        let conn = &self.db;
        let mut floors: BTreeMap<String, i64> = BTreeMap::new();

        let cutoff = Utc::now() - chrono::Duration::from_std(self.settings.event_max_age).unwrap_or(chrono::Duration::MAX);
        let aged: Vec<(String, i64)> = event::Entity::find()
            .select_only()
            .column(event::Column::Topic)
            .column_as(event::Column::Id.max(), "floor")
            .filter(event::Column::CreatedAt.lt(cutoff))
            .group_by(event::Column::Topic)
            .into_tuple()
            .all(conn)
            .await?;
        for (topic, floor) in aged {
            raise(&mut floors, topic, floor);
        }

        let keep = self.settings.events_per_topic;
        let crowded: Vec<String> = event::Entity::find()
            .select_only()
            .column(event::Column::Topic)
            .group_by(event::Column::Topic)
            .having(event::Column::Id.count().gt(keep))
            .into_tuple()
            .all(conn)
            .await?;
        for topic in crowded {
            let newest_dropped: Option<i64> = event::Entity::find()
                .select_only()
                .column(event::Column::Id)
                .filter(event::Column::Topic.eq(&topic))
                .order_by_desc(event::Column::Id)
                .offset(keep)
                .limit(1)
                .into_tuple()
                .one(conn)
                .await?;
            if let Some(floor) = newest_dropped {
                raise(&mut floors, topic, floor);
            }
        }
        Ok(floors)
    }
}

/// Deletes up to [`CHUNK`] events of `topic` at or below `floor`.
async fn delete_events_below(conn: &impl ConnectionTrait, topic: &str, floor: i64) -> Result<u64, DbErr> {
    let ids: Vec<i64> = event::Entity::find()
        .select_only()
        .column(event::Column::Id)
        .filter(event::Column::Topic.eq(topic))
        .filter(event::Column::Id.lte(floor))
        .limit(CHUNK)
        .into_tuple()
        .all(conn)
        .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(event::Entity::delete_many().filter(event::Column::Id.is_in(ids)).exec(conn).await?.rows_affected)
}

/// Notifications read, expired or deleted before `horizon`.
fn prunable(horizon: chrono::DateTime<Utc>) -> Condition {
    Condition::any()
        .add(notification::Column::ReadAt.lt(horizon))
        .add(notification::Column::ExpiresAt.lt(horizon))
        .add(notification::Column::DeletedAt.lt(horizon))
}

/// Deletes up to [`CHUNK`] notifications read, expired or deleted before
/// `horizon`, taking the expired unread ones out of their users' counters.
async fn delete_notifications_before(conn: &impl ConnectionTrait, horizon: chrono::DateTime<Utc>) -> Result<u64, DbErr> {
    let doomed: Vec<(i64, String, bool)> = notification::Entity::find()
        .select_only()
        .column(notification::Column::Id)
        .column(notification::Column::UserId)
        .column_as(notification::Column::ReadAt.is_null().and(notification::Column::DeletedAt.is_null()), "counted")
        .filter(prunable(horizon))
        .limit(CHUNK)
        .into_tuple()
        .all(conn)
        .await?;
    if doomed.is_empty() {
        return Ok(0);
    }
    let mut deltas: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for (_, user, counted) in &doomed {
        if *counted {
            *deltas.entry(user.clone()).or_default() -= 1;
        }
    }
    let ids: Vec<i64> = doomed.iter().map(|(id, _, _)| *id).collect();
    // Their outbox rows go with them: kept as long as the notification
    // they report on (they feed the statistics), no longer.
    entity::delivery::Entity::delete_many().filter(entity::delivery::Column::NotificationId.is_in(ids.iter().copied())).exec(conn).await?;
    let deleted = notification::Entity::delete_many().filter(notification::Column::Id.is_in(ids)).exec(conn).await?.rows_affected;
    if !deltas.is_empty() {
        unread::adjust(conn, &deltas).await?;
    }
    Ok(deleted)
}

fn raise(floors: &mut BTreeMap<String, i64>, topic: String, floor: i64) {
    let entry = floors.entry(topic).or_insert(floor);
    *entry = Ord::max(*entry, floor);
}

/// Moves a topic's floor up (never down).
async fn set_floor(conn: &impl ConnectionTrait, topic: &str, floor: i64) -> Result<(), DbErr> {
    let current = history_floor::Entity::find_by_id(topic.to_owned()).one(conn).await?.map_or(0, |row| row.floor);
    if floor <= current {
        return Ok(());
    }
    history_floor::Entity::insert(history_floor::ActiveModel { topic: Set(topic.to_owned()), floor: Set(floor) })
        .on_conflict(OnConflict::column(history_floor::Column::Topic).update_column(history_floor::Column::Floor).to_owned())
        .exec(conn)
        .await?;
    Ok(())
}
