//! Per-user unread counters, kept by the writer.

use sea_orm::entity::prelude::*;

/// How many of the user's notifications are neither read nor deleted
/// (expired ones included: the count shown subtracts those). Updated once
/// per user per write batch, so reading a count is one key lookup.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "unread_counters")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    pub count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
