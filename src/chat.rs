//! Chat use cases: conversations, membership, messages, read receipts and
//! typing, all delivered over the same per-user stream.
//!
//! Every change is one job of the [`Writer`]. Messages, edits, deletions and
//! receipts are single events on the conversation's topic, delivered to the
//! members connected to each node through the registry: the cost of an
//! event is one append plus one push per connected member, never a query per
//! member. Membership changes are events on each affected user's own topic
//! that carry a route change, so the registry moves the user's connections
//! onto or off the conversation's topic exactly at that point of the log.

use std::sync::Arc;

use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::{
    domain::{
        DomainError,
        EventId, Topic, UserId,
        chat::{Conversation, ConversationUnread, Message, MessagePage, NewConversation, NewMessage, ReadReceipt, validate_content, validate_short, MAX_INITIAL_MEMBERS},
        events,
        notification::truncate_to_millis,
    },
    hub::RouteChange,
    store::chat as rows,
    typing::TypingTracker,
    writer::{LogWrite, PlainSend, Writer},
};

/// What sending a message did.
pub struct Sent {
    pub message: Message,
    /// False when a retry found the message already stored.
    pub created: bool,
}

/// Chat over the event log.
pub struct Chat {
    writer: Arc<Writer>,
    /// The pool, for reads.
    db: DatabaseConnection,
    typing: Arc<TypingTracker>,
}

impl Chat {
    /// Chat use cases writing through `writer` and reading from `db`.
    pub fn new(writer: Arc<Writer>, db: DatabaseConnection, typing: Arc<TypingTracker>) -> Self {
        Chat { writer, db, typing }
    }

    /// Creates a conversation of the caller and `members`; each member
    /// receives it as a `conversation` event.
    pub async fn create(&self, caller: &UserId, request: NewConversation) -> Result<Conversation, DomainError> {
        validate_short("title", request.title.as_deref())?;
        if request.members.len() > MAX_INITIAL_MEMBERS {
            return Err(DomainError::invalid_field("members", "at most 1000 members"));
        }
        let mut members = vec![caller.clone()];
        for raw in request.members {
            let user = UserId::parse(raw).map_err(|why| DomainError::invalid_field("members", format!("user id {why}")))?;
            if !members.contains(&user) {
                members.push(user);
            }
        }
        let (caller, title) = (caller.clone(), request.title);
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    let now = truncate_to_millis(Utc::now());
                    let row = rows::create_conversation(write.conn(), title, &caller, now).await?;
                    let member_ids: Vec<String> = members.iter().map(ToString::to_string).collect();
                    let fresh = Conversation {
                        id: row.id,
                        title: row.title.clone(),
                        members: member_ids,
                        created_at: row.created_at,
                        last_message: None,
                        unread_count: 0,
                    };
                    for member in &members {
                        let joined = join_event(write, member, &fresh).await?;
                        rows::add_member(write.conn(), row.id, member, joined, now).await?;
                    }
                    Ok(fresh)
                })
            })
            .await
    }

    /// The caller's conversations, most recent activity first.
    pub async fn list(&self, caller: &UserId) -> Result<Vec<Conversation>, DomainError> {
        let db = &self.db;
        let mut found = Vec::new();
        for membership in rows::memberships_of(db, caller).await? {
            if let Some(row) = rows::conversation(db, membership.conversation_id).await? {
                let view = view(db, &row, caller, membership.last_read_message_id).await?;
                found.push((row.last_activity_at, view));
            }
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.id.cmp(&a.1.id)));
        Ok(found.into_iter().map(|(_, view)| view).collect())
    }

    /// One conversation, for a member; 404 for anyone else.
    pub async fn get(&self, caller: &UserId, id: i64) -> Result<Conversation, DomainError> {
        let db = &self.db;
        let membership = rows::membership(db, id, caller).await?.ok_or(DomainError::NotFound)?;
        let row = rows::conversation(db, id).await?.ok_or(DomainError::NotFound)?;
        view(db, &row, caller, membership.last_read_message_id).await
    }

    /// Adds `user` (by any member), unless `user` left the conversation:
    /// then only they could come back, and as a non-member they cannot, so a
    /// departure is final (403). The new member receives the conversation
    /// and every later event of it; the others receive the new member list.
    pub async fn add_member(&self, caller: &UserId, id: i64, user: UserId) -> Result<Conversation, DomainError> {
        let caller = caller.clone();
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    let membership = rows::membership(write.conn(), id, &caller).await?.ok_or(DomainError::NotFound)?;
                    let row = rows::conversation(write.conn(), id).await?.ok_or(DomainError::NotFound)?;
                    if rows::membership(write.conn(), id, &user).await?.is_some() {
                        return view(write.conn(), &row, &caller, membership.last_read_message_id).await;
                    }
                    // Leaving is the user's decision: nobody else undoes it
                    // (and so regains their presence and their attention).
                    if caller != user && rows::has_left(write.conn(), id, &user).await? {
                        return Err(DomainError::Forbidden(format!("{user} left this conversation; others cannot add them back")));
                    }
                    let mut members = rows::member_ids(write.conn(), id).await?;
                    members.push(user.to_string());
                    let now = truncate_to_millis(Utc::now());
                    let newcomer = Conversation { members: members.clone(), ..view(write.conn(), &row, &user, None).await? };
                    let joined = join_event(write, &user, &newcomer).await?;
                    rows::add_member(write.conn(), id, &user, joined, now).await?;
                    announce_change(write, &row, &members, Some(&user)).await?;
                    view(write.conn(), &row, &caller, membership.last_read_message_id).await
                })
            })
            .await
    }

    /// Removes `user`; only the user themself may (to leave). Their streams
    /// stop receiving the conversation at that point of the log.
    pub async fn leave(&self, caller: &UserId, id: i64, user: &UserId) -> Result<(), DomainError> {
        let (caller, user) = (caller.clone(), user.clone());
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    rows::membership(write.conn(), id, &caller).await?.ok_or(DomainError::NotFound)?;
                    if caller != user {
                        return Err(DomainError::Forbidden("members can only remove themselves".into()));
                    }
                    let row = rows::conversation(write.conn(), id).await?.ok_or(DomainError::NotFound)?;
                    let members: Vec<String> = rows::member_ids(write.conn(), id).await?.into_iter().filter(|m| m != user.as_str()).collect();
                    let farewell = Conversation { members: members.clone(), ..view(write.conn(), &row, &user, None).await? };
                    let data = serde_json::to_string(&farewell).map_err(DomainError::internal)?;
                    let route = RouteChange { conversation: Topic::conversation(id), joined: false };
                    let left = write.append_routed(&Topic::user(&user), events::CONVERSATION, &data, route).await?;
                    rows::remove_member(write.conn(), id, &user, left).await?;
                    announce_change(write, &row, &members, None).await
                })
            })
            .await
    }

    /// Sends a message. A retry with the same `client_message_id` from the
    /// same sender returns the stored message and sends nothing; the check
    /// runs inside the write, and a unique index backs it. Sending ends the
    /// sender's typing indicator.
    pub async fn send(&self, caller: &UserId, id: i64, request: NewMessage) -> Result<Sent, DomainError> {
        validate_content(&request.content)?;
        validate_short("client_message_id", request.client_message_id.as_deref())?;
        let sender = caller.clone();
        let sent = if request.reply_to.is_none() {
            let plain = PlainSend {
                conversation_id: id,
                sender,
                content: request.content,
                client_message_id: request.client_message_id,
                now: truncate_to_millis(Utc::now()),
            };
            let (message, created) = self.writer.send(plain).await?;
            Sent { message, created }
        } else {
            self.send_replying(caller, id, request).await?
        };
        if sent.created {
            // A sent message ends the sender's typing indicator, as people expect.
            self.typing.update(id, caller, false).await;
        }
        Ok(sent)
    }

    /// A reply: the message it answers must be of the conversation, which
    /// the set-based send does not check, so it runs as its own job.
    async fn send_replying(&self, caller: &UserId, id: i64, request: NewMessage) -> Result<Sent, DomainError> {
        let sender = caller.clone();
        self
            .writer
            .run(move |write| {
                Box::pin(async move {
                    rows::membership(write.conn(), id, &sender).await?.ok_or(DomainError::NotFound)?;
                    if let Some(client_id) = &request.client_message_id
                        && let Some(existing) = rows::by_client_id(write.conn(), id, &sender, client_id).await?
                    {
                        return Ok(Sent { message: existing.into(), created: false });
                    }
                    if let Some(reply_to) = request.reply_to
                        && rows::message(write.conn(), id, reply_to).await?.is_none()
                    {
                        return Err(DomainError::invalid_field("reply_to", "reply_to must be a message of this conversation"));
                    }
                    let now = truncate_to_millis(Utc::now());
                    // The writer allocates message ids (in commit order, and
                    // shared with the set-based sends of the same batch).
                    let message_id = write.message_id().await?;
                    let row = entity::message::Model {
                        id: message_id,
                        conversation_id: id,
                        sender_id: sender.as_str().to_owned(),
                        content: Some(request.content),
                        client_message_id: request.client_message_id,
                        reply_to: request.reply_to,
                        created_at: now,
                        edited_at: None,
                        deleted_at: None,
                    };
                    let row = rows::insert_message(write.conn(), row).await?;
                    rows::touch(write.conn(), id, now).await?;
                    let message = Message::from(row);
                    write.append(&Topic::conversation(id), events::MESSAGE, &message).await?;
                    Ok(Sent { message, created: true })
                })
            })
            .await
    }

    /// A page of messages, newest first.
    pub async fn history(&self, caller: &UserId, id: i64, before: Option<i64>, limit: u64) -> Result<MessagePage, DomainError> {
        let db = &self.db;
        rows::membership(db, id, caller).await?.ok_or(DomainError::NotFound)?;
        let mut found = rows::messages(db, id, before, limit + 1).await?;
        let next_cursor = if found.len() as u64 > limit {
            found.truncate(limit as usize);
            found.last().map(|m| m.id.to_string())
        } else {
            None
        };
        Ok(MessagePage { items: found.into_iter().map(Message::from).collect(), next_cursor })
    }

    /// Edits a message (its sender only).
    pub async fn edit(&self, caller: &UserId, id: i64, message_id: i64, content: String) -> Result<Message, DomainError> {
        validate_content(&content)?;
        let caller = caller.clone();
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    let mut row = own_message(write, &caller, id, message_id).await?;
                    if row.deleted_at.is_some() {
                        return Err(DomainError::invalid_field("content", "a deleted message cannot be edited"));
                    }
                    row.content = Some(content);
                    row.edited_at = Some(truncate_to_millis(Utc::now()));
                    let message = Message::from(rows::save_message(write.conn(), row).await?);
                    write.append(&Topic::conversation(id), events::MESSAGE_UPDATED, &message).await?;
                    Ok(message)
                })
            })
            .await
    }

    /// Deletes a message (its sender only): the content goes, a tombstone stays.
    pub async fn delete(&self, caller: &UserId, id: i64, message_id: i64) -> Result<(), DomainError> {
        let caller = caller.clone();
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    let mut row = own_message(write, &caller, id, message_id).await?;
                    if row.deleted_at.is_some() {
                        return Ok(());
                    }
                    row.content = None;
                    row.deleted_at = Some(truncate_to_millis(Utc::now()));
                    let message = Message::from(rows::save_message(write.conn(), row).await?);
                    write.append(&Topic::conversation(id), events::MESSAGE_DELETED, &message).await?;
                    Ok(())
                })
            })
            .await
    }

    /// Moves the caller's read mark forward to `message_id` (never back) and
    /// tells the other members with a `read` receipt.
    pub async fn read(&self, caller: &UserId, id: i64, message_id: i64) -> Result<ConversationUnread, DomainError> {
        let caller = caller.clone();
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    let membership = rows::membership(write.conn(), id, &caller).await?.ok_or(DomainError::NotFound)?;
                    if rows::message(write.conn(), id, message_id).await?.is_none() {
                        return Err(DomainError::invalid_field("message_id", "message_id must be a message of this conversation"));
                    }
                    let mark = rows::advance_read_mark(write.conn(), id, &caller, message_id).await?;
                    if membership.last_read_message_id < Some(mark) {
                        let receipt = ReadReceipt { conversation_id: id, user_id: caller.to_string(), message_id: mark, at: truncate_to_millis(Utc::now()) };
                        write.append(&Topic::conversation(id), events::READ, &receipt).await?;
                    }
                    let unread_count = rows::unread_count(write.conn(), id, &caller, Some(mark)).await?;
                    Ok(ConversationUnread { unread_count })
                })
            })
            .await
    }

    /// Says whether the caller is typing; the other members hear it.
    pub async fn typing(&self, caller: &UserId, id: i64, is_typing: bool) -> Result<(), DomainError> {
        rows::membership(&self.db, id, caller).await?.ok_or(DomainError::NotFound)?;
        self.typing.update(id, caller, is_typing).await;
        Ok(())
    }
}

/// The caller's own message in a conversation they belong to: 404 when the
/// conversation or message is not theirs to see, 403 when it is someone else's.
async fn own_message(write: &mut LogWrite, caller: &UserId, id: i64, message_id: i64) -> Result<entity::message::Model, DomainError> {
    rows::membership(write.conn(), id, caller).await?.ok_or(DomainError::NotFound)?;
    let row = rows::message(write.conn(), id, message_id).await?.ok_or(DomainError::NotFound)?;
    if row.sender_id != caller.as_str() {
        return Err(DomainError::Forbidden("only the sender can change a message".into()));
    }
    Ok(row)
}

/// Sends `conversation` to `member` with the route change that makes their
/// connections join its topic; returns the log position of the join.
async fn join_event(write: &mut LogWrite, member: &UserId, conversation: &Conversation) -> Result<EventId, DomainError> {
    let data = serde_json::to_string(conversation).map_err(DomainError::internal)?;
    let route = RouteChange { conversation: Topic::conversation(conversation.id), joined: true };
    Ok(write.append_routed(&Topic::user(member), events::CONVERSATION, &data, route).await?)
}

/// Sends the changed conversation to every member but `except`, each with
/// their own last message and unread count.
async fn announce_change(write: &mut LogWrite, row: &entity::conversation::Model, members: &[String], except: Option<&UserId>) -> Result<(), DomainError> {
    for member in members {
        if except.is_some_and(|user| user.as_str() == member) {
            continue;
        }
        let user = UserId::parse(member.clone()).map_err(|why| DomainError::internal(anyhow::anyhow!("stored member id {why}")))?;
        let read_mark = rows::membership(write.conn(), row.id, &user).await?.and_then(|m| m.last_read_message_id);
        let changed = Conversation { members: members.to_vec(), ..view(write.conn(), row, &user, read_mark).await? };
        write.append(&Topic::user(&user), events::CONVERSATION, &changed).await?;
    }
    Ok(())
}

/// The conversation as `user` sees it.
async fn view(conn: &impl ConnectionTrait, row: &entity::conversation::Model, user: &UserId, read_mark: Option<i64>) -> Result<Conversation, DomainError> {
    Ok(Conversation {
        id: row.id,
        title: row.title.clone(),
        members: rows::member_ids(conn, row.id).await?,
        created_at: row.created_at,
        last_message: rows::last_message(conn, row.id).await?.map(Message::from),
        unread_count: rows::unread_count(conn, row.id, user, read_mark).await?,
    })
}
