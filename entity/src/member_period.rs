//! Membership windows: when each member received a conversation's events.

use sea_orm::entity::prelude::*;

/// One stretch of membership, in log positions: the member receives the
/// conversation's events with ids in `(from_event_id, until_event_id]`.
/// Replay reads these so that a member never receives events from before
/// joining or after leaving, whatever their resume point.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "member_periods")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub conversation_id: i64,
    pub user_id: String,
    pub from_event_id: i64,
    /// `None` while the membership lasts.
    pub until_event_id: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
