//! Announcements: one notification for many users, stored once.
//!
//! An announcement is one row whatever the size of its audience (`all`, or
//! the readers of a topic). What is per user is written only when that
//! user acts on it: a mark (read, clicked, deleted). Marks compare with the
//! announcement's `updated_at`, so a grouped update is news again to all.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Announcements::Table)
                    .if_not_exists()
                    // Taken from the notifications' id sequence by the writer:
                    // one id space, so `/v1/notifications/{id}` and list
                    // cursors need not know which table a notification is in.
                    .col(big_integer(Announcements::Id).primary_key())
                    .col(string_null(Announcements::AudienceTopic))
                    .col(string(Announcements::Type))
                    .col(string(Announcements::Title))
                    .col(text(Announcements::Body))
                    .col(text_null(Announcements::Data))
                    .col(string_null(Announcements::ActionUrl))
                    .col(string_null(Announcements::GroupKey))
                    .col(integer(Announcements::Count).default(1))
                    .col(boolean(Announcements::Critical).default(false))
                    .col(timestamp_with_time_zone(Announcements::CreatedAt))
                    .col(timestamp_with_time_zone(Announcements::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Announcements::ExpiresAt))
                    .col(big_integer(Announcements::EventId))
                    .col(big_integer(Announcements::Seen).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AnnouncementMarks::Table)
                    .if_not_exists()
                    .col(big_integer(AnnouncementMarks::AnnouncementId))
                    .col(string(AnnouncementMarks::UserId))
                    .col(timestamp_with_time_zone_null(AnnouncementMarks::ReadAt))
                    .col(timestamp_with_time_zone_null(AnnouncementMarks::ClickedAt))
                    .col(timestamp_with_time_zone_null(AnnouncementMarks::DeletedAt))
                    .primary_key(Index::create().col(AnnouncementMarks::AnnouncementId).col(AnnouncementMarks::UserId))
                    .to_owned(),
            )
            .await?;
        // A user's marks, read with the live announcements: one probe per
        // announcement through the primary key; this one serves "my marks".
        manager
            .create_index(
                Index::create()
                    .name("announcement_marks_user")
                    .table(AnnouncementMarks::Table)
                    .col(AnnouncementMarks::UserId)
                    .col(AnnouncementMarks::AnnouncementId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(AnnouncementMarks::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Announcements::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Announcements {
    Table,
    Id,
    /// The topic whose readers are the audience; NULL for everyone.
    AudienceTopic,
    Type,
    Title,
    Body,
    Data,
    ActionUrl,
    GroupKey,
    Count,
    Critical,
    CreatedAt,
    UpdatedAt,
    ExpiresAt,
    EventId,
    /// Deliveries to streams, counted by the nodes: the statistics' `sent`.
    Seen,
}

#[derive(DeriveIden)]
enum AnnouncementMarks {
    Table,
    AnnouncementId,
    UserId,
    ReadAt,
    ClickedAt,
    DeletedAt,
}
