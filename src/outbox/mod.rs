//! The durable outbox: every channel beyond the page (email, Web Push,
//! webhooks) is delivered from here.
//!
//! - **Written with the notification.** A publish writes one delivery row
//!   per recipient and channel that the recipient's preference turns on and
//!   the hub has configured, in the same transaction as the notification
//!   (the set-based publish adds them to its multi-row INSERTs), so a
//!   committed notification always has its deliveries and a rolled-back one
//!   never does.
//! - **Taken by workers** ([`worker`]): a worker claims due rows by moving
//!   their `due_at` to the end of a lease and counting the attempt. On
//!   PostgreSQL the claim is `FOR UPDATE SKIP LOCKED`, so the nodes of a
//!   cluster share the work and no row is claimed twice; on SQLite one
//!   worker claims through the node's writer. A worker killed mid-delivery
//!   loses nothing: when its lease ends, the row is due again.
//! - **At least once.** A failed attempt is retried with exponential
//!   backoff and jitter up to a limit of attempts, then the row is `failed`
//!   with the last error. Every attempt of one row carries the same
//!   idempotency id (a webhook's `webhook-id`), so a receiver can drop the
//!   duplicate that at-least-once allows after a crash.
//! - **Channels** plug in through the [`Channel`] trait: the webhook
//!   channel lives in [`webhook`]; email and Web Push implement the same
//!   trait in their own modules.
//! - **Email waits.** An email row falls due `TIDINGS_EMAIL_DELAY_SECS`
//!   after the publish, and is `skipped` if the user read the notification
//!   on the page by then.

pub mod store;
pub mod webhook;
pub mod worker;

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;

pub use crate::contacts::Contact;

/// A channel delivered from the outbox (the page, `web`, is not one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Email,
    Push,
    Webhook,
}

impl ChannelKind {
    /// Every outbox channel, in a fixed order.
    pub const ALL: [ChannelKind; 3] = [ChannelKind::Email, ChannelKind::Push, ChannelKind::Webhook];

    /// The name stored in `deliveries.channel` and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Push => "push",
            ChannelKind::Webhook => "webhook",
        }
    }

    /// The channel of a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        ChannelKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// Where a delivery row stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet: waiting for its due time, or held by a worker.
    Pending,
    Sent,
    /// Gave up after the last retry, or the channel refused for good.
    Failed,
    /// Not needed any more (an email whose notification was read in time,
    /// a user without an address).
    Skipped,
}

impl DeliveryStatus {
    /// The name stored in `deliveries.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
        }
    }

    /// The status of a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [DeliveryStatus::Pending, DeliveryStatus::Sent, DeliveryStatus::Failed, DeliveryStatus::Skipped].into_iter().find(|s| s.as_str() == name)
    }
}

/// One delivery as a channel sees it: which notification, to whom, and
/// the key that stays the same on every attempt.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The row's id.
    pub id: i64,
    pub notification_id: i64,
    pub user_id: String,
    pub channel: ChannelKind,
    /// The endpoint of the channel: a webhook's id; `None` when the channel
    /// has one way to the user.
    pub target: Option<String>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Stable across retries: send it so the receiver can de-duplicate
    /// (`webhook-id`, a mail's `Message-ID`, a push's topic).
    pub idempotency_id: String,
}

/// The notification as it leaves the hub: the stored title and body, and
/// the email parts rendered from the type's template in the recipient's
/// locale (`email_subject` and `email_text` fall back to title and body).
#[derive(Debug, Clone, Serialize)]
pub struct RenderedNotification {
    pub id: i64,
    pub user_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub body: String,
    pub data: Option<serde_json::Value>,
    pub action_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
    pub email_subject: String,
    pub email_text: String,
    /// Only when the type's template has an HTML part (auto-escaped).
    pub email_html: Option<String>,
}

/// Why an attempt failed, and whether trying again may help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// True for faults that may pass (a timeout, a 5xx, a refused
    /// connection); false when a retry cannot succeed (a 4xx, no address).
    pub retryable: bool,
    pub message: String,
}

impl DeliveryError {
    /// A fault that may pass: the row is tried again after a backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        DeliveryError { retryable: true, message: message.into() }
    }

    /// A refusal no retry can change: the row fails at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        DeliveryError { retryable: false, message: message.into() }
    }
}

/// A way out of the hub. Implementations own their client and settings;
/// the outbox owns rows, retries, leases and metrics.
pub trait Channel: Send + Sync + 'static {
    /// Which channel this is.
    fn kind(&self) -> ChannelKind;

    /// The endpoints a notification of type `kind` goes to over this channel:
    /// one row is written per endpoint. Empty means "not configured for this
    /// type", and no row is written. The default is one endpoint (`None`),
    /// for channels with one way to each user (email, push).
    fn targets<'a>(&'a self, kind: &'a str) -> BoxFuture<'a, Vec<Option<String>>> {
        let _ = kind;
        Box::pin(async { vec![None] })
    }

    /// Makes one attempt. Called at least once per row; every attempt of a
    /// row carries the same `delivery.idempotency_id`.
    fn deliver<'a>(&'a self, delivery: &'a Delivery, notification: &'a RenderedNotification, contact: &'a Contact) -> BoxFuture<'a, Result<(), DeliveryError>>;

    /// Whether due rows of one user are handed over together
    /// ([`Channel::deliver_group`]), for digests.
    fn groups_per_user(&self) -> bool {
        false
    }

    /// Makes one attempt for several due rows of the same user, answering
    /// one result per row in order. The default delivers them one by one.
    fn deliver_group<'a>(&'a self, items: &'a [(Delivery, RenderedNotification)], contact: &'a Contact) -> BoxFuture<'a, Vec<Result<(), DeliveryError>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(items.len());
            for (delivery, notification) in items {
                results.push(self.deliver(delivery, notification, contact).await);
            }
            results
        })
    }
}

/// One delivery row a publish writes: a channel and endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub channel: ChannelKind,
    pub target: Option<String>,
}

/// The routes of one recipient, shared by every recipient with the same.
pub type Routes = Arc<[Route]>;

/// How the outbox works.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// How long after its publish an email falls due (and is skipped if the
    /// notification was read by then).
    pub email_delay: Duration,
    /// An email's due time is rounded up to a multiple of this, so the
    /// emails of one user falling due within one window are claimed
    /// together and go out as one digest. Zero: no rounding.
    pub email_digest: Duration,
    /// The first retry's backoff; each next one doubles, with jitter.
    pub retry_base: Duration,
    /// The longest backoff.
    pub retry_max: Duration,
    /// Attempts before a row is `failed`.
    pub max_attempts: u32,
    /// How long a claimed row stays with its worker: after it, a worker that
    /// died is assumed gone and the row is due again. Longer than any
    /// channel's own timeout.
    pub lease: Duration,
    /// Most rows claimed at once, and delivered concurrently.
    pub batch: usize,
    /// How often an idle worker looks for due rows.
    pub poll: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            email_delay: Duration::from_secs(300),
            email_digest: Duration::from_secs(60),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(3600),
            max_attempts: 8,
            lease: Duration::from_secs(60),
            batch: 256,
            poll: Duration::from_millis(500),
        }
    }
}

impl OutboxSettings {
    /// The wait before attempt `attempt + 1` after `attempt` failed:
    /// `base × 2^(attempt-1)`, capped, with "equal jitter" (half fixed,
    /// half random) so retries of many rows do not arrive in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.retry_base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20)).min(self.retry_max);
        let half = exp / 2;
        let jitter = if half.is_zero() { Duration::ZERO } else { Duration::from_micros(rand::random_range(0..=half.as_micros() as u64)) };
        half + jitter
    }

    /// When a new row of `channel` falls due.
    pub fn due_at(&self, channel: ChannelKind, now: DateTime<Utc>) -> DateTime<Utc> {
        match channel {
            ChannelKind::Email => round_up(now + chrono::Duration::from_std(self.email_delay).unwrap_or_default(), self.email_digest),
            _ => now,
        }
    }
}

/// `at` rounded up to the next multiple of `window` since the epoch (the
/// same on every node, so a cluster's rows of one window share a due time).
fn round_up(at: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    let window_ms = window.as_millis() as i64;
    if window_ms <= 0 {
        return at;
    }
    let ms = at.timestamp_millis();
    let rounded = ms.div_euclid(window_ms) * window_ms + if ms.rem_euclid(window_ms) == 0 { 0 } else { window_ms };
    DateTime::<Utc>::from_timestamp_millis(rounded).unwrap_or(at)
}

/// The configured channels, by kind.
#[derive(Clone, Default)]
pub struct ChannelSet {
    channels: HashMap<ChannelKind, Arc<dyn Channel>>,
}

impl ChannelSet {
    /// Adds (or replaces) a channel.
    pub fn add(&mut self, channel: Arc<dyn Channel>) {
        self.channels.insert(channel.kind(), channel);
    }

    /// The channel of `kind`, if configured.
    pub fn get(&self, kind: ChannelKind) -> Option<&Arc<dyn Channel>> {
        self.channels.get(&kind)
    }

    /// The configured kinds, in a fixed order.
    pub fn kinds(&self) -> Vec<ChannelKind> {
        ChannelKind::ALL.into_iter().filter(|kind| self.channels.contains_key(kind)).collect()
    }

    /// Whether any channel is configured: when none is, publishing skips
    /// the outbox entirely.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The routes of type `kind` for a recipient whose preference turns
    /// `wanted` channels on.
    pub async fn routes(&self, kind: &str, wanted: impl Fn(ChannelKind) -> bool) -> Vec<Route> {
        let mut routes = Vec::new();
        for channel in ChannelKind::ALL {
            if !wanted(channel) {
                continue;
            }
            if let Some(found) = self.channels.get(&channel) {
                routes.extend(found.targets(kind).await.into_iter().map(|target| Route { channel, target }));
            }
        }
        routes
    }
}

/// The idempotency id of a delivery: derived from what makes the row
/// unique, so it is the same on every attempt and on every node.
pub fn idempotency_id(notification_id: i64, route: &Route) -> String {
    match &route.target {
        Some(target) => format!("msg_{notification_id}_{}_{target}", route.channel.as_str()),
        None => format!("msg_{notification_id}_{}", route.channel.as_str()),
    }
}

/// The node's outbox: its channels and settings, and the signal that
/// wakes its worker when a publish wrote rows.
pub struct Outbox {
    pub channels: ChannelSet,
    pub settings: OutboxSettings,
    wake: tokio::sync::Notify,
}

impl Outbox {
    /// An outbox delivering over `channels`.
    pub fn new(channels: ChannelSet, settings: OutboxSettings) -> Self {
        Outbox { channels, settings, wake: tokio::sync::Notify::new() }
    }

    /// Tells this node's worker that rows were written, so a due row is
    /// taken at once rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits for [`Outbox::wake`].
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// One delivery as `GET /v1/notifications/{id}/deliveries` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryState {
    /// `email`, `push` or `webhook`.
    pub channel: String,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<entity::delivery::Model> for DeliveryState {
    fn from(row: entity::delivery::Model) -> Self {
        DeliveryState {
            channel: row.channel,
            status: DeliveryStatus::parse(&row.status).unwrap_or(DeliveryStatus::Pending),
            attempts: row.attempts,
            last_error: row.last_error,
            updated_at: row.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_with_jitter_and_stops_at_the_cap() {
        let settings = OutboxSettings { retry_base: Duration::from_secs(2), retry_max: Duration::from_secs(60), ..Default::default() };
        for attempt in 1..=12 {
            let full = Duration::from_secs(2 * (1u64 << (attempt - 1))).min(Duration::from_secs(60));
            for _ in 0..50 {
                let wait = settings.backoff(attempt);
                assert!(wait >= full / 2 && wait <= full, "attempt {attempt}: {wait:?} outside [{:?}, {full:?}]", full / 2);
            }
        }
    }

    #[test]
    fn idempotency_ids_are_stable_and_name_the_endpoint() {
        let route = Route { channel: ChannelKind::Webhook, target: Some("wh_1".into()) };
        assert_eq!(idempotency_id(7, &route), idempotency_id(7, &route.clone()));
        assert_eq!(idempotency_id(7, &route), "msg_7_webhook_wh_1");
        assert_eq!(idempotency_id(7, &Route { channel: ChannelKind::Email, target: None }), "msg_7_email");
    }

    #[test]
    fn an_emails_due_time_is_rounded_up_to_its_digest_window() {
        let settings = OutboxSettings { email_delay: Duration::from_secs(300), email_digest: Duration::from_secs(60), ..Default::default() };
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(settings.due_at(ChannelKind::Email, at("2026-12-02T10:00:00.001Z")), at("2026-12-02T10:06:00Z"));
        assert_eq!(settings.due_at(ChannelKind::Email, at("2026-12-02T10:00:59.999Z")), at("2026-12-02T10:06:00Z"));
        assert_eq!(settings.due_at(ChannelKind::Email, at("2026-12-02T10:01:00Z")), at("2026-12-02T10:06:00Z"), "on the boundary stays");
        assert_eq!(settings.due_at(ChannelKind::Webhook, at("2026-12-02T10:00:00.001Z")), at("2026-12-02T10:00:00.001Z"), "only email waits");
        let no_window = OutboxSettings { email_digest: Duration::ZERO, ..settings };
        assert_eq!(no_window.due_at(ChannelKind::Email, at("2026-12-02T10:00:00.001Z")), at("2026-12-02T10:05:00.001Z"));
    }
}
