//! Conversations, members, membership windows and messages.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, sea_query::Expr,
};

use crate::domain::{EventId, UserId};
use entity::{conversation, member, member_period, message};

/// Creates a conversation row.
pub async fn create_conversation(conn: &impl ConnectionTrait, title: Option<String>, creator: &UserId, now: DateTime<Utc>) -> Result<conversation::Model, DbErr> {
    conversation::ActiveModel {
        title: Set(title),
        created_by: Set(creator.as_str().to_owned()),
        created_at: Set(now),
        last_activity_at: Set(now),
        ..Default::default()
    }
    .insert(conn)
    .await
}

/// A conversation by id.
pub async fn conversation(conn: &impl ConnectionTrait, id: i64) -> Result<Option<conversation::Model>, DbErr> {
    conversation::Entity::find_by_id(id).one(conn).await
}

/// Moves a conversation's activity time (a new message).
pub async fn touch(conn: &impl ConnectionTrait, id: i64, at: DateTime<Utc>) -> Result<(), DbErr> {
    conversation::Entity::update_many()
        .col_expr(conversation::Column::LastActivityAt, Expr::value(at))
        .filter(conversation::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// The user's membership of a conversation, if current.
pub async fn membership(conn: &impl ConnectionTrait, conversation_id: i64, user: &UserId) -> Result<Option<member::Model>, DbErr> {
    member::Entity::find_by_id((conversation_id, user.as_str().to_owned())).one(conn).await
}

/// The member ids of a conversation, in joining order.
pub async fn member_ids(conn: &impl ConnectionTrait, conversation_id: i64) -> Result<Vec<String>, DbErr> {
    member::Entity::find()
        .select_only()
        .column(member::Column::UserId)
        .filter(member::Column::ConversationId.eq(conversation_id))
        .order_by_asc(member::Column::JoinedEventId)
        .order_by_asc(member::Column::UserId)
        .into_tuple()
        .all(conn)
        .await
}

/// The user's current memberships.
pub async fn memberships_of(conn: &impl ConnectionTrait, user: &UserId) -> Result<Vec<member::Model>, DbErr> {
    member::Entity::find().filter(member::Column::UserId.eq(user.as_str())).all(conn).await
}

/// The memberships of each of `users`, in one statement: what a surge of
/// stream opens reads together (see `crate::coalesce`). A user repeated in
/// `users` is read once; every user is in the map, members or not.
pub async fn memberships_of_many(conn: &impl ConnectionTrait, users: &[&str]) -> Result<HashMap<String, Vec<member::Model>>, DbErr> {
    let mut found: HashMap<String, Vec<member::Model>> = users.iter().map(|user| ((*user).to_owned(), Vec::new())).collect();
    let rows = member::Entity::find().filter(member::Column::UserId.is_in(users.iter().copied())).all(conn).await?;
    for row in rows {
        found.entry(row.user_id.clone()).or_default().push(row);
    }
    Ok(found)
}

/// Adds a member whose window opens at `joined_event_id`.
pub async fn add_member(conn: &impl ConnectionTrait, conversation_id: i64, user: &UserId, joined_event_id: EventId, now: DateTime<Utc>) -> Result<(), DbErr> {
    member::ActiveModel {
        conversation_id: Set(conversation_id),
        user_id: Set(user.as_str().to_owned()),
        joined_at: Set(now),
        joined_event_id: Set(joined_event_id.get()),
        last_read_message_id: Set(None),
    }
    .insert(conn)
    .await?;
    member_period::ActiveModel {
        conversation_id: Set(conversation_id),
        user_id: Set(user.as_str().to_owned()),
        from_event_id: Set(joined_event_id.get()),
        until_event_id: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Removes a member; their window closes at `left_event_id`.
pub async fn remove_member(conn: &impl ConnectionTrait, conversation_id: i64, user: &UserId, left_event_id: EventId) -> Result<(), DbErr> {
    member::Entity::delete_by_id((conversation_id, user.as_str().to_owned())).exec(conn).await?;
    member_period::Entity::update_many()
        .col_expr(member_period::Column::UntilEventId, Expr::value(left_event_id.get()))
        .filter(member_period::Column::ConversationId.eq(conversation_id))
        .filter(member_period::Column::UserId.eq(user.as_str()))
        .filter(member_period::Column::UntilEventId.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// The user's membership windows that reach past `after`.
pub async fn periods_after(conn: &impl ConnectionTrait, user: &UserId, after: EventId) -> Result<Vec<member_period::Model>, DbErr> {
    member_period::Entity::find()
        .filter(member_period::Column::UserId.eq(user.as_str()))
        .filter(
            Condition::any()
                .add(member_period::Column::UntilEventId.is_null())
                .add(member_period::Column::UntilEventId.gt(after.get())),
        )
        .all(conn)
        .await
}

/// The membership periods of each of `users` still open after `after`
/// (see [`periods_after`]), in one statement: a batch of resuming streams
/// takes the smallest of their resume points and keeps its own.
pub async fn periods_after_of_many(conn: &impl ConnectionTrait, users: &[&str], after: EventId) -> Result<HashMap<String, Vec<member_period::Model>>, DbErr> {
    let rows = member_period::Entity::find()
        .filter(member_period::Column::UserId.is_in(users.iter().copied()))
        .filter(
            Condition::any()
                .add(member_period::Column::UntilEventId.is_null())
                .add(member_period::Column::UntilEventId.gt(after.get())),
        )
        .all(conn)
        .await?;
    let mut found: HashMap<String, Vec<member_period::Model>> = HashMap::new();
    for row in rows {
        found.entry(row.user_id.clone()).or_default().push(row);
    }
    Ok(found)
}

/// Moves the read mark forward (never back); returns the mark now in force.
pub async fn advance_read_mark(conn: &impl ConnectionTrait, conversation_id: i64, user: &UserId, message_id: i64) -> Result<i64, DbErr> {
    member::Entity::update_many()
        .col_expr(member::Column::LastReadMessageId, Expr::value(message_id))
        .filter(member::Column::ConversationId.eq(conversation_id))
        .filter(member::Column::UserId.eq(user.as_str()))
        .filter(
            Condition::any()
                .add(member::Column::LastReadMessageId.is_null())
                .add(member::Column::LastReadMessageId.lt(message_id)),
        )
        .exec(conn)
        .await?;
    Ok(membership(conn, conversation_id, user).await?.and_then(|m| m.last_read_message_id).unwrap_or(message_id))
}

/// Messages of others after the member's read mark: the unread count, derived
/// from the messages themselves so it cannot drift.
pub async fn unread_count(conn: &impl ConnectionTrait, conversation_id: i64, user: &UserId, read_mark: Option<i64>) -> Result<u64, DbErr> {
    message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::SenderId.ne(user.as_str()))
        .filter(message::Column::DeletedAt.is_null())
        .filter(message::Column::Id.gt(read_mark.unwrap_or(0)))
        .count(conn)
        .await
}

/// Stores a message whose id the writer allocated.
pub async fn insert_message(conn: &impl ConnectionTrait, row: message::Model) -> Result<message::Model, DbErr> {
    message::ActiveModel::from(row).insert(conn).await
}

/// The message a sender already sent with this client id, if any.
pub async fn by_client_id(conn: &impl ConnectionTrait, conversation_id: i64, sender: &UserId, client_message_id: &str) -> Result<Option<message::Model>, DbErr> {
    message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::SenderId.eq(sender.as_str()))
        .filter(message::Column::ClientMessageId.eq(client_message_id))
        .one(conn)
        .await
}

/// One message of a conversation.
pub async fn message(conn: &impl ConnectionTrait, conversation_id: i64, id: i64) -> Result<Option<message::Model>, DbErr> {
    message::Entity::find_by_id(id)
        .filter(message::Column::ConversationId.eq(conversation_id))
        .one(conn)
        .await
}

/// The newest message of a conversation.
pub async fn last_message(conn: &impl ConnectionTrait, conversation_id: i64) -> Result<Option<message::Model>, DbErr> {
    message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .order_by_desc(message::Column::Id)
        .one(conn)
        .await
}

/// A page of a conversation's messages, newest first, before `before`.
pub async fn messages(conn: &impl ConnectionTrait, conversation_id: i64, before: Option<i64>, limit: u64) -> Result<Vec<message::Model>, DbErr> {
    let mut query = message::Entity::find().filter(message::Column::ConversationId.eq(conversation_id));
    if let Some(before) = before {
        query = query.filter(message::Column::Id.lt(before));
    }
    query.order_by_desc(message::Column::Id).limit(limit).all(conn).await
}

/// Saves an edited or deleted message.
pub async fn save_message(conn: &impl ConnectionTrait, row: message::Model) -> Result<message::Model, DbErr> {
    let mut active: message::ActiveModel = row.clone().into();
    active.content = Set(row.content);
    active.edited_at = Set(row.edited_at);
    active.deleted_at = Set(row.deleted_at);
    active.update(conn).await
}

/// The conversations `user` is a member of now.
async fn conversation_ids_of(conn: &impl ConnectionTrait, user: &UserId) -> Result<Vec<i64>, DbErr> {
    member::Entity::find()
        .select_only()
        .column(member::Column::ConversationId)
        .filter(member::Column::UserId.eq(user.as_str()))
        .into_tuple()
        .all(conn)
        .await
}

/// `(conversation, member)` pairs of the memberships matching `filter`.
async fn member_pairs(conn: &impl ConnectionTrait, filter: Condition) -> Result<Vec<(i64, String)>, DbErr> {
    member::Entity::find()
        .select_only()
        .column(member::Column::ConversationId)
        .column(member::Column::UserId)
        .filter(filter)
        .into_tuple()
        .all(conn)
        .await
}

/// [`contacts`] of each of `users`, in two statements whatever their
/// number (one if none is a member anywhere): presence changes announced
/// together, e.g. a surge of streams opening, read their audiences together.
pub async fn contacts_of_many(conn: &impl ConnectionTrait, users: &[&str]) -> Result<HashMap<String, Vec<String>>, DbErr> {
    let mut contacts: HashMap<String, Vec<String>> = users.iter().map(|user| ((*user).to_owned(), Vec::new())).collect();
    let memberships = member_pairs(conn, Condition::all().add(member::Column::UserId.is_in(users.iter().copied()))).await?;
    let mut conversations: Vec<i64> = memberships.iter().map(|(conversation, _)| *conversation).collect();
    conversations.sort_unstable();
    conversations.dedup();
    let mut members_of: HashMap<i64, Vec<String>> = HashMap::new();
    for chunk in conversations.chunks(1000) {
        for (conversation, member) in member_pairs(conn, Condition::all().add(member::Column::ConversationId.is_in(chunk.iter().copied()))).await? {
            members_of.entry(conversation).or_default().push(member);
        }
    }
    for (conversation, user) in memberships {
        let found = contacts.entry(user.clone()).or_default();
        found.extend(members_of.get(&conversation).into_iter().flatten().filter(|member| **member != user).cloned());
    }
    for found in contacts.values_mut() {
        found.sort_unstable();
        found.dedup();
    }
    Ok(contacts)
}

/// Ids of users who share at least one conversation with `user` (not `user`).
pub async fn contacts(conn: &impl ConnectionTrait, user: &UserId) -> Result<Vec<String>, DbErr> {
    Ok(contacts_of_many(conn, &[user.as_str()]).await?.remove(user.as_str()).unwrap_or_default())
}

/// Ids of users who share a conversation with `user` in which both have
/// sent a message (not `user`): the audience of presence with
/// `TIDINGS_PRESENCE_VISIBILITY=contacts`. Both must still be members.
pub async fn correspondents(conn: &impl ConnectionTrait, user: &UserId) -> Result<Vec<String>, DbErr> {
    let conversations = conversation_ids_of(conn, user).await?;
    if conversations.is_empty() {
        return Ok(Vec::new());
    }
    let written: Vec<i64> = message::Entity::find()
        .select_only()
        .column(message::Column::ConversationId)
        .distinct()
        .filter(message::Column::ConversationId.is_in(conversations))
        .filter(message::Column::SenderId.eq(user.as_str()))
        .into_tuple()
        .all(conn)
        .await?;
    if written.is_empty() {
        return Ok(Vec::new());
    }
    let senders: std::collections::HashSet<(i64, String)> = message::Entity::find()
        .select_only()
        .column(message::Column::ConversationId)
        .column(message::Column::SenderId)
        .distinct()
        .filter(message::Column::ConversationId.is_in(written.clone()))
        .filter(message::Column::SenderId.ne(user.as_str()))
        .into_tuple()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    let members: Vec<(i64, String)> = member::Entity::find()
        .select_only()
        .column(member::Column::ConversationId)
        .column(member::Column::UserId)
        .filter(member::Column::ConversationId.is_in(written))
        .filter(member::Column::UserId.ne(user.as_str()))
        .into_tuple()
        .all(conn)
        .await?;
    let mut correspondents: Vec<String> = members.into_iter().filter(|m| senders.contains(m)).map(|(_, user)| user).collect();
    correspondents.sort();
    correspondents.dedup();
    Ok(correspondents)
}

/// Whether `user` was a member of the conversation and left it (a closed
/// membership window and no current membership): others may not add them
/// back.
pub async fn has_left(conn: &impl ConnectionTrait, conversation_id: i64, user: &UserId) -> Result<bool, DbErr> {
    let left = member_period::Entity::find()
        .filter(member_period::Column::ConversationId.eq(conversation_id))
        .filter(member_period::Column::UserId.eq(user.as_str()))
        .filter(member_period::Column::UntilEventId.is_not_null())
        .count(conn)
        .await?;
    Ok(left > 0)
}
