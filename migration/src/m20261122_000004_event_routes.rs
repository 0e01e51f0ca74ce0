//! Membership changes stored with their events, so that a node which reads
//! events back from the log (the Redis bus's tail reader) routes them like
//! the node that wrote them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Events::Table).add_column(string_null(Events::Route)).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Events::Table).drop_column(Events::Route).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Route,
}
