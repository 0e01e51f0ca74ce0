//! Broadcast topics: a named channel (a dashboard, a status page, an
//! organisation) whose events are stored once, whatever the number of
//! subscribers, and delivered to every stream that asked for the topic.
//!
//! A publish is one job of the [`Writer`]: one event on the topic `t:<name>`,
//! whose payload names its own id. Streams add topics with `?topic=` and
//! resume them with the same `Last-Event-ID` as the user's own events
//! (`stream`); who may read is decided by the token's `topics` patterns and
//! the operator's public topics ([`TopicAccess`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};

use crate::{
    auth::Principal,
    domain::{
        DomainError, EventId, Topic, TopicName,
        notification::{MAX_DATA_BYTES, MAX_DATA_DEPTH, NotificationType, depth, truncate_to_millis},
    },
    writer::Writer,
};
use entity::event;

/// The SSE event name of a topic's events.
pub const TOPIC_EVENT: &str = "topic.event";

/// Most topics one stream may add.
pub const MAX_STREAM_TOPICS: usize = 32;

/// Who may read which topics: the token's patterns and the public ones.
#[derive(Debug, Clone, Default)]
pub struct TopicAccess {
    /// Patterns every signed-in user may read (`TIDINGS_PUBLIC_TOPICS`).
    pub public: Vec<String>,
}

impl TopicAccess {
    /// Whether `principal` may read `name`. Publishers (scope `publish`)
    /// may read what they may write.
    pub fn may_read(&self, principal: &Principal, name: &TopicName) -> bool {
        principal.has_scope(crate::auth::PUBLISH_SCOPE) || principal.may_read(name.as_str(), &self.public)
    }
}

/// The body of `POST /v1/topics/{topic}/events`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicEventRequest {
    /// 1-50 characters of `a-z 0-9 _ . -`, as for notifications.
    #[serde(rename = "type")]
    #[schema(min_length = 1, max_length = 50, pattern = r"^[a-z0-9_.-]{1,50}$")]
    pub kind: String,
    /// A JSON object of at most 16 KiB, nested at most 16 levels deep.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Conflation key, 1-255 characters: a subscriber catching up after a
    /// gap gets only the newest event of the gap with this key.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub key: Option<String>,
}

/// A topic's event, as stored, sent (`event: topic.event`) and listed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopicEvent {
    /// The event id, the stream's `id:` too.
    pub id: i64,
    pub topic: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub key: Option<String>,
    #[serde(with = "crate::domain::notification::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

/// A page of a topic's history, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TopicPage {
    pub items: Vec<TopicEvent>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// A validated topic publish.
pub struct NewTopicEvent {
    kind: NotificationType,
    data: serde_json::Value,
    key: Option<String>,
}

impl TopicEventRequest {
    /// Applies the contract's rules; the first broken one names its field.
    pub fn validate(self) -> Result<NewTopicEvent, DomainError> {
        let kind = NotificationType::parse(&self.kind).map_err(|why| DomainError::invalid_field("type", format!("type {why}")))?;
        if !self.data.is_object() {
            return Err(DomainError::invalid_field("data", "data must be a JSON object"));
        }
        if depth(&self.data) > MAX_DATA_DEPTH {
            return Err(DomainError::invalid_field("data", "data must be nested at most 16 levels deep"));
        }
        if serde_json::to_vec(&self.data).map_or(usize::MAX, |encoded| encoded.len()) > MAX_DATA_BYTES {
            return Err(DomainError::invalid_field("data", "data must be at most 16 KiB when encoded"));
        }
        if let Some(key) = &self.key
            && (key.is_empty() || key.chars().count() > 255 || key.chars().any(char::is_control))
        {
            return Err(DomainError::invalid_field("key", "key must be 1-255 characters without control characters"));
        }
        Ok(NewTopicEvent { kind, data: self.data, key: self.key })
    }
}

/// Topic use cases.
pub struct Topics {
    writer: Arc<Writer>,
    /// The pool, for history reads.
    db: DatabaseConnection,
}

impl Topics {
    /// Topics writing through `writer`, reading from `db`.
    pub fn new(writer: Arc<Writer>, db: DatabaseConnection) -> Self {
        Topics { writer, db }
    }

    /// Appends one event to `name`: stored once, sent to every subscriber.
    pub async fn publish(&self, name: TopicName, new: NewTopicEvent) -> Result<TopicEvent, DomainError> {
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    let id = write.event_id().await?;
                    let event = TopicEvent {
                        id: id.get(),
                        topic: name.as_str().to_owned(),
                        kind: new.kind.as_str().to_owned(),
                        data: new.data,
                        key: new.key.clone(),
                        created_at: truncate_to_millis(Utc::now()),
                    };
                    write.append_keyed(id, &Topic::named(&name), TOPIC_EVENT, &event, new.key).await?;
                    Ok(event)
                })
            })
            .await
    }

    /// Up to `limit` events of `name` after `after`, oldest first.
    pub async fn history(&self, name: &TopicName, after: EventId, limit: u64) -> Result<TopicPage, DomainError> {
        let rows: Vec<String> = event::Entity::find()
            .select_only()
            .column(event::Column::Data)
            .filter(event::Column::Topic.eq(Topic::named(name).as_str()))
            .filter(event::Column::Id.gt(after.get()))
            .order_by_asc(event::Column::Id)
            .limit(limit + 1)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut items: Vec<TopicEvent> = rows.iter().filter_map(|data| serde_json::from_str(data).ok()).collect();
        let next_cursor = if items.len() as u64 > limit {
            items.truncate(limit as usize);
            items.last().map(|e| e.id.to_string())
        } else {
            None
        };
        Ok(TopicPage { items, next_cursor })
    }
}
