//! Notification use cases: each write is one event-log transaction that
//! changes rows, appends the events reporting the change, and announces the
//! user's new unread count; each read is a plain query.

use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use sea_orm::ConnectionTrait;
use serde::Serialize;

use crate::{
    domain::{
        Topic, UserId,
        events::{self, NotificationDeleted, NotificationRead, UnreadCount},
        notification::{NewNotification, Notification, NotificationType, truncate_to_millis},
        preference::{Channels, Preference, PreferenceUpdate},
    },
    error::ApiError,
    ratelimit::{RateLimiter, retry_after_secs},
    store::{EventLog, LogWrite, event_log, idempotency, notifications as rows, preferences},
};

/// Most ids one `notification.read` event carries; a larger read-all is split.
pub const READ_EVENT_MAX_IDS: usize = 500;

/// The answer to a publish, kept verbatim for idempotent retries.
pub struct PublishOutcome {
    pub status: u16,
    /// The JSON body.
    pub body: String,
    /// True when this is the remembered answer to an earlier request.
    pub replayed: bool,
}

/// An `Idempotency-Key` with the fingerprint of the body it came with.
pub struct IdempotencyKey<'a> {
    pub key: &'a str,
    pub request_hash: String,
}

/// The `201` body of a publish.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Published {
    /// One notification per recipient who receives it: new ones, and
    /// grouped ones updated in place (`count` + 1).
    pub created: Vec<Notification>,
    /// Recipients whose preferences turn this type off.
    pub suppressed: Vec<String>,
    /// Recipients over their limit for this type (without a group to fold into).
    pub rate_limited: Vec<String>,
}

/// A page of notifications, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Page {
    pub items: Vec<Notification>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// The answer of `read_all`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadAllResult {
    /// How many notifications became read.
    pub updated: u64,
}

/// Delivery statistics of one type.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TypeStats {
    #[serde(rename = "type")]
    pub kind: String,
    /// Notifications delivered (each grouped update counts).
    pub sent: u64,
    pub read: u64,
    pub clicked: u64,
    /// `read / sent`, 0 when nothing was sent.
    pub read_rate: f64,
    /// `clicked / sent`, 0 when nothing was sent.
    pub click_rate: f64,
}

/// What a list asks for, already validated.
pub struct ListQuery {
    pub unread_only: bool,
    pub kind: Option<String>,
    pub cursor: Option<i64>,
    pub limit: u64,
}

/// The operator's policy for publishing.
pub struct Policy {
    /// Channels of a type the user never changed.
    pub default_channels: Channels,
    pub limiter: Arc<dyn RateLimiter>,
}

/// Notifications: publish, read, list, preferences.
pub struct Notifications {
    log: Arc<EventLog>,
    policy: Policy,
}

impl Notifications {
    /// Use cases over `log`, under `policy`.
    pub fn new(log: Arc<EventLog>, policy: Policy) -> Self {
        Notifications { log, policy }
    }

    /// Stores one notification per recipient and sends each to its owner,
    /// unless the recipient's preferences turn the type off (suppressed) or
    /// the recipient is over the limit for it (rate limited; a notification
    /// with a group key still folds into an unread group). When every
    /// recipient is rate limited the whole request is refused with 429.
    ///
    /// With an idempotency key, a retry with the same body gets the first
    /// answer and creates nothing; the check runs inside the write
    /// transaction, so two racing retries cannot both create.
    pub async fn publish(&self, caller: &UserId, key: Option<IdempotencyKey<'_>>, new: NewNotification) -> Result<PublishOutcome, ApiError> {
        let mut write = self.log.write().await?;
        if let Some(key) = &key
            && let Some(earlier) = idempotency::find(write.conn(), caller.as_str(), key.key).await?
        {
            if earlier.request_hash != key.request_hash {
                return Err(ApiError::invalid_field(
                    "Idempotency-Key",
                    "this Idempotency-Key was already used with a different request body",
                ));
            }
            return Ok(PublishOutcome { status: earlier.status, body: earlier.body, replayed: true });
        }

        let now = truncate_to_millis(Utc::now());
        let mut answer = Published { created: Vec::new(), suppressed: Vec::new(), rate_limited: Vec::new() };
        let mut longest_wait = std::time::Duration::ZERO;
        let preferences = self.preferences_for(write.conn(), &new).await?;
        let (suppressed, wanted): (Vec<&UserId>, Vec<&UserId>) = new
            .recipients
            .iter()
            .partition(|user| !new.critical && !preferences.get(user.as_str()).is_none_or(Preference::delivers));
        answer.suppressed = suppressed.iter().map(ToString::to_string).collect();
        let wanted: Vec<UserId> = wanted.into_iter().cloned().collect();
        let limits = self.policy.limiter.check_recipients(&wanted, new.kind.as_str()).await;
        for (user, limit) in wanted.iter().zip(limits) {
            let group = match &new.group_key {
                Some(group_key) => rows::unread_group(write.conn(), user, group_key).await?,
                None => None,
            };
            let row = match (group, limit) {
                (Some(group), _) => rows::fold_into(write.conn(), group, &new, now).await?,
                (None, Err(wait)) => {
                    longest_wait = longest_wait.max(wait);
                    answer.rate_limited.push(user.to_string());
                    continue;
                }
                (None, Ok(())) => rows::insert(write.conn(), user, &new, now).await?,
            };
            answer.created.push(send_notification(&mut write, user, row).await?);
        }
        if answer.rate_limited.len() == new.recipients.len() {
            return Err(ApiError::RateLimited { retry_after_secs: retry_after_secs(longest_wait) });
        }

        let body = serde_json::to_string(&answer).map_err(|e| ApiError::Internal(e.into()))?;
        if let Some(key) = &key {
            let answer = idempotency::StoredAnswer { request_hash: key.request_hash.clone(), status: 201, body: body.clone() };
            idempotency::remember(write.conn(), caller.as_str(), key.key, &answer).await?;
        }
        write.commit().await?;
        Ok(PublishOutcome { status: 201, body, replayed: false })
    }

    /// The effective preference of each recipient for the type, by user id.
    async fn preferences_for(&self, conn: &impl ConnectionTrait, new: &NewNotification) -> Result<HashMap<String, Preference>, ApiError> {
        let mut found = HashMap::new();
        for chunk in new.recipients.chunks(500) {
            let users: Vec<&str> = chunk.iter().map(UserId::as_str).collect();
            for row in preferences::for_type(conn, &users, new.kind.as_str()).await? {
                found.insert(row.user_id.clone(), Preference::from(row));
            }
        }
        Ok(found)
    }

    /// The user's preferences: every type they changed or received, with
    /// the operator's default where they never chose.
    pub async fn preferences(&self, user: &UserId) -> Result<Vec<Preference>, ApiError> {
        let db = self.log.db();
        let mut by_type: std::collections::BTreeMap<String, Preference> = preferences::received_types(db, user)
            .await?
            .into_iter()
            .map(|kind| (kind.clone(), Preference { kind, enabled: true, channels: self.policy.default_channels }))
            .collect();
        for row in preferences::of_user(db, user).await? {
            by_type.insert(row.kind.clone(), Preference::from(row));
        }
        Ok(by_type.into_values().collect())
    }

    /// Sets the user's preference for one type.
    pub async fn set_preference(&self, user: &UserId, kind: &NotificationType, update: PreferenceUpdate) -> Result<Preference, ApiError> {
        let channels = update.channels.unwrap_or_default().resolve(self.policy.default_channels);
        let row = preferences::upsert(self.log.db(), user, kind.as_str(), update.enabled, channels).await?;
        Ok(Preference::from(row))
    }

    /// Per-type statistics, computed from the stored notifications.
    pub async fn stats(&self, kind: Option<&NotificationType>, since: Option<chrono::DateTime<Utc>>) -> Result<Vec<TypeStats>, ApiError> {
        let rows = rows::stats(self.log.db(), kind.map(NotificationType::as_str), since).await?;
        Ok(rows
            .into_iter()
            .map(|(kind, sent, read, clicked)| {
                let (sent, read, clicked) = (sent.max(0) as u64, read.max(0) as u64, clicked.max(0) as u64);
                let rate = |n: u64| if sent == 0 { 0.0 } else { n as f64 / sent as f64 };
                TypeStats { kind, sent, read, clicked, read_rate: rate(read), click_rate: rate(clicked) }
            })
            .collect())
    }

    /// A page of the user's notifications, newest first.
    pub async fn list(&self, user: &UserId, query: ListQuery) -> Result<Page, ApiError> {
        let filter = rows::ListFilter {
            unread_only: query.unread_only,
            kind: query.kind.as_deref(),
            before_id: query.cursor,
            limit: query.limit + 1,
        };
        let mut found = rows::list(self.log.db(), user, filter, Utc::now()).await?;
        let next_cursor = if found.len() as u64 > query.limit {
            found.truncate(query.limit as usize);
            found.last().map(|row| row.id.to_string())
        } else {
            None
        };
        Ok(Page { items: found.into_iter().map(Notification::from).collect(), next_cursor })
    }

    /// The user's unread count.
    pub async fn unread_count(&self, user: &UserId) -> Result<u64, ApiError> {
        Ok(rows::unread_count(self.log.db(), user, Utc::now()).await?)
    }

    /// Marks one notification read and tells every stream of the user.
    pub async fn read(&self, user: &UserId, id: i64) -> Result<Notification, ApiError> {
        self.read_one(user, id, false).await
    }

    /// Marks every unread notification (optionally of one type) read.
    pub async fn read_all(&self, user: &UserId, kind: Option<&str>) -> Result<u64, ApiError> {
        let mut write = self.log.write().await?;
        let now = truncate_to_millis(Utc::now());
        let ids = rows::unread_ids(write.conn(), user, kind, now).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut updated = 0;
        for chunk in ids.chunks(READ_EVENT_MAX_IDS) {
            updated += mark_read_and_report(&mut write, user, chunk, now).await?;
        }
        announce_unread_count(&mut write, user).await?;
        write.commit().await?;
        Ok(updated)
    }

    /// Records a click, which also marks the notification read.
    pub async fn click(&self, user: &UserId, id: i64) -> Result<Notification, ApiError> {
        self.read_one(user, id, true).await
    }

    /// Marks one notification read (a no-op if it already is), recording a
    /// click first when asked.
    async fn read_one(&self, user: &UserId, id: i64, clicked: bool) -> Result<Notification, ApiError> {
        let mut write = self.log.write().await?;
        let now = truncate_to_millis(Utc::now());
        let mut row = rows::find(write.conn(), user, id, now).await?.ok_or(ApiError::NotFound)?;
        if clicked {
            rows::mark_clicked(write.conn(), id, now).await?;
        }
        if row.read_at.is_none() {
            mark_read_and_report(&mut write, user, &[id], now).await?;
            announce_unread_count(&mut write, user).await?;
            row.read_at = Some(now);
        }
        write.commit().await?;
        Ok(row.into())
    }

    /// Deletes a notification for its owner.
    pub async fn delete(&self, user: &UserId, id: i64) -> Result<(), ApiError> {
        let mut write = self.log.write().await?;
        let now = truncate_to_millis(Utc::now());
        let row = rows::find(write.conn(), user, id, now).await?.ok_or(ApiError::NotFound)?;
        rows::mark_deleted(write.conn(), id, now).await?;
        write.append(&Topic::user(user), events::NOTIFICATION_DELETED, &NotificationDeleted { id }).await?;
        if row.read_at.is_none() {
            announce_unread_count(&mut write, user).await?;
        }
        write.commit().await?;
        Ok(())
    }
}

/// Appends the `notification` event that carries `row` to its owner and
/// remembers the event's id on the row.
async fn send_notification(write: &mut LogWrite, user: &UserId, mut row: entity::notification::Model) -> Result<Notification, ApiError> {
    let notification = Notification::from(row.clone());
    let event_id = write.append(&Topic::user(user), events::NOTIFICATION, &notification).await?;
    rows::set_event_id(write.conn(), row.id, event_id.get()).await?;
    row.event_id = event_id.get();
    announce_unread_count(write, user).await?;
    Ok(notification)
}

/// Marks `ids` read and appends one `notification.read` event for them.
async fn mark_read_and_report(write: &mut LogWrite, user: &UserId, ids: &[i64], now: chrono::DateTime<Utc>) -> Result<u64, ApiError> {
    let changed = rows::mark_read(write.conn(), ids, now).await?;
    write.append(&Topic::user(user), events::NOTIFICATION_READ, &NotificationRead { ids }).await?;
    Ok(changed)
}

/// Counts the user's unread notifications inside the write and queues the
/// `unread_count` state event that follows the write's events.
async fn announce_unread_count(write: &mut LogWrite, user: &UserId) -> Result<(), ApiError> {
    let count = rows::unread_count(write.conn(), user, Utc::now()).await?;
    write.announce(&Topic::user(user), events::UNREAD_COUNT, &UnreadCount { count });
    Ok(())
}

/// The log position and unread count a stream reports when it starts or
/// catches up. The position is read first: the count then reflects at least
/// every event up to it, so a stream that skips queued counts at or below
/// that position never skips one fresher than what it sent.
pub async fn unread_state(conn: &impl sea_orm::ConnectionTrait, user: &UserId, topics: &[Topic]) -> Result<(crate::domain::EventId, u64), sea_orm::DbErr> {
    let position = event_log::head(conn, topics).await?;
    let count = rows::unread_count(conn, user, Utc::now()).await?;
    Ok((position, count))
}
