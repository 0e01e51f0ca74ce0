//! The outbox: one row per notification and channel beyond the page.

use sea_orm::entity::prelude::*;

/// A delivery of notification `notification_id` to `user_id` over
/// `channel` (and, for webhooks, endpoint `target`). `due_at` is when a
/// pending row may be taken; while a worker holds it, its lease's end.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "deliveries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub notification_id: i64,
    pub user_id: String,
    pub channel: String,
    pub target: Option<String>,
    pub status: String,
    pub attempts: i32,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    pub due_at: DateTimeUtc,
    pub idempotency_id: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
