//! Token revocations, one row per user.

use sea_orm::entity::prelude::*;

/// Every token of `user_id` issued (`iat`) before `revoked_before` is refused, until
/// `expires_at`, when the longest-lived of them has expired anyway. Both in
/// seconds since the epoch, the unit of JWT claims.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "revocations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    pub revoked_before: i64,
    pub expires_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
