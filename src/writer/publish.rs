//! Plain publishes, stored set-based.
//!
//! A publish with no idempotency key and no group key needs no read inside
//! the transaction: preferences and rate limits were settled before it was
//! queued, and a new notification conflicts with nothing. So all such
//! publishes waiting in one batch are written together, whatever their
//! number of recipients: ids allocated in memory, one multi-row INSERT of
//! notifications, one of events, one upsert of the unread counters that
//! returns the new counts, and one lookup of expired unread notifications.
//! Each recipient's stream then gets its `notification` event and one
//! `unread_count` for the batch.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, TransactionTrait};
use tokio::sync::oneshot;

use super::{Finished, ids::Ids};
use crate::{
    domain::{
        DomainError,
        EventId, Topic, UserId,
        events::{self, UnreadCount},
        notification::{NewNotification, Notification},
    },
    hub::Event,
    outbox::{ChannelKind, Routes, store::NewDelivery},
    store::unread,
};
use entity::{event, notification};

/// Rows per multi-row INSERT: 17 columns × 1000 stays under SQLite's limit
/// of bound variables.
const INSERT_CHUNK: usize = 1000;

/// The users one plain publish is stored for: those whose preferences want
/// it and who are within their rate limit, as decided before queueing.
pub type Recipients = Vec<UserId>;

/// One plain publish: the notification and who gets a copy.
pub struct PlainPublish {
    pub new: Arc<NewNotification>,
    pub recipients: Recipients,
    /// The creation time every copy carries.
    pub now: DateTime<Utc>,
    /// Per recipient (same order), the outbox rows its copy gets; empty
    /// when no channel beyond the page applies.
    pub routes: Vec<Routes>,
    /// When an email row of this publish falls due.
    pub email_due: DateTime<Utc>,
}

/// A request's plain publishes (one, or a batch's), answered together.
pub struct PublishJob {
    pub items: Vec<PlainPublish>,
    pub reply: oneshot::Sender<Result<Vec<Vec<Notification>>, DomainError>>,
}

impl PublishJob {
    /// Notification rows this job writes.
    pub fn rows(&self) -> usize {
        self.items.iter().map(|item| item.recipients.len()).sum::<usize>().max(1)
    }
}

/// Stores every item of `jobs` in one savepoint and queues their events.
/// A database error here fails these jobs (they are answered with it) and
/// leaves the rest of the batch alone.
pub(super) async fn flush(
    txn: &DatabaseTransaction,
    ids: &mut Ids,
    jobs: Vec<PublishJob>,
    outbox: &mut Vec<Arc<Event>>,
    finished: &mut Vec<Finished>,
    alone: bool,
) -> Result<(), DbErr> {
    if jobs.is_empty() {
        return Ok(());
    }
    if alone {
        match store(txn, ids, &jobs).await {
            Ok((created, events)) => {
                outbox.extend(events);
                for (job, created) in jobs.into_iter().zip(created) {
                    finished.push(Finished::Publish(job, Ok(created)));
                }
                return Ok(());
            }
            Err(e) => {
                // The batch fails with them; they are answered with it.
                let failure = DomainError::Unavailable("the database did not accept the write; retry".into());
                finished.extend(jobs.into_iter().map(|job| Finished::Publish(job, Err(failure.clone()))));
                return Err(e);
            }
        }
    }
    let savepoint = txn.begin().await?;
    match store(&savepoint, ids, &jobs).await {
        Ok((created, events)) => {
            savepoint.commit().await?;
            outbox.extend(events);
            for (job, created) in jobs.into_iter().zip(created) {
                finished.push(Finished::Publish(job, Ok(created)));
            }
        }
        Err(e) => {
            savepoint.rollback().await?;
            tracing::error!(error = %e, "storing plain publishes failed");
            for job in jobs {
                finished.push(Finished::Publish(job, Err(DomainError::Unavailable("the database did not accept the write; retry".into()))));
            }
        }
    }
    Ok(())
}

/// Per job, per item, the created notifications; and the events to publish.
type Stored = (Vec<Vec<Vec<Notification>>>, Vec<Arc<Event>>);

async fn store(txn: &DatabaseTransaction, ids: &mut Ids, jobs: &[PublishJob]) -> Result<Stored, DbErr> {
    let (created, rows, event_rows, per_user, mut outbox, deliveries) = prepare(txn, ids, jobs).await?;
    let users: Vec<&str> = per_user.keys().map(String::as_str).collect();
    let counts = if txn.get_database_backend() == DbBackend::Sqlite && script::fits(&rows, &event_rows, &deliveries) {
        script::run(txn, &rows, &event_rows, &per_user, &deliveries).await?
    } else {
        insert_rows(txn, rows, event_rows).await?;
        crate::outbox::store::insert(txn, &deliveries).await?;
        let deltas: HashMap<String, i64> = per_user.iter().map(|(user, (added, _, _))| (user.clone(), *added)).collect();
        let counters = unread::adjust(txn, &deltas).await?;
        let expired = unread::expired(txn, &users, Utc::now()).await?;
        counters
            .into_iter()
            .map(|(user, stored)| {
                let gone = expired.get(&user).copied().unwrap_or(0);
                (user, unread::visible(stored, gone))
            })
            .collect()
    };
    for (user, (_, last_event, topic)) in &per_user {
        let count = counts.get(user).copied().unwrap_or(0);
        let data = serde_json::to_string(&UnreadCount { count }).map_err(|e| DbErr::Custom(format!("count payload: {e}")))?;
        outbox.push(Arc::new(Event::state(topic.clone(), events::UNREAD_COUNT, &data, Some(*last_event))));
    }
    Ok((created, outbox))
}

/// Per user: how many new unread, their last event in the batch, their topic.
type PerUser = HashMap<String, (i64, EventId, Topic)>;

/// What [`prepare`] makes: per job, per item, the notifications; their
/// rows, event rows, per-user counts, events to publish and outbox rows.
type Prepared = (Vec<Vec<Vec<Notification>>>, Vec<notification::Model>, Vec<event::Model>, PerUser, Vec<Arc<Event>>, Vec<NewDelivery>);

/// The rows and events of every item, with ids allocated.
async fn prepare(txn: &DatabaseTransaction, ids: &mut Ids, jobs: &[PublishJob]) -> Result<Prepared, DbErr> {
    let total: usize = jobs.iter().flat_map(|job| &job.items).map(|item| item.recipients.len()).sum();
    let notification_ids = ids.notifications(txn, total).await?;
    let event_ids = ids.events(txn, total).await?;
    let mut next = notification_ids.into_iter().zip(event_ids);

    let mut rows = Vec::with_capacity(total);
    let mut event_rows = Vec::with_capacity(total);
    let mut outbox = Vec::with_capacity(total * 2);
    let mut created = Vec::with_capacity(jobs.len());
    // Per user: how many new unread, and their last event in this batch.
    let mut per_user: PerUser = HashMap::new();
    let mut deliveries = Vec::new();
    for job in jobs {
        let mut of_job = Vec::with_capacity(job.items.len());
        for item in &job.items {
            let mut of_item = Vec::with_capacity(item.recipients.len());
            // Decoded once for every copy of this publish.
            let data: Option<serde_json::Value> = item.new.data.as_deref().and_then(|json| serde_json::from_str(json).ok());
            for (at, user) in item.recipients.iter().enumerate() {
                let (id, event_id) = next.next().ok_or_else(|| DbErr::Custom("fewer ids than rows".into()))?;
                let row = row(id, event_id, user, &item.new, item.now);
                if let Some(routes) = item.routes.get(at) {
                    for route in routes.iter() {
                        let due_at = if route.channel == ChannelKind::Email { item.email_due } else { item.now };
                        deliveries.push(NewDelivery { notification_id: id, user_id: user.as_str().to_owned(), route: route.clone(), due_at, now: item.now });
                    }
                }
                let notification = Notification::with_data(&row, data.clone());
                let data = serde_json::to_string(&notification).map_err(|e| DbErr::Custom(format!("event payload: {e}")))?;
                let topic = Topic::user(user);
                let event_id = EventId::new(event_id);
                outbox.push(Arc::new(Event::persisted(event_id, topic.clone(), events::NOTIFICATION, &data)));
                event_rows.push(event::Model {
                    id: event_id.get(),
                    topic: topic.as_str().to_owned(),
                    event: events::NOTIFICATION.to_owned(),
                    data,
                    created_at: item.now,
                    route: None,
                    key: None,
                });
                let entry = per_user.entry(user.as_str().to_owned()).or_insert_with(|| (0, event_id, topic.clone()));
                entry.0 += 1;
                entry.1 = event_id;
                rows.push(row);
                of_item.push(notification);
            }
            of_job.push(of_item);
        }
        created.push(of_job);
    }

    Ok((created, rows, event_rows, per_user, outbox, deliveries))
}

/// The multi-row INSERTs through SeaORM, with bound values.
async fn insert_rows(txn: &DatabaseTransaction, rows: Vec<notification::Model>, event_rows: Vec<event::Model>) -> Result<(), DbErr> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let models = chunk.iter().cloned().map(notification::ActiveModel::from);
        notification::Entity::insert_many(models).exec_without_returning(txn).await?;
    }
    for chunk in event_rows.chunks(INSERT_CHUNK) {
        let models = chunk.iter().cloned().map(event::ActiveModel::from);
        event::Entity::insert_many(models).exec_without_returning(txn).await?;
    }
    Ok(())
}

/// One recipient's row, complete with its ids.
fn row(id: i64, event_id: i64, user: &UserId, new: &NewNotification, now: DateTime<Utc>) -> notification::Model {
    notification::Model {
        id,
        user_id: user.as_str().to_owned(),
        kind: new.kind.as_str().to_owned(),
        title: new.text_for(user.as_str()).0.to_owned(),
        body: new.text_for(user.as_str()).1.to_owned(),
        data: new.data.clone(),
        action_url: new.action_url.clone(),
        group_key: None,
        count: 1,
        created_at: now,
        updated_at: now,
        expires_at: new.expires_at,
        read_at: None,
        clicked_at: None,
        deleted_at: None,
        event_id,
        critical: new.critical,
    }
}

/// SQLite: the whole set-based write as one script, in one round trip.
///
/// Every statement to SQLite is a hand-off to sqlx's worker thread, and on a
/// busy machine each hand-off waits for a time slice; one script makes a
/// batch of plain publishes cost one hand-off instead of five. The
/// statements are built with sea-query, which renders values as SQLite
/// literals (quotes doubled); times are rendered exactly as sqlx binds
/// them, so stored text compares and decodes the same either way.
mod script {
    use std::collections::HashMap;

    use chrono::{DateTime, SecondsFormat, Utc};
    use sea_orm::{
        ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement,
        sea_query::{Alias, Expr, ExprTrait, OnConflict, Query, SimpleExpr, SqliteQueryBuilder, Value},
    };

    use super::{INSERT_CHUNK, PerUser};
    use crate::outbox::store::{self as outbox, NewDelivery};
    use entity::{event, notification, unread_counter};

    /// Whether every value can be written as a literal: SQLite reads SQL
    /// text only up to a NUL character.
    pub fn fits(rows: &[notification::Model], events: &[event::Model], deliveries: &[NewDelivery]) -> bool {
        let clean = |text: &str| !text.contains('\0');
        if !deliveries.iter().all(|d| d.route.target.as_deref().is_none_or(clean)) {
            return false;
        }
        rows.iter().all(|r| {
            clean(&r.title) && clean(&r.body) && r.data.as_deref().is_none_or(clean) && r.action_url.as_deref().is_none_or(clean) && clean(&r.user_id) && clean(&r.kind)
        }) && events.iter().all(|e| clean(&e.data))
    }

    /// Runs the inserts, the counter upsert and the count query; returns the
    /// unread count each user of the batch sees now.
    pub async fn run(txn: &DatabaseTransaction, rows: &[notification::Model], events: &[event::Model], per_user: &PerUser, deliveries: &[NewDelivery]) -> Result<HashMap<String, u64>, DbErr> {
        let mut sql = String::with_capacity(rows.len() * 400);
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut insert = Query::insert();
            insert.into_table(notification::Entity).columns([
                notification::Column::Id,
                notification::Column::UserId,
                notification::Column::Kind,
                notification::Column::Title,
                notification::Column::Body,
                notification::Column::Data,
                notification::Column::ActionUrl,
                notification::Column::GroupKey,
                notification::Column::Count,
                notification::Column::CreatedAt,
                notification::Column::UpdatedAt,
                notification::Column::ExpiresAt,
                notification::Column::EventId,
                notification::Column::Critical,
            ]);
            for r in chunk {
                insert.values_panic([
                    r.id.into(),
                    r.user_id.clone().into(),
                    r.kind.clone().into(),
                    r.title.clone().into(),
                    r.body.clone().into(),
                    r.data.clone().into(),
                    r.action_url.clone().into(),
                    r.group_key.clone().into(),
                    r.count.into(),
                    time(r.created_at),
                    time(r.updated_at),
                    r.expires_at.map_or_else(|| Value::String(None).into(), time),
                    r.event_id.into(),
                    r.critical.into(),
                ]);
            }
            sql.push_str(&insert.to_string(SqliteQueryBuilder));
            sql.push_str(";\n");
        }
        for chunk in events.chunks(INSERT_CHUNK) {
            let mut insert = Query::insert();
            insert.into_table(event::Entity).columns([event::Column::Id, event::Column::Topic, event::Column::Event, event::Column::Data, event::Column::CreatedAt]);
            for e in chunk {
                insert.values_panic([e.id.into(), e.topic.clone().into(), e.event.clone().into(), e.data.clone().into(), time(e.created_at)]);
            }
            sql.push_str(&insert.to_string(SqliteQueryBuilder));
            sql.push_str(";\n");
        }
        for chunk in deliveries.chunks(outbox::INSERT_CHUNK) {
            sql.push_str(&outbox::insert_statement(chunk, time).to_string(SqliteQueryBuilder));
            sql.push_str(";\n");
        }
        let users: Vec<(&String, i64)> = per_user.iter().map(|(user, (added, _, _))| (user, *added)).collect();
        for chunk in users.chunks(INSERT_CHUNK) {
            let mut upsert = Query::insert();
            upsert.into_table(unread_counter::Entity).columns([unread_counter::Column::UserId, unread_counter::Column::Count]);
            for (user, added) in chunk {
                upsert.values_panic([(*user).clone().into(), (*added).into()]);
            }
            upsert.on_conflict(
                OnConflict::column(unread_counter::Column::UserId)
                    .value(
                        unread_counter::Column::Count,
                        Expr::col((unread_counter::Entity, unread_counter::Column::Count)).add(Expr::col((Alias::new("excluded"), unread_counter::Column::Count))),
                    )
                    .to_owned(),
            );
            sql.push_str(&upsert.to_string(SqliteQueryBuilder));
            sql.push_str(";\n");
        }
        // The counts shown: each counter less the user's expired unread ones.
        let now = time(Utc::now());
        let now_sql = Query::select().expr(now).to_string(SqliteQueryBuilder);
        let now_literal = now_sql.trim_start_matches("SELECT ").to_owned();
        let list = Query::select()
            .exprs(users.iter().map(|(user, _)| Expr::val((*user).clone())))
            .to_string(SqliteQueryBuilder);
        let list = list.trim_start_matches("SELECT ");
        sql.push_str(&format!(
            "SELECT c.user_id, c.count - (SELECT COUNT(*) FROM notifications n WHERE n.user_id = c.user_id \
             AND n.expires_at IS NOT NULL AND n.expires_at <= {now_literal} AND n.read_at IS NULL AND n.deleted_at IS NULL) \
             FROM unread_counters c WHERE c.user_id IN ({list})"
        ));
        let found = txn.query_all_raw(Statement::from_string(DbBackend::Sqlite, sql)).await?;
        let mut counts = HashMap::with_capacity(found.len());
        for row in found {
            let user: String = row.try_get_by_index(0)?;
            let count: i64 = row.try_get_by_index(1)?;
            counts.insert(user, u64::try_from(count).unwrap_or(0));
        }
        Ok(counts)
    }

    /// A time as sqlx binds it for SQLite (RFC 3339, `+00:00`).
    fn time(at: DateTime<Utc>) -> SimpleExpr {
        Expr::val(at.to_rfc3339_opts(SecondsFormat::AutoSi, false))
    }
}
