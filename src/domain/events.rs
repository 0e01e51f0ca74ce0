//! The stream's vocabulary: every event name and payload in one place, so
//! that writers, the stream and the OpenAPI document cannot drift apart.

use serde::Serialize;

/// A notification was created or updated; data: the notification object.
pub const NOTIFICATION: &str = "notification";
/// Notifications became read; data: [`NotificationRead`].
pub const NOTIFICATION_READ: &str = "notification.read";
/// A notification was deleted; data: [`NotificationDeleted`].
pub const NOTIFICATION_DELETED: &str = "notification.deleted";
/// The user's unread count; data: [`UnreadCount`]. Never stored, no id.
pub const UNREAD_COUNT: &str = "unread_count";
/// The client's resume point is gone; data: [`Reset`]. No id.
pub const RESET: &str = "reset";

/// Data of `notification.read`: at most 500 ids an event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationRead<'a> {
    pub ids: &'a [i64],
}

/// Data of `notification.deleted`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationDeleted {
    pub id: i64,
}

/// Data of `unread_count`, and the body of `GET /v1/notifications/unread_count`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UnreadCount {
    pub count: u64,
}

/// Data of `reset`: an empty object. Drop local state and refetch it over REST.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reset {}

/// A message was sent; data: the message object.
pub const MESSAGE: &str = "message";
/// A message was edited; data: the message object.
pub const MESSAGE_UPDATED: &str = "message.updated";
/// A message was deleted; data: the message object with `content` null.
pub const MESSAGE_DELETED: &str = "message.deleted";
/// A read receipt; data: `ReadReceipt`.
pub const READ: &str = "read";
/// The user was added to a conversation, or it changed; data: the
/// conversation object as seen by the recipient.
pub const CONVERSATION: &str = "conversation";
/// Someone is typing, or stopped; data: `Typing`. Never stored, no id.
pub const TYPING: &str = "typing";
/// A user's presence changed; data: `PresenceView`. Never stored, no id.
pub const PRESENCE: &str = "presence";
