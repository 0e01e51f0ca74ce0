//! Revocations: per user, the instant before which every token of theirs is
//! refused (`POST /v1/revocations`). One row per user, raised, never
//! lowered; a row is dropped once it expires, when every token it covers
//! has expired too.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Revocations::Table)
                    .if_not_exists()
                    .col(string(Revocations::UserId).primary_key())
                    .col(big_integer(Revocations::RevokedBefore))
                    .col(big_integer(Revocations::ExpiresAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Revocations::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Revocations {
    Table,
    UserId,
    /// Seconds since the epoch: tokens with an earlier `iat` are refused.
    RevokedBefore,
    /// Seconds since the epoch: after it the row covers no live token.
    ExpiresAt,
}
