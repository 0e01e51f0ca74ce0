//! Notification use cases. Each write is a job of the [`Writer`]: it
//! changes rows, appends the events reporting the change, and announces the
//! user's new unread count, all in one transaction. What is not the write
//! (preferences, rate limits, an idempotency key already answered) is
//! settled before the job is queued, so it never holds the writer. A plain
//! publish (no idempotency key, no group key) is stored set-based with the
//! other plain publishes of its batch. Each read is a plain query.

pub mod announcements;
pub mod preference_cache;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, EntityTrait};
use serde::Serialize;

use crate::{
    domain::{
        DomainError,
        Topic, UserId,
        events::{self, NotificationDeleted, NotificationRead, UnreadCount},
        notification::{Audience as Broadcast, NewNotification, Notification, NotificationType, truncate_to_millis},
        preference::{Channels, Preference, PreferenceUpdate},
    },
    contacts,
    outbox::{ChannelKind, Outbox, Route, Routes, store::NewDelivery},
    ratelimit::{RateLimiter, retry_after_secs},
    store::{announcements as announcement_rows, idempotency, notifications as rows, preferences, unread},
    templates::Templates,
    writer::{LogWrite, PlainPublish, Writer},
};
use announcements::Viewer;
use preference_cache::PreferenceCache;

/// Most ids one `notification.read` event carries; a larger read-all is split.
pub const READ_EVENT_MAX_IDS: usize = 500;

/// The answer to a publish, kept verbatim for idempotent retries.
pub struct PublishOutcome {
    pub status: u16,
    /// The JSON body.
    pub body: String,
    /// True when this is the remembered answer to an earlier request.
    pub replayed: bool,
}

/// An `Idempotency-Key` with the fingerprint of the body it came with.
pub struct IdempotencyKey<'a> {
    pub key: &'a str,
    pub request_hash: String,
}

/// The `201` body of a publish.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Published {
    /// One notification per recipient who receives it: new ones, and
    /// grouped ones updated in place (`count` + 1).
    pub created: Vec<Notification>,
    /// Recipients whose preferences turn this type off.
    pub suppressed: Vec<String>,
    /// Recipients over their limit for this type (without a group to fold into).
    pub rate_limited: Vec<String>,
}

/// A page of notifications, newest first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Page {
    pub items: Vec<Notification>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// The answer of `read_all`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadAllResult {
    /// How many notifications became read.
    pub updated: u64,
}

/// Delivery statistics of one type.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TypeStats {
    #[serde(rename = "type")]
    pub kind: String,
    /// Notifications delivered (each grouped update counts).
    pub sent: u64,
    pub read: u64,
    pub clicked: u64,
    /// `read / sent`, 0 when nothing was sent.
    pub read_rate: f64,
    /// `clicked / sent`, 0 when nothing was sent.
    pub click_rate: f64,
    /// Per channel beyond the page (`email`, `push`, `webhook`) that
    /// delivered any of this type: deliveries sent and failed, and sent ones
    /// whose notification was clicked.
    pub channels: std::collections::BTreeMap<String, ChannelStats>,
}

/// Delivery statistics of one type over one channel.
#[derive(Serialize, utoipa::ToSchema, Default, Clone, Copy)]
pub struct ChannelStats {
    pub sent: u64,
    pub failed: u64,
    pub clicked: u64,
}

/// What a list asks for, already validated.
pub struct ListQuery {
    pub unread_only: bool,
    pub kind: Option<String>,
    pub cursor: Option<i64>,
    pub limit: u64,
}

/// The operator's policy for publishing.
pub struct Policy {
    /// Channels of a type the user never changed.
    pub default_channels: Channels,
    pub limiter: Arc<dyn RateLimiter>,
    /// How long a cached preference is trusted: `None` on a single node,
    /// where every change passes through this process.
    pub preference_ttl: Option<Duration>,
}

/// Notifications: publish, read, list, preferences.
pub struct Notifications {
    writer: Arc<Writer>,
    /// The pool, for reads.
    db: DatabaseConnection,
    policy: Policy,
    preferences: PreferenceCache,
    /// Rendered at publish when a type's publish leaves out its title.
    templates: Arc<Templates>,
    /// Which channels beyond the page are configured, and the worker to wake.
    outbox: Arc<Outbox>,
}

/// Who gets a publish, decided before it is queued.
struct Audience {
    /// Recipients whose preferences turn the type off.
    suppressed: Vec<String>,
    /// The others, in request order, each with its rate-limit verdict.
    wanted: Vec<(UserId, Result<(), Duration>)>,
    /// Per wanted recipient (same order), the outbox rows its copy gets.
    routes: Vec<Routes>,
}

impl Audience {
    /// Recipients within their limit.
    fn allowed(&self) -> (Vec<UserId>, Vec<Routes>) {
        self.wanted.iter().zip(&self.routes).filter(|((_, limit), _)| limit.is_ok()).map(|((user, _), routes)| (user.clone(), routes.clone())).unzip()
    }

    /// Recipients over their limit, and the longest wait among them.
    fn limited(&self) -> (Vec<String>, Duration) {
        let mut longest = Duration::ZERO;
        let users = self
            .wanted
            .iter()
            .filter_map(|(user, limit)| limit.err().map(|wait| (user, wait)))
            .map(|(user, wait)| {
                longest = longest.max(wait);
                user.to_string()
            })
            .collect();
        (users, longest)
    }
}

/// One item of a batch publish, validated or not.
pub type BatchItem = Result<NewNotification, DomainError>;

impl Notifications {
    /// Use cases writing through `writer` and reading from `db`, under `policy`.
    pub fn new(writer: Arc<Writer>, db: DatabaseConnection, policy: Policy, templates: Arc<Templates>, outbox: Arc<Outbox>) -> Self {
        let preferences = PreferenceCache::new(policy.preference_ttl);
        Notifications { writer, db, policy, preferences, templates, outbox }
    }

    /// Stores one notification per recipient and sends each to its owner,
    /// unless the recipient's preferences turn the type off (suppressed) or
    /// the recipient is over the limit for it (rate limited; a notification
    /// with a group key still folds into an unread group). When every
    /// recipient is rate limited the whole request is refused with 429.
    ///
    /// With an idempotency key, a retry with the same body gets the first
    /// answer and creates nothing; the check runs again inside the write,
    /// so two racing retries cannot both create.
    pub async fn publish(&self, caller: &UserId, key: Option<IdempotencyKey<'_>>, mut new: NewNotification) -> Result<PublishOutcome, DomainError> {
        if let Some(key) = &key
            && let Some(earlier) = self.remembered(caller, key).await?
        {
            return Ok(earlier);
        }
        self.render(&mut new).await?;
        let audience = self.audience(&new).await?;
        let now = truncate_to_millis(Utc::now());
        if key.is_none() && new.group_key.is_none() && new.audience.is_none() {
            let published = self.publish_plain(vec![(Arc::new(new), audience)], now).await?.pop();
            let published = published.unwrap_or_else(|| Err(DomainError::internal(anyhow::anyhow!("a publish got no answer"))))?;
            return outcome(&published);
        }
        let key = key.map(|k| (k.key.to_owned(), k.request_hash));
        let caller = caller.clone();
        let email_due = self.email_due(now);
        let outbox = self.outbox.clone();
        let answer = self
            .writer
            .run(move |write| {
                Box::pin(async move {
                    if let Some((key, hash)) = &key
                        && let Some(earlier) = idempotency::find(write.conn(), caller.as_str(), key).await?
                    {
                        return replay(earlier, hash);
                    }
                    let published = publish_in(write, &new, audience, now, email_due).await?;
                    let answer = outcome(&published)?;
                    if let Some((key, hash)) = &key {
                        let stored = idempotency::StoredAnswer { request_hash: hash.clone(), status: 201, body: answer.body.clone() };
                        idempotency::remember(write.conn(), caller.as_str(), key, &stored).await?;
                    }
                    Ok(answer)
                })
            })
            .await;
        outbox.wake();
        answer
    }

    /// Publishes up to 1,000 notifications in one request: each item gets
    /// the answer it would have had alone, or its own error, and a failed
    /// item stores nothing. Without an idempotency key the plain items go to
    /// the writer as one set-based job; with one, the whole batch is one job
    /// that also remembers the answer.
    pub async fn publish_batch(&self, caller: &UserId, key: Option<IdempotencyKey<'_>>, items: Vec<BatchItem>) -> Result<PublishOutcome, DomainError> {
        if let Some(key) = &key
            && let Some(earlier) = self.remembered(caller, key).await?
        {
            return Ok(earlier);
        }
        let now = truncate_to_millis(Utc::now());
        let mut prepared = Vec::with_capacity(items.len());
        for item in items {
            prepared.push(match item {
                Ok(mut new) => match self.render(&mut new).await {
                    Ok(()) => self.audience(&new).await.map(|audience| (new, audience)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            });
        }
        let email_due = self.email_due(now);
        let results = match key {
            Some(key) => {
                let (key, hash) = (key.key.to_owned(), key.request_hash);
                let caller = caller.clone();
                return self
                    .writer
                    .run(move |write| {
                        Box::pin(async move {
                            if let Some(earlier) = idempotency::find(write.conn(), caller.as_str(), &key).await? {
                                return replay(earlier, &hash);
                            }
                            let mut results = Vec::with_capacity(prepared.len());
                            for item in prepared {
                                results.push(match item {
                                    Ok((new, audience)) => publish_alone(write, &new, audience, now, email_due).await?,
                                    Err(e) => Err(e),
                                });
                            }
                            let answer = batch_outcome(results)?;
                            let stored = idempotency::StoredAnswer { request_hash: hash, status: 200, body: answer.body.clone() };
                            idempotency::remember(write.conn(), caller.as_str(), &key, &stored).await?;
                            Ok(answer)
                        })
                    })
                    .await
                    .inspect(|_| self.outbox.wake());
            }
            None => self.publish_items(prepared, now).await,
        };
        batch_outcome(results)
    }

    /// The items of a batch without a key: plain ones together in one job,
    /// grouped ones each as its own job, all queued before any is awaited.
    async fn publish_items(&self, prepared: Vec<Result<(NewNotification, Audience), DomainError>>, now: DateTime<Utc>) -> Vec<Result<Published, DomainError>> {
        let mut results: Vec<Option<Result<Published, DomainError>>> = Vec::with_capacity(prepared.len());
        let mut plain = Vec::new();
        let mut plain_slots = Vec::new();
        let mut grouped = Vec::new();
        for (slot, item) in prepared.into_iter().enumerate() {
            results.push(None);
            match item {
                Err(e) => results[slot] = Some(Err(e)),
                Ok((new, audience)) if new.group_key.is_none() && new.audience.is_none() => {
                    plain_slots.push(slot);
                    plain.push((Arc::new(new), audience));
                }
                Ok((new, audience)) => {
                    let email_due = self.email_due(now);
                    let job = self.writer.run(move |write| Box::pin(async move { publish_in(write, &new, audience, now, email_due).await }));
                    grouped.push((slot, job));
                }
            }
        }
        let (plain_results, grouped_results) = tokio::join!(self.publish_plain(plain, now), futures_util::future::join_all(grouped.into_iter().map(|(slot, job)| async move { (slot, job.await) })));
        match plain_results {
            Ok(plain_results) => {
                for (slot, result) in plain_slots.into_iter().zip(plain_results) {
                    results[slot] = Some(result);
                }
            }
            Err(e) => {
                for slot in plain_slots {
                    results[slot] = Some(Err(e.clone()));
                }
            }
        }
        for (slot, result) in grouped_results {
            results[slot] = Some(result);
        }
        self.outbox.wake();
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(DomainError::internal(anyhow::anyhow!("a batch item got no answer"))))).collect()
    }

    /// Plain publishes (no group, no key): the recipients within their
    /// limits are stored by the writer set-based; one result per item.
    async fn publish_plain(&self, items: Vec<(Arc<NewNotification>, Audience)>, now: DateTime<Utc>) -> Result<Vec<Result<Published, DomainError>>, DomainError> {
        let mut results: Vec<Result<Published, DomainError>> = Vec::with_capacity(items.len());
        let mut queued = Vec::new();
        let mut queued_slots = Vec::new();
        let mut wake = false;
        for (slot, (new, audience)) in items.into_iter().enumerate() {
            let (rate_limited, longest_wait) = audience.limited();
            if !new.recipients.is_empty() && rate_limited.len() == new.recipients.len() {
                results.push(Err(DomainError::RateLimited { retry_after_secs: retry_after_secs(longest_wait) }));
                continue;
            }
            let (allowed, routes) = audience.allowed();
            results.push(Ok(Published { created: Vec::new(), suppressed: audience.suppressed, rate_limited }));
            if !allowed.is_empty() {
                queued_slots.push(slot);
                wake |= routes.iter().any(|r| !r.is_empty());
                queued.push(PlainPublish { new, recipients: allowed, now, routes, email_due: self.email_due(now) });
            }
        }
        if queued.is_empty() {
            return Ok(results);
        }
        let created = self.writer.publish(queued).await;
        if wake {
            self.outbox.wake();
        }
        match created {
            Ok(created) => {
                for (slot, rows) in queued_slots.into_iter().zip(created) {
                    if let Ok(published) = &mut results[slot] {
                        published.created = rows;
                    }
                }
            }
            Err(e) => {
                for slot in queued_slots {
                    results[slot] = Err(e.clone());
                }
            }
        }
        Ok(results)
    }

    /// The remembered answer to `key`, or a conflict if it came with
    /// another body; read outside the writer, so retries cost it nothing.
    async fn remembered(&self, caller: &UserId, key: &IdempotencyKey<'_>) -> Result<Option<PublishOutcome>, DomainError> {
        match idempotency::find(&self.db, caller.as_str(), key.key).await? {
            Some(earlier) => replay(earlier, &key.request_hash).map(Some),
            None => Ok(None),
        }
    }

    /// Splits the recipients by preference and checks their rate limits.
    async fn audience(&self, new: &NewNotification) -> Result<Audience, DomainError> {
        let preferences = self.preferences.for_type(&self.db, &new.recipients, new.kind.as_str()).await?;
        let (suppressed, wanted): (Vec<&UserId>, Vec<&UserId>) = new
            .recipients
            .iter()
            .partition(|user| !new.critical && !preferences.get(user.as_str()).is_none_or(Preference::delivers));
        let wanted: Vec<UserId> = wanted.into_iter().cloned().collect();
        let routes = self.routes(new.kind.as_str(), &wanted, &preferences).await;
        let limits = self.policy.limiter.check_recipients(&wanted, new.kind.as_str()).await;
        Ok(Audience { suppressed: suppressed.iter().map(ToString::to_string).collect(), wanted: wanted.into_iter().zip(limits).collect(), routes })
    }

    /// Per recipient, the outbox rows of type `kind`: each channel beyond the
    /// page that the recipient's preference (or the operator's default)
    /// turns on and the hub has configured for the type. Recipients with the
    /// same channels share one list.
    async fn routes(&self, kind: &str, users: &[UserId], preferences: &std::collections::HashMap<String, Preference>) -> Vec<Routes> {
        let none: Routes = Arc::from(Vec::new());
        if self.outbox.channels.is_empty() {
            return vec![none; users.len()];
        }
        let mut by_channels: Vec<(Channels, Routes)> = Vec::new();
        let mut routes = Vec::with_capacity(users.len());
        for user in users {
            let channels = preferences.get(user.as_str()).map_or(self.policy.default_channels, |p| p.channels);
            let found = match by_channels.iter().find(|(c, _)| *c == channels) {
                Some((_, found)) => found.clone(),
                None => {
                    let found: Routes = Arc::from(self.outbox.channels.routes(kind, |channel| wants(channels, channel)).await);
                    by_channels.push((channels, found.clone()));
                    found
                }
            };
            routes.push(found);
        }
        routes
    }

    /// When an email row of a publish made at `now` falls due.
    fn email_due(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.outbox.settings.due_at(ChannelKind::Email, now)
    }

    /// Renders the title and body of a publish that left them out from its
    /// type's template, per recipient locale; refuses (422) a type without
    /// a template, or data the template cannot render, naming the field.
    async fn render(&self, new: &mut NewNotification) -> Result<(), DomainError> {
        if !new.templated {
            return Ok(());
        }
        let kind = new.kind.as_str().to_owned();
        if !self.templates.exists(&kind).await? {
            return Err(DomainError::invalid_field("title", format!("title is required: type {kind} has no template")));
        }
        let data: serde_json::Value = new.data.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_else(|| serde_json::json!({}));
        if new.recipients.is_empty() {
            // An announcement is stored once: rendered from the default row.
            let text = self
                .templates
                .render(&kind, None, &data)
                .await?
                .ok_or_else(|| DomainError::invalid_field("title", format!("title is required: type {kind} has no template")))?;
            crate::domain::notification::validate_title(&text.title)?;
            crate::domain::notification::validate_body(&text.body)?;
            (new.title, new.body) = (text.title, text.body);
            return Ok(());
        }
        let users: Vec<&str> = new.recipients.iter().map(UserId::as_str).collect();
        let locales = contacts::locales(&self.db, &users).await?;
        // One rendering per template locale the recipients fall back to.
        let mut rendered: std::collections::HashMap<Option<String>, (String, String)> = std::collections::HashMap::new();
        let mut first = None;
        for user in &new.recipients {
            let key = self.templates.locale_key(&kind, locales.get(user.as_str()).map(String::as_str)).await?;
            if !rendered.contains_key(&key) {
                let text = self
                    .templates
                    .render(&kind, key.as_deref(), &data)
                    .await?
                    .ok_or_else(|| DomainError::invalid_field("title", format!("title is required: type {kind} has no template")))?;
                crate::domain::notification::validate_title(&text.title)?;
                crate::domain::notification::validate_body(&text.body)?;
                rendered.insert(key.clone(), (text.title, text.body));
            }
            match &first {
                None => first = Some(key),
                Some(default) if *default != key => {
                    new.localized.insert(user.as_str().to_owned(), rendered[&key].clone());
                }
                Some(_) => {}
            }
        }
        if let Some(key) = first {
            let (title, body) = rendered.remove(&key).unwrap_or_default();
            new.title = title;
            new.body = body;
        }
        Ok(())
    }

    /// The user's preferences: every type they changed or received, with
    /// the operator's default where they never chose.
    pub async fn preferences(&self, user: &UserId) -> Result<Vec<Preference>, DomainError> {
        let db = &self.db;
        let mut by_type: std::collections::BTreeMap<String, Preference> = preferences::received_types(db, user)
            .await?
            .into_iter()
            .map(|kind| (kind.clone(), Preference { kind, enabled: true, channels: self.policy.default_channels }))
            .collect();
        for row in preferences::of_user(db, user).await? {
            by_type.insert(row.kind.clone(), Preference::from(row));
        }
        Ok(by_type.into_values().collect())
    }

    /// Sets the user's preference for one type.
    pub async fn set_preference(&self, user: &UserId, kind: &NotificationType, update: PreferenceUpdate) -> Result<Preference, DomainError> {
        let channels = update.channels.unwrap_or_default().resolve(self.policy.default_channels);
        let (owner, type_name) = (user.clone(), kind.as_str().to_owned());
        let row = self
            .writer
            .run(move |write| Box::pin(async move { Ok(preferences::upsert(write.conn(), &owner, &type_name, update.enabled, channels).await?) }))
            .await?;
        self.preferences.invalidate(user, kind.as_str());
        Ok(Preference::from(row))
    }

    /// Turns `channel` off for each of `types` of `user`, keeping the rest of
    /// each preference as it stands (the operator's default where the user
    /// never chose): what a signed unsubscribe link does, without a login.
    /// Read and write happen in one writer step, so a concurrent change of
    /// another channel is not lost.
    pub async fn turn_off_channel(&self, user: &UserId, types: &[NotificationType], channel: ChannelKind) -> Result<Vec<Preference>, DomainError> {
        let (owner, names) = (user.clone(), types.iter().map(|t| t.as_str().to_owned()).collect::<Vec<_>>());
        let defaults = self.policy.default_channels;
        let changed = self
            .writer
            .run(move |write| {
                Box::pin(async move {
                    let stored = preferences::of_user(write.conn(), &owner).await?;
                    let mut changed = Vec::with_capacity(names.len());
                    for name in &names {
                        let (enabled, mut channels) = stored
                            .iter()
                            .find(|row| &row.kind == name)
                            .map_or((true, defaults), |row| (row.enabled, Preference::from(row.clone()).channels));
                        match channel {
                            ChannelKind::Email => channels.email = false,
                            ChannelKind::Push => channels.push = false,
                            ChannelKind::Webhook => channels.webhook = false,
                        }
                        changed.push(Preference::from(preferences::upsert(write.conn(), &owner, name, enabled, channels).await?));
                    }
                    Ok(changed)
                })
            })
            .await?;
        for kind in types {
            self.preferences.invalidate(user, kind.as_str());
        }
        Ok(changed)
    }

    /// A click on a tracked link in a mail: recorded like
    /// `POST /v1/notifications/{id}/click` by the user (which marks the
    /// notification read), answering the notification, whose stored
    /// `action_url` is where the link leads.
    pub async fn click_from_link(&self, user: &UserId, id: i64) -> Result<Notification, DomainError> {
        self.read_one(&Viewer::of_user(user.clone()), id, true).await
    }

    /// Per-type statistics, computed from the stored notifications.
    pub async fn stats(&self, kind: Option<&NotificationType>, since: Option<chrono::DateTime<Utc>>) -> Result<Vec<TypeStats>, DomainError> {
        let mut per_channel: std::collections::HashMap<String, std::collections::BTreeMap<String, ChannelStats>> = std::collections::HashMap::new();
        for (kind, channel, sent, failed, clicked) in crate::outbox::store::stats(&self.db, kind.map(NotificationType::as_str), since).await? {
            let count = |n: i64| n.max(0) as u64;
            per_channel.entry(kind).or_default().insert(channel, ChannelStats { sent: count(sent), failed: count(failed), clicked: count(clicked) });
        }
        let mut totals: std::collections::BTreeMap<String, (i64, i64, i64)> = std::collections::BTreeMap::new();
        let own = rows::stats(&self.db, kind.map(NotificationType::as_str), since).await?;
        let broadcast = announcement_rows::stats(&self.db, kind.map(NotificationType::as_str), since).await?;
        for (kind, sent, read, clicked) in own.into_iter().chain(broadcast) {
            let total = totals.entry(kind).or_default();
            *total = (total.0 + sent, total.1 + read, total.2 + clicked);
        }
        Ok(totals
            .into_iter()
            .map(|(kind, (sent, read, clicked))| (kind, sent, read, clicked))
            .map(|(kind, sent, read, clicked)| {
                let (sent, read, clicked) = (sent.max(0) as u64, read.max(0) as u64, clicked.max(0) as u64);
                let rate = |n: u64| if sent == 0 { 0.0 } else { n as f64 / sent as f64 };
                let channels = per_channel.remove(&kind).unwrap_or_default();
                TypeStats { kind, sent, read, clicked, read_rate: rate(read), click_rate: rate(clicked), channels }
            })
            .collect())
    }

    /// A page of the viewer's notifications, newest first: their own and
    /// the announcements they see, in one id order (both take their ids
    /// from the same sequence, so the cursor is an id either way).
    pub async fn list(&self, viewer: &Viewer, query: ListQuery) -> Result<Page, DomainError> {
        let user = viewer.user();
        let now = Utc::now();
        let filter = rows::ListFilter {
            unread_only: query.unread_only,
            kind: query.kind.as_deref(),
            before_id: query.cursor,
            limit: query.limit + 1,
        };
        let own = rows::list(&self.db, user, filter, now).await?;
        let (shown, _) = announcements::visible(&self.db, viewer, now).await?;
        let mut found: Vec<Notification> = own.into_iter().map(Notification::from).collect();
        found.extend(
            shown
                .into_iter()
                .filter(|seen| query.cursor.is_none_or(|before| seen.row.id < before))
                .filter(|seen| query.kind.as_deref().is_none_or(|kind| seen.row.kind == kind))
                .filter(|seen| !query.unread_only || seen.read_at().is_none())
                .map(|seen| announcements::notification(&seen.row, seen.read_at())),
        );
        found.sort_by(|a, b| b.id.cmp(&a.id));
        let next_cursor = if found.len() as u64 > query.limit {
            found.truncate(query.limit as usize);
            found.last().map(|n| n.id.to_string())
        } else {
            None
        };
        if self.outbox.channels.get(ChannelKind::Email).is_some() {
            // Only the user's own unread notifications can have an email waiting.
            let unread: Vec<i64> = found.iter().filter(|n| n.user_id.is_some() && n.read_at.is_none()).map(|n| n.id).collect();
            let due = crate::outbox::store::pending_due(&self.db, ChannelKind::Email, &unread).await?;
            for notification in &mut found {
                notification.email_due_at = due.get(&notification.id).copied();
            }
        }
        Ok(Page { items: found, next_cursor })
    }

    /// The viewer's unread count: their own and the announcements they see.
    pub async fn unread_count(&self, viewer: &Viewer) -> Result<u64, DomainError> {
        let now = Utc::now();
        let own = unread::count(&self.db, viewer.user(), now).await?;
        let (unread_announcements, _) = announcements::unread(&self.db, viewer, now).await?;
        Ok(own + unread_announcements.len() as u64)
    }

    /// Marks one notification read and tells every stream of the user.
    pub async fn read(&self, viewer: &Viewer, id: i64) -> Result<Notification, DomainError> {
        self.read_one(viewer, id, false).await
    }

    /// Marks every unread notification (optionally of one type) read,
    /// announcements the viewer sees included.
    pub async fn read_all(&self, viewer: &Viewer, kind: Option<&str>) -> Result<u64, DomainError> {
        let (viewer, kind) = (viewer.clone(), kind.map(str::to_owned));
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    let user = viewer.user().clone();
                    let now = truncate_to_millis(Utc::now());
                    let ids = rows::unread_ids(write.conn(), &user, kind.as_deref(), now).await?;
                    let (unread_announcements, _) = announcements::unread(write.conn(), &viewer, now).await?;
                    let announced: Vec<i64> = unread_announcements
                        .iter()
                        .filter(|seen| kind.as_deref().is_none_or(|kind| seen.row.kind == kind))
                        .map(|seen| seen.row.id)
                        .collect();
                    if ids.is_empty() && announced.is_empty() {
                        return Ok(0);
                    }
                    let mut updated = 0;
                    for chunk in ids.chunks(READ_EVENT_MAX_IDS) {
                        updated += mark_read_and_report(write, &user, chunk, now).await?;
                    }
                    let own_updated = updated;
                    for chunk in announced.chunks(READ_EVENT_MAX_IDS) {
                        announcement_rows::mark(write.conn(), &user, chunk, announcement_rows::MarkKind::Read, now).await?;
                        write.append(&Topic::user(&user), events::NOTIFICATION_READ, &NotificationRead { ids: chunk }).await?;
                        updated += chunk.len() as u64;
                    }
                    announce_unread_count(write, &user, -(own_updated as i64)).await?;
                    Ok(updated)
                })
            })
            .await
    }

    /// Records a click, which also marks the notification read.
    pub async fn click(&self, viewer: &Viewer, id: i64) -> Result<Notification, DomainError> {
        self.read_one(viewer, id, true).await
    }

    /// Marks one notification read (a no-op if it already is), recording a
    /// click first when asked. An announcement gets the viewer's mark.
    async fn read_one(&self, viewer: &Viewer, id: i64, clicked: bool) -> Result<Notification, DomainError> {
        let viewer = viewer.clone();
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    let user = viewer.user().clone();
                    let now = truncate_to_millis(Utc::now());
                    let Some(mut row) = rows::find(write.conn(), &user, id, now).await? else {
                        let seen = announcements::find(write.conn(), &viewer, id, now).await?.ok_or(DomainError::NotFound)?;
                        let was_unread = seen.read_at().is_none();
                        let mark = if clicked { announcement_rows::MarkKind::Click } else { announcement_rows::MarkKind::Read };
                        if was_unread || clicked {
                            announcement_rows::mark(write.conn(), &user, &[id], mark, now).await?;
                        }
                        if was_unread {
                            write.append(&Topic::user(&user), events::NOTIFICATION_READ, &NotificationRead { ids: &[id] }).await?;
                            announce_unread_count(write, &user, 0).await?;
                        }
                        return Ok(announcements::notification(&seen.row, seen.read_at().or(Some(now))));
                    };
                    if clicked {
                        rows::mark_clicked(write.conn(), id, now).await?;
                    }
                    if row.read_at.is_none() {
                        let changed = mark_read_and_report(write, &user, &[id], now).await?;
                        announce_unread_count(write, &user, -(changed as i64)).await?;
                        row.read_at = Some(now);
                    }
                    Ok(row.into())
                })
            })
            .await
    }

    /// The deliveries of a notification beyond the page. The owner sees
    /// their own; a backend (`as_publisher`) any. Another user's is not found.
    pub async fn deliveries(&self, user: &UserId, as_publisher: bool, id: i64) -> Result<Vec<crate::outbox::DeliveryState>, DomainError> {
        let exists = if as_publisher {
            entity::notification::Entity::find_by_id(id).one(&self.db).await?.is_some()
        } else {
            rows::find(&self.db, user, id, Utc::now()).await?.is_some()
        };
        if !exists {
            return Err(DomainError::NotFound);
        }
        Ok(crate::outbox::store::of_notification(&self.db, id).await?.into_iter().map(Into::into).collect())
    }

    /// Deletes a notification for its owner; an announcement, for the viewer alone.
    pub async fn delete(&self, viewer: &Viewer, id: i64) -> Result<(), DomainError> {
        let viewer = viewer.clone();
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    let user = viewer.user().clone();
                    let now = truncate_to_millis(Utc::now());
                    let Some(row) = rows::find(write.conn(), &user, id, now).await? else {
                        announcements::find(write.conn(), &viewer, id, now).await?.ok_or(DomainError::NotFound)?;
                        announcement_rows::mark(write.conn(), &user, &[id], announcement_rows::MarkKind::Delete, now).await?;
                        write.append(&Topic::user(&user), events::NOTIFICATION_DELETED, &NotificationDeleted { id }).await?;
                        announce_unread_count(write, &user, 0).await?;
                        return Ok(());
                    };
                    rows::mark_deleted(write.conn(), id, now).await?;
                    write.append(&Topic::user(&user), events::NOTIFICATION_DELETED, &NotificationDeleted { id }).await?;
                    if row.read_at.is_none() {
                        announce_unread_count(write, &user, -1).await?;
                    }
                    Ok(())
                })
            })
            .await
    }
}

/// An earlier answer to the same key: given again if the body matches.
fn replay(earlier: idempotency::StoredAnswer, request_hash: &str) -> Result<PublishOutcome, DomainError> {
    if earlier.request_hash != request_hash {
        return Err(DomainError::invalid_field("Idempotency-Key", "this Idempotency-Key was already used with a different request body"));
    }
    Ok(PublishOutcome { status: earlier.status, body: earlier.body, replayed: true })
}

/// The `201` answer of one publish.
fn outcome(published: &Published) -> Result<PublishOutcome, DomainError> {
    let body = serde_json::to_string(published).map_err(DomainError::internal)?;
    Ok(PublishOutcome { status: 201, body, replayed: false })
}

/// One entry of a batch answer: the item's answer, or its error.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchEntry {
    Published(Published),
    Failed { error: crate::error::ErrorDetail },
}

/// The `200` answer of a batch publish.
fn batch_outcome(results: Vec<Result<Published, DomainError>>) -> Result<PublishOutcome, DomainError> {
    #[derive(Serialize)]
    struct Answer {
        results: Vec<BatchEntry>,
    }
    let results = results
        .into_iter()
        .map(|result| match result {
            Ok(published) => BatchEntry::Published(published),
            Err(e) => BatchEntry::Failed { error: crate::error::ApiError::from(e).detail() },
        })
        .collect();
    let body = serde_json::to_string(&Answer { results }).map_err(DomainError::internal)?;
    Ok(PublishOutcome { status: 200, body, replayed: false })
}

/// One publish inside a batch job, in its own savepoint so that a failed
/// item stores nothing: the outer `Result` is the batch's, the inner the item's.
async fn publish_alone(write: &mut LogWrite, new: &NewNotification, audience: Audience, now: DateTime<Utc>, email_due: DateTime<Utc>) -> Result<Result<Published, DomainError>, DomainError> {
    write.savepoint().await?;
    let result = publish_in(write, new, audience, now, email_due).await;
    write.end_savepoint(result.is_ok()).await?;
    Ok(result)
}

/// A publish inside the writer, one recipient at a time: folds into an
/// unread group where there is one, else stores a new copy for recipients
/// within their limit. A new copy gets its outbox rows; a folded one gets
/// only its push (which replaces the earlier push by its `Topic`): the
/// group's first copy went out by the other channels already.
async fn publish_in(write: &mut LogWrite, new: &NewNotification, audience: Audience, now: DateTime<Utc>, email_due: DateTime<Utc>) -> Result<Published, DomainError> {
    if let Some(broadcast) = &new.audience {
        return announce_in(write, new, broadcast, now).await;
    }
    let mut answer = Published { created: Vec::new(), suppressed: audience.suppressed, rate_limited: Vec::new() };
    let mut longest_wait = Duration::ZERO;
    for ((user, limit), routes) in audience.wanted.into_iter().zip(audience.routes) {
        let group = match &new.group_key {
            Some(group_key) => rows::unread_group(write.conn(), &user, group_key).await?,
            None => None,
        };
        let event_id = match (&group, limit) {
            (None, Err(wait)) => {
                longest_wait = longest_wait.max(wait);
                answer.rate_limited.push(user.to_string());
                continue;
            }
            _ => write.event_id().await?,
        };
        let (row, added) = match group {
            Some(group) => {
                let id = group.id;
                let row = rows::fold_into(write.conn(), group, new, event_id.get(), now).await?;
                // A push replaces the one waiting at the push service (same
                // `Topic`), so the update goes out too; each update is its own
                // row, told apart by its event id.
                let updates: Vec<NewDelivery> = routes
                    .iter()
                    .filter(|route| route.channel == ChannelKind::Push)
                    .map(|route| NewDelivery {
                        notification_id: id,
                        user_id: user.as_str().to_owned(),
                        route: Route { channel: route.channel, target: Some(format!("update-{}", event_id.get())) },
                        due_at: now,
                        now,
                    })
                    .collect();
                if !updates.is_empty() {
                    crate::outbox::store::insert(write.conn(), &updates).await?;
                }
                (row, 0)
            }
            None => {
                let id = write.notification_id().await?;
                let row = rows::insert(write.conn(), id, event_id.get(), &user, new, now).await?;
                if !routes.is_empty() {
                    let deliveries: Vec<NewDelivery> = routes
                        .iter()
                        .map(|route| NewDelivery {
                            notification_id: id,
                            user_id: user.as_str().to_owned(),
                            route: route.clone(),
                            due_at: if route.channel == ChannelKind::Email { email_due } else { now },
                            now,
                        })
                        .collect();
                    crate::outbox::store::insert(write.conn(), &deliveries).await?;
                }
                (row, 1)
            }
        };
        let notification = Notification::from(row);
        write.append_with_id(event_id, &Topic::user(&user), events::NOTIFICATION, &notification).await?;
        announce_unread_count(write, &user, added).await?;
        answer.created.push(notification);
    }
    if !new.recipients.is_empty() && answer.rate_limited.len() == new.recipients.len() {
        return Err(DomainError::RateLimited { retry_after_secs: retry_after_secs(longest_wait) });
    }
    Ok(answer)
}

/// An announcement inside the writer: one row (or an update of its live
/// group) and one event on the announcements' topic, whatever the size of
/// the audience. No counter moves: each reader's count includes it when
/// shown (see `announcements`).
async fn announce_in(write: &mut LogWrite, new: &NewNotification, broadcast: &Broadcast, now: DateTime<Utc>) -> Result<Published, DomainError> {
    let group = match &new.group_key {
        Some(group_key) => announcement_rows::live_group(write.conn(), broadcast, group_key, now).await?,
        None => None,
    };
    let event_id = write.event_id().await?;
    let row = match group {
        Some(group) => announcement_rows::fold_into(write.conn(), group, new, event_id.get(), now).await?,
        None => {
            let id = write.notification_id().await?;
            announcement_rows::insert(write.conn(), id, event_id.get(), broadcast, new, now).await?
        }
    };
    let notification = announcements::notification(&row, None);
    write.append_with_id(event_id, &Topic::announcements(), events::NOTIFICATION, &notification).await?;
    Ok(Published { created: vec![notification], suppressed: Vec::new(), rate_limited: Vec::new() })
}

/// Marks `ids` read and appends one `notification.read` event for them.
async fn mark_read_and_report(write: &mut LogWrite, user: &UserId, ids: &[i64], now: chrono::DateTime<Utc>) -> Result<u64, DomainError> {
    let changed = rows::mark_read(write.conn(), ids, now).await?;
    write.append(&Topic::user(user), events::NOTIFICATION_READ, &NotificationRead { ids }).await?;
    Ok(changed)
}

/// Moves the user's unread counter by `delta` inside the write and queues
/// the `unread_count` state event that follows the write's events.
async fn announce_unread_count(write: &mut LogWrite, user: &UserId, delta: i64) -> Result<(), DomainError> {
    let stored = if delta == 0 {
        unread::stored(write.conn(), &[user.as_str()]).await?.get(user.as_str()).copied().unwrap_or(0)
    } else {
        unread::adjust_one(write.conn(), user, delta).await?
    };
    let expired = unread::expired(write.conn(), &[user.as_str()], Utc::now()).await?.get(user.as_str()).copied().unwrap_or(0);
    write.announce(&Topic::user(user), events::UNREAD_COUNT, &UnreadCount { count: unread::visible(stored, expired) });
    Ok(())
}

/// The log position and unread count a stream reports when it starts or
/// catches up. The position is read first: the count then reflects at least
/// every event up to it, so a stream that skips queued counts at or below
/// that position never skips one fresher than what it sent.
///
/// The count is the user's own; the announcements the viewer has not read
/// come separately, so that a stream can keep adding them to the shared
/// counts it forwards.
pub async fn unread_state(conn: &impl sea_orm::ConnectionTrait, viewer: &Viewer, topics: &[Topic]) -> Result<UnreadState, sea_orm::DbErr> {
    let now = Utc::now();
    let names: Vec<&str> = topics.iter().map(Topic::as_str).collect();
    let part = unread::FreshPart { user: viewer.user(), topics: &names };
    let state = unread::states_of(conn, &[part], now).await?.pop().expect("a state per part");
    let hidden = if state.hiding_preferences > 0 { preferences::hidden_types(conn, viewer.user()).await? } else { Vec::new() };
    let announced = if state.live_announcements > 0 { announcements::unread_given(conn, viewer, &hidden, now).await? } else { Vec::new() };
    Ok(UnreadState { position: crate::domain::EventId::new(state.head), own: unread::visible(state.stored, state.expired), announced, hidden })
}

/// A stream's unread state at one log position.
pub struct UnreadState {
    pub position: crate::domain::EventId,
    /// The user's own unread count.
    pub own: u64,
    /// The announcements the viewer sees and has not read, newest first.
    pub announced: Vec<crate::store::announcements::Seen>,
    /// The types the viewer's preferences hide: the stream applies them to
    /// announcements that arrive live.
    pub hidden: Vec<String>,
}

/// Whether `channels` turn an outbox channel on.
fn wants(channels: Channels, channel: ChannelKind) -> bool {
    match channel {
        ChannelKind::Email => channels.email,
        ChannelKind::Push => channels.push,
        ChannelKind::Webhook => channels.webhook,
    }
}
