//! Conversations.

use sea_orm::entity::prelude::*;

/// A conversation; its members are in `member`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub title: Option<String>,
    pub created_by: String,
    pub created_at: DateTimeUtc,
    /// The last message's time (or the creation time): lists sort by it.
    pub last_activity_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
