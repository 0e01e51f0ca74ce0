//! Channels beyond the page: templates per type, contacts, webhooks, and the
//! durable outbox of deliveries, plus the `webhook` channel of preferences.
//!
//! A delivery row is written in the same transaction as the notification it
//! serves, so a committed notification always has its deliveries and a
//! rolled-back one never does. Workers pick rows by `(status, due_at)`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Templates::Table)
                    .if_not_exists()
                    .col(string(Templates::Type))
                    .col(string(Templates::Locale))
                    .col(text(Templates::Title))
                    .col(text(Templates::Body))
                    .col(text_null(Templates::EmailSubject))
                    .col(text_null(Templates::EmailHtml))
                    .col(text_null(Templates::EmailText))
                    .col(timestamp_with_time_zone(Templates::UpdatedAt))
                    .primary_key(Index::create().col(Templates::Type).col(Templates::Locale))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Contacts::Table)
                    .if_not_exists()
                    .col(string(Contacts::UserId).primary_key())
                    .col(string_null(Contacts::Email))
                    .col(string_null(Contacts::Locale))
                    .col(string_null(Contacts::TimeZone))
                    .col(timestamp_with_time_zone(Contacts::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Webhooks::Table)
                    .if_not_exists()
                    .col(string(Webhooks::Id).primary_key())
                    .col(text(Webhooks::Url))
                    .col(string(Webhooks::Secret))
                    .col(text_null(Webhooks::Types))
                    .col(timestamp_with_time_zone(Webhooks::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Deliveries::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Deliveries::Id))
                    .col(big_integer(Deliveries::NotificationId))
                    .col(string(Deliveries::UserId))
                    .col(string(Deliveries::Channel))
                    .col(string_null(Deliveries::Target))
                    .col(string(Deliveries::Status))
                    .col(integer(Deliveries::Attempts).default(0))
                    .col(text_null(Deliveries::LastError))
                    .col(timestamp_with_time_zone(Deliveries::DueAt))
                    .col(string(Deliveries::IdempotencyId))
                    .col(timestamp_with_time_zone(Deliveries::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("deliveries_due").table(Deliveries::Table).col(Deliveries::Status).col(Deliveries::DueAt).to_owned())
            .await?;
        manager
            .create_index(Index::create().name("deliveries_notification").table(Deliveries::Table).col(Deliveries::NotificationId).to_owned())
            .await?;
        manager
            .create_index(Index::create().name("deliveries_idempotency").table(Deliveries::Table).col(Deliveries::IdempotencyId).unique().to_owned())
            .await?;
        manager
            .alter_table(Table::alter().table(Preferences::Table).add_column(boolean(Preferences::Webhook).default(true)).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Preferences::Table).drop_column(Preferences::Webhook).to_owned()).await?;
        for table in [Deliveries::Table.into_iden(), Webhooks::Table.into_iden(), Contacts::Table.into_iden(), Templates::Table.into_iden()] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Templates {
    Table,
    Type,
    /// A BCP 47 tag, or `""` for the default a locale falls back to.
    Locale,
    Title,
    Body,
    EmailSubject,
    EmailHtml,
    EmailText,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Contacts {
    Table,
    UserId,
    Email,
    Locale,
    TimeZone,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Webhooks {
    Table,
    Id,
    Url,
    /// The `whsec_` secret deliveries are signed with.
    Secret,
    /// A JSON array of types, or NULL for every type.
    Types,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Deliveries {
    Table,
    Id,
    NotificationId,
    UserId,
    /// `email`, `push` or `webhook`.
    Channel,
    /// Which endpoint of the channel (a webhook's id); NULL when the
    /// channel has one way to the user.
    Target,
    /// `pending`, `sent`, `failed` or `skipped`.
    Status,
    Attempts,
    LastError,
    /// When a pending row may be taken next; while a worker holds it, the
    /// end of its lease.
    DueAt,
    /// Stable across retries: the receiver's key for de-duplication.
    IdempotencyId,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Preferences {
    Table,
    Webhook,
}
