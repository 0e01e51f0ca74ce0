//! What one user did with one announcement.

use sea_orm::entity::prelude::*;

/// Written the first time a user reads, clicks or deletes an announcement;
/// a mark older than the announcement's `updated_at` no longer counts.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "announcement_marks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub announcement_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    pub read_at: Option<DateTimeUtc>,
    pub clicked_at: Option<DateTimeUtc>,
    pub deleted_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
