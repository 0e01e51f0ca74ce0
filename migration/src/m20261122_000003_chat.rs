//! Chat: conversations, their members (with the log windows in which each
//! member receives the conversation's events) and messages.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Conversations::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Conversations::Id))
                    .col(string_null(Conversations::Title))
                    .col(string(Conversations::CreatedBy))
                    .col(timestamp_with_time_zone(Conversations::CreatedAt))
                    .col(timestamp_with_time_zone(Conversations::LastActivityAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Members::Table)
                    .if_not_exists()
                    .col(big_integer(Members::ConversationId))
                    .col(string(Members::UserId))
                    .col(timestamp_with_time_zone(Members::JoinedAt))
                    .col(big_integer(Members::JoinedEventId))
                    .col(big_integer_null(Members::LastReadMessageId))
                    .primary_key(Index::create().col(Members::ConversationId).col(Members::UserId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("members_user").table(Members::Table).col(Members::UserId).to_owned())
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MemberPeriods::Table)
                    .if_not_exists()
                    .col(big_pk_auto(MemberPeriods::Id))
                    .col(big_integer(MemberPeriods::ConversationId))
                    .col(string(MemberPeriods::UserId))
                    .col(big_integer(MemberPeriods::FromEventId))
                    .col(big_integer_null(MemberPeriods::UntilEventId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("member_periods_user")
                    .table(MemberPeriods::Table)
                    .col(MemberPeriods::UserId)
                    .col(MemberPeriods::ConversationId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Messages::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Messages::Id))
                    .col(big_integer(Messages::ConversationId))
                    .col(string(Messages::SenderId))
                    .col(text_null(Messages::Content))
                    .col(string_null(Messages::ClientMessageId))
                    .col(big_integer_null(Messages::ReplyTo))
                    .col(timestamp_with_time_zone(Messages::CreatedAt))
                    .col(timestamp_with_time_zone_null(Messages::EditedAt))
                    .col(timestamp_with_time_zone_null(Messages::DeletedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("messages_conversation_id")
                    .table(Messages::Table)
                    .col(Messages::ConversationId)
                    .col(Messages::Id)
                    .to_owned(),
            )
            .await?;
        // A retried send with the same client_message_id can never store twice.
        manager
            .create_index(
                Index::create()
                    .name("messages_client_id")
                    .table(Messages::Table)
                    .col(Messages::ConversationId)
                    .col(Messages::SenderId)
                    .col(Messages::ClientMessageId)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Messages::Table.into_iden(),
            MemberPeriods::Table.into_iden(),
            Members::Table.into_iden(),
            Conversations::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    Title,
    CreatedBy,
    CreatedAt,
    LastActivityAt,
}

#[derive(DeriveIden)]
enum Members {
    Table,
    ConversationId,
    UserId,
    JoinedAt,
    JoinedEventId,
    LastReadMessageId,
}

#[derive(DeriveIden)]
enum MemberPeriods {
    Table,
    Id,
    ConversationId,
    UserId,
    FromEventId,
    UntilEventId,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    ConversationId,
    SenderId,
    Content,
    ClientMessageId,
    ReplyTo,
    CreatedAt,
    EditedAt,
    DeletedAt,
}
