//! The core hub: the event log, notifications, idempotency keys, history floors.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Events::Id))
                    .col(string(Events::Topic))
                    .col(string(Events::Event))
                    .col(text(Events::Data))
                    .col(timestamp_with_time_zone(Events::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // Replay reads "topic = ? AND id > ? ORDER BY id": this index serves it.
        manager
            .create_index(
                Index::create()
                    .name("events_topic_id")
                    .table(Events::Table)
                    .col(Events::Topic)
                    .col(Events::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Notifications::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Notifications::Id))
                    .col(string(Notifications::UserId))
                    .col(string(Notifications::Type))
                    .col(string(Notifications::Title))
                    .col(text(Notifications::Body))
                    .col(text_null(Notifications::Data))
                    .col(string_null(Notifications::ActionUrl))
                    .col(string_null(Notifications::GroupKey))
                    .col(integer(Notifications::Count).default(1))
                    .col(timestamp_with_time_zone(Notifications::CreatedAt))
                    .col(timestamp_with_time_zone(Notifications::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Notifications::ExpiresAt))
                    .col(timestamp_with_time_zone_null(Notifications::ReadAt))
                    .col(timestamp_with_time_zone_null(Notifications::ClickedAt))
                    .col(timestamp_with_time_zone_null(Notifications::DeletedAt))
                    .col(big_integer(Notifications::EventId))
                    .to_owned(),
            )
            .await?;
        // Lists page by id within one user; unread counts filter on read_at.
        manager
            .create_index(
                Index::create()
                    .name("notifications_user_id")
                    .table(Notifications::Table)
                    .col(Notifications::UserId)
                    .col(Notifications::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("notifications_user_unread")
                    .table(Notifications::Table)
                    .col(Notifications::UserId)
                    .col(Notifications::ReadAt)
                    .col(Notifications::DeletedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .if_not_exists()
                    .col(string(IdempotencyKeys::Caller))
                    .col(string(IdempotencyKeys::Key))
                    .col(string(IdempotencyKeys::RequestHash))
                    .col(integer(IdempotencyKeys::Status))
                    .col(text(IdempotencyKeys::Response))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(IdempotencyKeys::Caller)
                            .col(IdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(HistoryFloors::Table)
                    .if_not_exists()
                    .col(string(HistoryFloors::Topic).primary_key())
                    .col(big_integer(HistoryFloors::Floor))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            HistoryFloors::Table.into_iden(),
            IdempotencyKeys::Table.into_iden(),
            Notifications::Table.into_iden(),
            Events::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    Topic,
    Event,
    Data,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    UserId,
    Type,
    Title,
    Body,
    Data,
    ActionUrl,
    GroupKey,
    Count,
    CreatedAt,
    UpdatedAt,
    ExpiresAt,
    ReadAt,
    ClickedAt,
    DeletedAt,
    EventId,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Caller,
    Key,
    RequestHash,
    Status,
    Response,
    CreatedAt,
}

#[derive(DeriveIden)]
enum HistoryFloors {
    Table,
    Topic,
    Floor,
}
