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
use sea_orm::{DatabaseTransaction, DbErr, EntityTrait, Set, TransactionTrait};
use tokio::sync::oneshot;

use super::{Finished, ids::Ids};
use crate::{
    domain::{
        EventId, Topic, UserId,
        events::{self, UnreadCount},
        notification::{NewNotification, Notification},
    },
    error::ApiError,
    hub::Event,
    store::unread,
};
use entity::{event, notification};

/// Rows per multi-row INSERT: 16 columns × 1000 stays under SQLite's limit
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
}

/// A request's plain publishes (one, or a batch's), answered together.
pub struct PublishJob {
    pub items: Vec<PlainPublish>,
    pub reply: oneshot::Sender<Result<Vec<Vec<Notification>>, ApiError>>,
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
) -> Result<(), DbErr> {
    if jobs.is_empty() {
        return Ok(());
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
                finished.push(Finished::Publish(job, Err(ApiError::Unavailable("the database did not accept the write; retry".into()))));
            }
        }
    }
    Ok(())
}

/// Per job, per item, the created notifications; and the events to publish.
type Stored = (Vec<Vec<Vec<Notification>>>, Vec<Arc<Event>>);

async fn store(txn: &DatabaseTransaction, ids: &mut Ids, jobs: &[PublishJob]) -> Result<Stored, DbErr> {
    let total: usize = jobs.iter().flat_map(|job| &job.items).map(|item| item.recipients.len()).sum();
    let notification_ids = ids.notifications(txn, total).await?;
    let event_ids = ids.events(txn, total).await?;
    let mut next = notification_ids.into_iter().zip(event_ids);

    let mut rows = Vec::with_capacity(total);
    let mut event_rows = Vec::with_capacity(total);
    let mut outbox = Vec::with_capacity(total * 2);
    let mut created = Vec::with_capacity(jobs.len());
    // Per user: how many new unread, and their last event in this batch.
    let mut per_user: HashMap<String, (i64, EventId, Topic)> = HashMap::new();
    for job in jobs {
        let mut of_job = Vec::with_capacity(job.items.len());
        for item in &job.items {
            let mut of_item = Vec::with_capacity(item.recipients.len());
            for user in &item.recipients {
                let (id, event_id) = next.next().ok_or_else(|| DbErr::Custom("fewer ids than rows".into()))?;
                let row = row(id, event_id, user, &item.new, item.now);
                let notification = Notification::from(row.clone());
                let data = serde_json::to_string(&notification).map_err(|e| DbErr::Custom(format!("event payload: {e}")))?;
                let topic = Topic::user(user);
                let event_id = EventId::new(event_id);
                outbox.push(Arc::new(Event::persisted(event_id, topic.clone(), events::NOTIFICATION, &data)));
                event_rows.push(event::ActiveModel {
                    id: Set(event_id.get()),
                    topic: Set(topic.as_str().to_owned()),
                    event: Set(events::NOTIFICATION.to_owned()),
                    data: Set(data),
                    created_at: Set(item.now),
                    route: Set(None),
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

    for chunk in rows.chunks(INSERT_CHUNK) {
        let models = chunk.iter().cloned().map(notification::ActiveModel::from);
        notification::Entity::insert_many(models).exec_without_returning(txn).await?;
    }
    let mut event_rows = event_rows.into_iter().peekable();
    while event_rows.peek().is_some() {
        let chunk: Vec<_> = event_rows.by_ref().take(INSERT_CHUNK).collect();
        event::Entity::insert_many(chunk).exec_without_returning(txn).await?;
    }

    let deltas: HashMap<String, i64> = per_user.iter().map(|(user, (added, _, _))| (user.clone(), *added)).collect();
    let counters = unread::adjust(txn, &deltas).await?;
    let users: Vec<&str> = per_user.keys().map(String::as_str).collect();
    let expired = unread::expired(txn, &users, Utc::now()).await?;
    for (user, (_, last_event, topic)) in &per_user {
        let count = unread::visible(counters.get(user).copied().unwrap_or(0), expired.get(user).copied().unwrap_or(0));
        let data = serde_json::to_string(&UnreadCount { count }).map_err(|e| DbErr::Custom(format!("count payload: {e}")))?;
        outbox.push(Arc::new(Event::state(topic.clone(), events::UNREAD_COUNT, &data, Some(*last_event))));
    }
    Ok((created, outbox))
}

/// One recipient's row, complete with its ids.
fn row(id: i64, event_id: i64, user: &UserId, new: &NewNotification, now: DateTime<Utc>) -> notification::Model {
    notification::Model {
        id,
        user_id: user.as_str().to_owned(),
        kind: new.kind.as_str().to_owned(),
        title: new.title.clone(),
        body: new.body.clone(),
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
    }
}
