//! Notification policy: per-user preferences, and the index that makes
//! "one unread notification per group key" a database fact.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Preferences::Table)
                    .if_not_exists()
                    .col(string(Preferences::UserId))
                    .col(string(Preferences::Type))
                    .col(boolean(Preferences::Enabled))
                    .col(boolean(Preferences::Web))
                    .col(boolean(Preferences::Email))
                    .col(boolean(Preferences::Push))
                    .col(timestamp_with_time_zone(Preferences::UpdatedAt))
                    .primary_key(Index::create().col(Preferences::UserId).col(Preferences::Type))
                    .to_owned(),
            )
            .await?;
        // Concurrent publishes with one group key can never leave two unread
        // notifications with that key: the second insert fails here.
        manager
            .create_index(
                Index::create()
                    .name("notifications_one_unread_group")
                    .table(Notifications::Table)
                    .col(Notifications::UserId)
                    .col(Notifications::GroupKey)
                    .unique()
                    .cond_where(
                        Condition::all()
                            .add(Expr::col(Notifications::ReadAt).is_null())
                            .add(Expr::col(Notifications::DeletedAt).is_null())
                            .add(Expr::col(Notifications::GroupKey).is_not_null()),
                    )
                    .to_owned(),
            )
            .await?;
        // Retention and statistics scan by age.
        manager
            .create_index(
                Index::create()
                    .name("events_created_at")
                    .table(Events::Table)
                    .col(Events::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("notifications_type_created")
                    .table(Notifications::Table)
                    .col(Notifications::Type)
                    .col(Notifications::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("notifications_type_created").table(Notifications::Table).to_owned()).await?;
        manager.drop_index(Index::drop().name("events_created_at").table(Events::Table).to_owned()).await?;
        manager.drop_index(Index::drop().name("notifications_one_unread_group").table(Notifications::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Preferences::Table).if_exists().to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Preferences {
    Table,
    UserId,
    Type,
    Enabled,
    Web,
    Email,
    Push,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    UserId,
    Type,
    GroupKey,
    ReadAt,
    DeletedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    CreatedAt,
}
