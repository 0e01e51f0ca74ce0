//! Chat messages.

use sea_orm::entity::prelude::*;

/// A message. Deletion is soft: `content` becomes `None` and the row stays
/// as a tombstone, so replies and read marks keep pointing somewhere.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub conversation_id: i64,
    pub sender_id: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub content: Option<String>,
    pub client_message_id: Option<String>,
    pub reply_to: Option<i64>,
    pub created_at: DateTimeUtc,
    pub edited_at: Option<DateTimeUtc>,
    pub deleted_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
