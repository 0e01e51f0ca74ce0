//! Notifications: what a backend told a user, and what the user did with it.

use sea_orm::entity::prelude::*;

/// A notification row. Deletion is soft (`deleted_at`) so that statistics
/// stay computed from stored facts.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: String,
    #[sea_orm(column_name = "type")]
    pub kind: String,
    pub title: String,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    /// Compact JSON object, or NULL.
    #[sea_orm(column_type = "Text", nullable)]
    pub data: Option<String>,
    pub action_url: Option<String>,
    pub group_key: Option<String>,
    pub count: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    pub read_at: Option<DateTimeUtc>,
    pub clicked_at: Option<DateTimeUtc>,
    pub deleted_at: Option<DateTimeUtc>,
    /// Id of the latest `notification` event that carried this notification:
    /// the id it is sent with when a fresh stream replays unread ones.
    pub event_id: i64,
    /// Published with `critical`: it bypassed the preferences, and a push
    /// of it goes with `Urgency: high`.
    pub critical: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
