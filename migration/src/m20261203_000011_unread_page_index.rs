//! The newest unread notifications of a user, in event order, straight from
//! an index: what every stream without a resume point reads first.
//!
//! The index it replaces, on `(user_id, read_at, deleted_at)`, found the
//! unread rows but not their order, so every such read sorted them in a
//! temporary b-tree (on SQLite, one opened per read, with its own page
//! cache, even for a user with nothing unread). With `event_id` last, the
//! rows come in order and the `LIMIT` stops the scan. The old index is a
//! prefix of the new one, so every other read it served is served still.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const OLD: &str = "notifications_user_unread";
const NEW: &str = "notifications_user_unread_event";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_index(unread_index(NEW, true)).await?;
        manager.drop_index(Index::drop().name(OLD).table(Notifications::Table).if_exists().to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.create_index(unread_index(OLD, false)).await?;
        manager.drop_index(Index::drop().name(NEW).table(Notifications::Table).if_exists().to_owned()).await
    }
}

/// The index of a user's unread notifications, with `event_id` last or not.
fn unread_index(name: &str, by_event: bool) -> IndexCreateStatement {
    let mut index = Index::create();
    index.name(name).table(Notifications::Table).col(Notifications::UserId).col(Notifications::ReadAt).col(Notifications::DeletedAt).if_not_exists();
    if by_event {
        index.col(Notifications::EventId);
    }
    index
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    UserId,
    ReadAt,
    DeletedAt,
    EventId,
}
