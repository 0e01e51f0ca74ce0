//! Remembered answers for `Idempotency-Key`.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, EntityTrait, Set};

use entity::idempotency_key::{self, Entity as IdempotencyKeys};

/// A remembered answer.
pub struct StoredAnswer {
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

/// The answer given earlier to `caller` for `key`, if any.
pub async fn find(conn: &impl ConnectionTrait, caller: &str, key: &str) -> Result<Option<StoredAnswer>, DbErr> {
    Ok(IdempotencyKeys::find_by_id((caller.to_owned(), key.to_owned()))
        .one(conn)
        .await?
        .map(|row| StoredAnswer {
            request_hash: row.request_hash,
            status: u16::try_from(row.status).unwrap_or(200),
            body: row.response,
        }))
}

/// Remembers an answer, in the same transaction as the effects it reports,
/// so that either both exist or neither does.
pub async fn remember(conn: &impl ConnectionTrait, caller: &str, key: &str, answer: &StoredAnswer) -> Result<(), DbErr> {
    idempotency_key::ActiveModel {
        caller: Set(caller.to_owned()),
        key: Set(key.to_owned()),
        request_hash: Set(answer.request_hash.clone()),
        status: Set(i32::from(answer.status)),
        response: Set(answer.body.clone()),
        created_at: Set(Utc::now()),
    }
    .insert(conn)
    .await?;
    Ok(())
}
