//! Schema migrations of Tidings: the only place the schema changes.
//!
//! Migrations are dated and never edited once released; `tidings serve`
//! applies pending ones at start, `tidings migrate` applies them alone.
//! Every statement goes through sea-query so that the same migration runs
//! on SQLite and PostgreSQL.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_core;
mod m20261122_000002_policy;
mod m20261122_000003_chat;
mod m20261122_000004_event_routes;
mod m20261202_000005_unread_counters;
mod m20261202_000006_revocations;
mod m20261202_000007_topic_keys;
mod m20261202_000008_announcements;
mod m20261202_000009_outbox;
mod m20261202_000010_push;
mod m20261203_000011_unread_page_index;

/// The ordered list of every migration.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_core::Migration),
            Box::new(m20261122_000002_policy::Migration),
            Box::new(m20261122_000003_chat::Migration),
            Box::new(m20261122_000004_event_routes::Migration),
            Box::new(m20261202_000005_unread_counters::Migration),
            Box::new(m20261202_000006_revocations::Migration),
            Box::new(m20261202_000007_topic_keys::Migration),
            Box::new(m20261202_000008_announcements::Migration),
            Box::new(m20261202_000009_outbox::Migration),
            Box::new(m20261202_000010_push::Migration),
            Box::new(m20261203_000011_unread_page_index::Migration),
        ]
    }
}
