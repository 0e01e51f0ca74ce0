//! Current members of conversations.

use sea_orm::entity::prelude::*;

/// A user's current membership of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub conversation_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    pub joined_at: DateTimeUtc,
    /// The log position of the join: the member receives the
    /// conversation's events after it.
    pub joined_event_id: i64,
    /// The read mark: messages up to it are read. Only ever moves forward,
    /// and unread counts are derived from it, so they cannot drift.
    pub last_read_message_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
