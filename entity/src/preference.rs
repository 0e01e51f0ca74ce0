//! A user's choice for one notification type.

use sea_orm::entity::prelude::*;

/// Stored only once a user changes a type; absent rows mean the operator's default.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "preferences")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    #[sea_orm(primary_key, auto_increment = false, column_name = "type")]
    pub kind: String,
    pub enabled: bool,
    pub web: bool,
    pub email: bool,
    pub push: bool,
    pub webhook: bool,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
