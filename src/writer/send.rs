//! Plain chat messages, stored set-based.
//!
//! A send without `reply_to` needs, inside the transaction, only two reads
//! that can be asked for the whole batch at once: is the sender a member,
//! and did they already send this `client_message_id`. So the sends waiting
//! in one batch cost one membership query, one query for earlier client
//! ids, one multi-row INSERT of messages, one of events and one UPDATE of
//! the conversations' activity time, however many there are.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QuerySelect, sea_query::Expr};
use tokio::sync::oneshot;

use super::{Finished, ids::Ids};
use crate::domain::{DomainError, EventId, Topic, UserId, chat::Message, events};
use crate::hub::Event;
use entity::{conversation, event, member, message};

/// Rows per multi-row INSERT.
const INSERT_CHUNK: usize = 1000;

/// One message to send: already validated, without `reply_to`.
pub struct PlainSend {
    pub conversation_id: i64,
    pub sender: UserId,
    pub content: String,
    pub client_message_id: Option<String>,
    pub now: DateTime<Utc>,
}

/// What a send did: the message, and whether it is new (false when a
/// retry found it already stored).
pub type SendOutcome = Result<(Message, bool), DomainError>;

/// A queued send and where its answer goes.
pub struct SendJob {
    pub send: PlainSend,
    pub reply: oneshot::Sender<SendOutcome>,
}

/// Stores every send of `jobs` (inside a savepoint when `savepoint`) and
/// queues their events; each job's outcome goes to `finished`.
pub(super) async fn flush(
    txn: &DatabaseTransaction,
    ids: &mut Ids,
    jobs: Vec<SendJob>,
    outbox: &mut Vec<Arc<Event>>,
    finished: &mut Vec<Finished>,
    savepoint: bool,
) -> Result<(), DbErr> {
    use sea_orm::TransactionTrait;
    if jobs.is_empty() {
        return Ok(());
    }
    if !savepoint {
        return match store(txn, ids, &jobs).await {
            Ok((outcomes, events)) => {
                outbox.extend(events);
                finished.extend(jobs.into_iter().zip(outcomes).map(|(job, outcome)| Finished::Send(job, outcome)));
                Ok(())
            }
            Err(e) => {
                // The batch fails with them; they are answered with it.
                let failure = DomainError::Unavailable("the database did not accept the write; retry".into());
                finished.extend(jobs.into_iter().map(|job| Finished::Send(job, Err(failure.clone()))));
                Err(e)
            }
        };
    }
    let inner = txn.begin().await?;
    match store(&inner, ids, &jobs).await {
        Ok((outcomes, events)) => {
            inner.commit().await?;
            outbox.extend(events);
            finished.extend(jobs.into_iter().zip(outcomes).map(|(job, outcome)| Finished::Send(job, outcome)));
        }
        Err(e) => {
            inner.rollback().await?;
            tracing::error!(error = %e, "storing chat messages failed");
            let failure = DomainError::Unavailable("the database did not accept the write; retry".into());
            finished.extend(jobs.into_iter().map(|job| Finished::Send(job, Err(failure.clone()))));
        }
    }
    Ok(())
}

async fn store(txn: &DatabaseTransaction, ids: &mut Ids, jobs: &[SendJob]) -> Result<(Vec<SendOutcome>, Vec<Arc<Event>>), DbErr> {
    let conversations: HashSet<i64> = jobs.iter().map(|job| job.send.conversation_id).collect();
    let senders: HashSet<&str> = jobs.iter().map(|job| job.send.sender.as_str()).collect();
    let members: HashSet<(i64, String)> = member::Entity::find()
        .select_only()
        .column(member::Column::ConversationId)
        .column(member::Column::UserId)
        .filter(member::Column::ConversationId.is_in(conversations.iter().copied()))
        .filter(member::Column::UserId.is_in(senders.iter().copied()))
        .into_tuple::<(i64, String)>()
        .all(txn)
        .await?
        .into_iter()
        .collect();

    // Messages already stored under the client ids asked for (retries).
    let client_ids: HashSet<&str> = jobs.iter().filter_map(|job| job.send.client_message_id.as_deref()).collect();
    let mut earlier: HashMap<(i64, String, String), message::Model> = HashMap::new();
    if !client_ids.is_empty() {
        let found = message::Entity::find()
            .filter(message::Column::ConversationId.is_in(conversations.iter().copied()))
            .filter(message::Column::SenderId.is_in(senders.iter().copied()))
            .filter(message::Column::ClientMessageId.is_in(client_ids.iter().copied()))
            .all(txn)
            .await?;
        for row in found {
            if let Some(client_id) = row.client_message_id.clone() {
                earlier.insert((row.conversation_id, row.sender_id.clone(), client_id), row);
            }
        }
    }

    let fresh = jobs
        .iter()
        .filter(|job| members.contains(&(job.send.conversation_id, job.send.sender.as_str().to_owned())))
        .count();
    let message_ids = ids.messages(txn, fresh).await?;
    let event_ids = ids.events(txn, fresh).await?;
    let mut next = message_ids.into_iter().zip(event_ids);

    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut rows = Vec::with_capacity(fresh);
    let mut event_rows = Vec::with_capacity(fresh);
    let mut outbox = Vec::with_capacity(fresh);
    let mut touched: HashMap<i64, DateTime<Utc>> = HashMap::new();
    for job in jobs {
        let send = &job.send;
        if !members.contains(&(send.conversation_id, send.sender.as_str().to_owned())) {
            outcomes.push(Err(DomainError::NotFound));
            continue;
        }
        let key = send.client_message_id.clone().map(|client_id| (send.conversation_id, send.sender.as_str().to_owned(), client_id));
        if let Some(row) = key.as_ref().and_then(|key| earlier.get(key)) {
            outcomes.push(Ok((Message::from(row.clone()), false)));
            continue;
        }
        let (id, event_id) = next.next().ok_or_else(|| DbErr::Custom("fewer ids than messages".into()))?;
        let row = message::Model {
            id,
            conversation_id: send.conversation_id,
            sender_id: send.sender.as_str().to_owned(),
            content: Some(send.content.clone()),
            client_message_id: send.client_message_id.clone(),
            reply_to: None,
            created_at: send.now,
            edited_at: None,
            deleted_at: None,
        };
        let message = Message::from(row.clone());
        let data = serde_json::to_string(&message).map_err(|e| DbErr::Custom(format!("event payload: {e}")))?;
        let topic = Topic::conversation(send.conversation_id);
        outbox.push(Arc::new(Event::persisted(EventId::new(event_id), topic.clone(), events::MESSAGE, &data)));
        event_rows.push(event::ActiveModel::from(event::Model {
            id: event_id,
            topic: topic.as_str().to_owned(),
            event: events::MESSAGE.to_owned(),
            data,
            created_at: send.now,
            route: None,
            key: None,
        }));
        if let Some(key) = key {
            // A second send with the same client id in this very batch gets this one.
            earlier.insert(key, row.clone());
        }
        let latest = touched.entry(send.conversation_id).or_insert(send.now);
        *latest = (*latest).max(send.now);
        rows.push(message::ActiveModel::from(row));
        outcomes.push(Ok((message, true)));
    }

    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(INSERT_CHUNK).collect();
        message::Entity::insert_many(chunk).exec_without_returning(txn).await?;
    }
    let mut event_rows = event_rows.into_iter().peekable();
    while event_rows.peek().is_some() {
        let chunk: Vec<_> = event_rows.by_ref().take(INSERT_CHUNK).collect();
        event::Entity::insert_many(chunk).exec_without_returning(txn).await?;
    }
    if let Some(latest) = touched.values().max().copied() {
        // One time for all: the batch's sends happened within milliseconds.
        conversation::Entity::update_many()
            .col_expr(conversation::Column::LastActivityAt, Expr::value(latest))
            .filter(conversation::Column::Id.is_in(touched.keys().copied()))
            .exec(txn)
            .await?;
    }
    Ok((outcomes, outbox))
}
