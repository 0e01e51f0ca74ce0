//! Unread counters: one row per user, kept by the writer in the same
//! transaction as every change to a notification's read or deleted state,
//! so that an unread count is a key lookup instead of a `COUNT(*)` over the
//! user's notifications.
//!
//! The counter holds the user's notifications that are neither read nor
//! deleted, expired or not: expiry is a matter of time, not of a write, so
//! the count shown subtracts the user's expired unread ones, which the
//! partial index below finds without touching the others.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(UnreadCounters::Table)
                    .if_not_exists()
                    .col(string(UnreadCounters::UserId).primary_key())
                    .col(big_integer(UnreadCounters::Count).default(0))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // Backfill from the notifications stored so far.
        db.execute_unprepared(
            "INSERT INTO unread_counters (user_id, count) \
             SELECT user_id, COUNT(*) FROM notifications \
             WHERE read_at IS NULL AND deleted_at IS NULL GROUP BY user_id",
        )
        .await?;
        // Partial indexes are spelled the same on SQLite and PostgreSQL.
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS notifications_expiring_unread ON notifications (user_id, expires_at) \
             WHERE expires_at IS NOT NULL AND read_at IS NULL AND deleted_at IS NULL",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS notifications_expiring_unread")
            .await?;
        manager.drop_table(Table::drop().table(UnreadCounters::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum UnreadCounters {
    Table,
    UserId,
    Count,
}
