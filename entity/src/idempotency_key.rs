//! Answers remembered for `Idempotency-Key` retries.

use sea_orm::entity::prelude::*;

/// The answer given to the first request with this key from this caller.
/// The primary key (caller, key) is what makes a retry idempotent, also when
/// the retry lands on another node: the database, not a cache, decides.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    /// The `sub` of the token that sent the request: keys are per caller, so
    /// one backend cannot replay or probe another's answers.
    #[sea_orm(primary_key, auto_increment = false)]
    pub caller: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// SHA-256 of the request body: the same key with another body is an
    /// error, not a silent replay of an unrelated answer.
    pub request_hash: String,
    pub status: i32,
    #[sea_orm(column_type = "Text")]
    pub response: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
