//! Web Push: the browsers' subscriptions (several devices per user), and
//! the `critical` flag kept on each notification, which a push sends as
//! `Urgency: high`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PushSubscriptions::Table)
                    .if_not_exists()
                    .col(big_pk_auto(PushSubscriptions::Id))
                    .col(string(PushSubscriptions::UserId))
                    .col(text(PushSubscriptions::Endpoint))
                    .col(string(PushSubscriptions::P256dh))
                    .col(string(PushSubscriptions::Auth))
                    .col(timestamp_with_time_zone_null(PushSubscriptions::ExpiresAt))
                    .col(timestamp_with_time_zone(PushSubscriptions::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("push_subscriptions_endpoint").table(PushSubscriptions::Table).col(PushSubscriptions::Endpoint).unique().to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("push_subscriptions_user").table(PushSubscriptions::Table).col(PushSubscriptions::UserId).to_owned())
            .await?;
        manager
            .alter_table(Table::alter().table(Notifications::Table).add_column(boolean(Notifications::Critical).default(false)).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Notifications::Table).drop_column(Notifications::Critical).to_owned()).await?;
        manager.drop_table(Table::drop().table(PushSubscriptions::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum PushSubscriptions {
    Table,
    Id,
    UserId,
    /// The push service's URL for this browser: unique, since a browser's
    /// endpoint belongs to whoever subscribed with it last.
    Endpoint,
    /// The browser's P-256 public key (base64url, uncompressed point).
    P256dh,
    /// The browser's 16-byte authentication secret (base64url).
    Auth,
    /// The browser's `expirationTime`, when it gave one.
    ExpiresAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Critical,
}
