//! Webhook endpoints an operator registered.

use sea_orm::entity::prelude::*;

/// One endpoint: where deliveries go, the secret they are signed with, and
/// the types it wants (`types`: a JSON array, NULL for every type).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhooks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(column_type = "Text")]
    pub url: String,
    pub secret: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub types: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
