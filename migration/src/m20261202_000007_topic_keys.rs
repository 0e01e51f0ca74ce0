//! Broadcast topics: an event may carry a conflation `key`. A subscriber
//! catching up after a gap gets, per key, only the newest event of the gap;
//! the partial index finds "a newer event with this key" without touching
//! keyless events.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Events::Table).add_column(string_null(Events::Key)).to_owned())
            .await?;
        manager
            .get_connection()
            .execute_unprepared("CREATE INDEX IF NOT EXISTS events_topic_key_id ON events (topic, key, id) WHERE key IS NOT NULL")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP INDEX IF EXISTS events_topic_key_id").await?;
        manager
            .alter_table(Table::alter().table(Events::Table).drop_column(Events::Key).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Key,
}
