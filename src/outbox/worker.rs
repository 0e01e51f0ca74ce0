//! The outbox worker: claims due rows, delivers them over their channel,
//! and records each outcome as soon as it is known.
//!
//! One worker runs per node. On PostgreSQL it claims and settles on the
//! read pool, `FOR UPDATE SKIP LOCKED`, so the workers of a cluster share
//! the rows; on SQLite it goes through the node's writer, the file's only
//! writer. A claim moves the row's `due_at` to the end of a lease: if the
//! process dies before the outcome is recorded, the row falls due again
//! when the lease ends and is delivered again, with the same idempotency
//! id. Only rows in flight at the crash can be delivered twice.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use sea_orm::{ColumnTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter};
use tokio_util::sync::CancellationToken;

use super::{
    ChannelKind, Contact, Delivery, DeliveryError, DeliveryStatus, Outbox, RenderedNotification,
    store::{self, Outcome},
};
use crate::{domain::DomainError, templates::Templates, writer::Writer};
use entity::{contact, notification};

/// What the worker works with.
pub struct Worker {
    pub outbox: Arc<Outbox>,
    /// The read pool: loads notifications and contacts, and on PostgreSQL
    /// claims and settles rows.
    pub db: DatabaseConnection,
    /// The node's writer: claims and settles rows on SQLite.
    pub writer: Arc<Writer>,
    pub templates: Arc<Templates>,
}

impl Worker {
    /// Runs until `shutdown`: takes due rows whenever a publish wakes it,
    /// and polls in between for rows that fall due later (emails, retries,
    /// leases of a node that died) or were written by another node.
    pub fn spawn(self, shutdown: CancellationToken) {
        if self.outbox.channels.is_empty() {
            return;
        }
        tokio::spawn(async move {
            loop {
                match self.round().await {
                    // A full batch: more may be due at once.
                    Ok(full) if full => continue,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "the outbox worker could not claim deliveries; retrying"),
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = self.outbox.woken() => {}
                    () = tokio::time::sleep(self.outbox.settings.poll) => {}
                }
            }
        });
    }

    /// Claims one batch and delivers it; true if the batch was full.
    async fn round(&self) -> Result<bool, DomainError> {
        let settings = &self.outbox.settings;
        let now = Utc::now();
        let lease_until = now + chrono::Duration::from_std(settings.lease).unwrap_or_default();
        let limit = settings.batch.max(1);
        let claimed = self.claim(now, lease_until, limit).await?;
        if claimed.is_empty() {
            return Ok(false);
        }
        let full = claimed.len() >= limit;
        let ids: Vec<i64> = claimed.iter().map(|d| d.notification_id).collect();
        let users: Vec<String> = claimed.iter().map(|d| d.user_id.clone()).collect();
        let notifications = load_notifications(&self.db, &ids).await?;
        let contacts = load_contacts(&self.db, &users).await?;

        // Each group is one hand-over to its channel: a row alone, or a
        // user's rows for a channel that sends digests.
        let mut groups: Vec<Vec<Delivery>> = Vec::new();
        let mut by_user: HashMap<(ChannelKind, String), usize> = HashMap::new();
        for delivery in claimed {
            let digest = self.outbox.channels.get(delivery.channel).is_some_and(|c| c.groups_per_user());
            if digest {
                let key = (delivery.channel, delivery.user_id.clone());
                if let Some(&at) = by_user.get(&key) {
                    groups[at].push(delivery);
                    continue;
                }
                by_user.insert(key, groups.len());
            }
            groups.push(vec![delivery]);
        }
        let (notifications, contacts) = (&notifications, &contacts);
        stream::iter(groups)
            .for_each_concurrent(limit, |group| async move {
                let outcomes = self.deliver_group(group, notifications, contacts).await;
                let result = self.settle(outcomes).await;
                if let Err(e) = result {
                    // The lease ends and the row is delivered again: at least once.
                    tracing::warn!(error = %e, "recording a delivery's outcome failed; it will be retried after its lease");
                }
            })
            .await;
        Ok(full)
    }

    /// Delivers one group and says how each row ended.
    async fn deliver_group(&self, group: Vec<Delivery>, notifications: &HashMap<i64, notification::Model>, contacts: &HashMap<String, Contact>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(group.len());
        let mut items = Vec::with_capacity(group.len());
        let contact = contacts.get(&group[0].user_id).cloned().unwrap_or_default();
        for delivery in group {
            if self.outbox.channels.get(delivery.channel).is_none() {
                outcomes.push(final_outcome(&delivery, DeliveryStatus::Failed, Some(format!("the {} channel is not configured on this node", delivery.channel.as_str()))));
                continue;
            }
            let Some(row) = notifications.get(&delivery.notification_id) else {
                outcomes.push(final_outcome(&delivery, DeliveryStatus::Skipped, Some("the notification no longer exists".into())));
                continue;
            };
            if row.deleted_at.is_some() || row.expires_at.is_some_and(|at| at <= Utc::now()) {
                outcomes.push(final_outcome(&delivery, DeliveryStatus::Skipped, Some("the notification was deleted or expired".into())));
                continue;
            }
            if delivery.channel == ChannelKind::Email && row.read_at.is_some() {
                outcomes.push(final_outcome(&delivery, DeliveryStatus::Skipped, Some("read on the page before the email was due".into())));
                continue;
            }
            match self.render(row, &contact).await {
                Ok(rendered) => items.push((delivery, rendered)),
                Err(e) => outcomes.push(final_outcome(&delivery, DeliveryStatus::Failed, Some(e.to_string()))),
            }
        }
        if items.is_empty() {
            return outcomes;
        }
        let channel = self.outbox.channels.get(items[0].0.channel).expect("checked above").clone();
        let results = if items.len() == 1 {
            vec![channel.deliver(&items[0].0, &items[0].1, &contact).await]
        } else {
            channel.deliver_group(&items, &contact).await
        };
        for ((delivery, _), result) in items.iter().zip(results) {
            outcomes.push(self.outcome(delivery, result));
        }
        outcomes
    }

    /// The row's next state after an attempt.
    fn outcome(&self, delivery: &Delivery, result: Result<(), DeliveryError>) -> Outcome {
        let settings = &self.outbox.settings;
        let channel = delivery.channel.as_str();
        match result {
            Ok(()) => {
                metrics::counter!("tidings_deliveries_total", "channel" => channel, "status" => "sent").increment(1);
                final_outcome(delivery, DeliveryStatus::Sent, None)
            }
            Err(e) if e.retryable && delivery.attempt < settings.max_attempts => {
                metrics::counter!("tidings_delivery_retries_total", "channel" => channel).increment(1);
                let due = Utc::now() + chrono::Duration::from_std(settings.backoff(delivery.attempt)).unwrap_or_default();
                Outcome { id: delivery.id, status: DeliveryStatus::Pending, due_at: Some(due), last_error: Some(e.message) }
            }
            Err(e) => {
                metrics::counter!("tidings_deliveries_total", "channel" => channel, "status" => "failed").increment(1);
                tracing::warn!(delivery = delivery.id, channel, attempts = delivery.attempt, error = %e.message, "a delivery failed for good");
                final_outcome(delivery, DeliveryStatus::Failed, Some(e.message))
            }
        }
    }

    /// The notification as it leaves: stored title and body, and the email
    /// parts of the type's template in the contact's locale.
    async fn render(&self, row: &notification::Model, contact: &Contact) -> Result<RenderedNotification, DomainError> {
        let data: Option<serde_json::Value> = row.data.as_deref().and_then(|d| serde_json::from_str(d).ok());
        let context = data.clone().unwrap_or_else(|| serde_json::json!({}));
        let template = self.templates.render(&row.kind, contact.locale.as_deref(), &context).await.unwrap_or_default();
        let (email_subject, email_text, email_html) = match template {
            Some(t) => (t.email_subject, t.email_text, t.email_html),
            None => (None, None, None),
        };
        Ok(RenderedNotification {
            id: row.id,
            user_id: row.user_id.clone(),
            kind: row.kind.clone(),
            email_subject: email_subject.unwrap_or_else(|| row.title.clone()),
            email_text: email_text.unwrap_or_else(|| row.body.clone()),
            email_html,
            title: row.title.clone(),
            body: row.body.clone(),
            data,
            action_url: row.action_url.clone(),
            created_at: row.created_at,
            read_at: row.read_at,
        })
    }

    /// Claims due rows: on the pool (PostgreSQL) or through the writer
    /// (SQLite, after asking the pool whether any row is due, so an idle
    /// outbox never queues a write).
    async fn claim(&self, now: DateTime<Utc>, lease_until: DateTime<Utc>, limit: usize) -> Result<Vec<Delivery>, DomainError> {
        if self.db.get_database_backend() == DbBackend::Postgres {
            return Ok(store::claim(&self.db, now, lease_until, limit).await?);
        }
        if store::oldest_due(&self.db, now).await?.is_none() {
            return Ok(Vec::new());
        }
        self.writer.run(move |write| Box::pin(async move { Ok(store::claim(write.conn(), now, lease_until, limit).await?) })).await
    }

    /// Records outcomes: on the pool (PostgreSQL) or through the writer
    /// (SQLite, where concurrent settles share the writer's batches).
    async fn settle(&self, outcomes: Vec<Outcome>) -> Result<(), DomainError> {
        let now = Utc::now();
        if self.db.get_database_backend() == DbBackend::Postgres {
            return Ok(store::settle(&self.db, &outcomes, now).await?);
        }
        self.writer.run(move |write| Box::pin(async move { Ok(store::settle(write.conn(), &outcomes, now).await?) })).await
    }
}

fn final_outcome(delivery: &Delivery, status: DeliveryStatus, last_error: Option<String>) -> Outcome {
    if status == DeliveryStatus::Skipped {
        metrics::counter!("tidings_deliveries_total", "channel" => delivery.channel.as_str(), "status" => "skipped").increment(1);
    }
    Outcome { id: delivery.id, status, due_at: None, last_error }
}

async fn load_notifications(conn: &DatabaseConnection, ids: &[i64]) -> Result<HashMap<i64, notification::Model>, DbErr> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        for row in notification::Entity::find().filter(notification::Column::Id.is_in(chunk.iter().copied())).all(conn).await? {
            found.insert(row.id, row);
        }
    }
    Ok(found)
}

async fn load_contacts(conn: &DatabaseConnection, users: &[String]) -> Result<HashMap<String, Contact>, DbErr> {
    let mut found = HashMap::new();
    for chunk in users.chunks(500) {
        for row in contact::Entity::find().filter(contact::Column::UserId.is_in(chunk.iter().cloned())).all(conn).await? {
            found.insert(row.user_id.clone(), Contact::from(row));
        }
    }
    Ok(found)
}

/// When the oldest due pending row fell due, for the lag gauge.
pub async fn oldest_due(conn: &DatabaseConnection) -> Result<Option<DateTime<Utc>>, DbErr> {
    store::oldest_due(conn, Utc::now()).await
}
