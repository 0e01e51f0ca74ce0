//! A browser's Web Push subscription.

use sea_orm::entity::prelude::*;

/// One device of `user_id`: where its push service takes messages for it
/// (`endpoint`) and the keys a payload is encrypted to (`p256dh`, `auth`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "push_subscriptions")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: String,
    #[sea_orm(column_type = "Text")]
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
    pub expires_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
