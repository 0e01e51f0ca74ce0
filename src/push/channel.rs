//! The `push` channel of the outbox: one delivery row per notification and
//! user, sent to every browser the user subscribed.
//!
//! Each push is a POST to the subscription's endpoint (RFC 8030) with:
//! - the payload `{id, title, body, action_url, unread_count}` encrypted to
//!   the browser's keys (RFC 8291, `Content-Encoding: aes128gcm`, by the
//!   `web-push-native` crate), at most 4,096 bytes once encrypted: the body
//!   is shortened to fit, never the title;
//! - `Authorization: vapid t=<ES256 JWT>, k=<public key>` (RFC 8292);
//! - `TTL`: how long the push service may hold it for an offline browser
//!   (until the notification expires, at most [`MAX_TTL`]);
//! - `Urgency: high` for a critical notification, else `normal`;
//! - `Topic`, derived from the group key, so that a grouped update
//!   replaces the earlier push still waiting at the push service.
//!
//! Outcomes: a 2xx is sent; 404 or 410 means the subscription is gone, and
//! it is removed; 408, 429, a 5xx or a network fault is retried (the row
//! is tried again for every subscription, so a device may see a retried
//! push twice, which the notification's `tag` in the service worker folds);
//! any other answer is final. The row is `sent` if any device took it.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use chrono::Utc;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::{Request, header};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use sea_orm::DatabaseConnection;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{PushSettings, PushSubscriptions, PushWhen, VapidKey};
use crate::{
    domain::UserId,
    outbox::{Channel, ChannelKind, Contact, Delivery, DeliveryError, RenderedNotification},
    presence::Presence,
};
use entity::push_subscription;

/// The largest push message body (RFC 8291 §4: 4,096 octets).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// What aes128gcm adds to the plaintext in one record: the header (16-byte
/// salt, 4-byte record size, 1-byte key id length, 65-byte key id), the
/// padding delimiter and the 16-byte tag.
const ENCRYPTION_OVERHEAD: usize = 16 + 4 + 1 + 65 + 1 + 16;
/// The largest payload before encryption.
pub const MAX_PAYLOAD_BYTES: usize = MAX_MESSAGE_BYTES - ENCRYPTION_OVERHEAD;
/// The longest a push service holds a push for an offline browser.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The TTL of a push whose notification does not expire.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the service worker receives, decrypted.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Payload {
    pub id: i64,
    pub title: String,
    pub body: String,
    pub action_url: Option<String>,
    /// The user's unread count when the push was sent (their own
    /// notifications; announcements are counted by the page).
    pub unread_count: u64,
}

impl Payload {
    /// The payload's JSON, at most [`MAX_PAYLOAD_BYTES`]: the body is cut
    /// (at a character, with `…`) until it fits; the title is never cut.
    /// Only a title and link too long for any body lose the link.
    pub fn encode(mut self) -> Vec<u8> {
        let json = |p: &Payload| serde_json::to_vec(p).expect("a payload encodes");
        let whole = json(&self);
        if whole.len() <= MAX_PAYLOAD_BYTES {
            return whole;
        }
        let chars: Vec<char> = self.body.chars().collect();
        let cut = |p: &mut Payload, keep: usize| {
            p.body = chars[..keep].iter().collect::<String>();
            if keep < chars.len() {
                p.body.push('…');
            }
        };
        // The longest prefix that fits, by bisection over characters.
        let (mut fits, mut over) = (0usize, chars.len());
        while over - fits > 1 {
            let mid = (fits + over) / 2;
            cut(&mut self, mid);
            if json(&self).len() <= MAX_PAYLOAD_BYTES { fits = mid } else { over = mid }
        }
        cut(&mut self, fits);
        let encoded = json(&self);
        if encoded.len() <= MAX_PAYLOAD_BYTES {
            return encoded;
        }
        self.action_url = None;
        json(&self)
    }
}

/// The `Topic` of a group: the first 32 characters of the base64url
/// SHA-256 of the group key (RFC 8030 allows 32 characters of the URL-safe
/// alphabet), the same for every update of the group.
pub fn topic(group_key: &str) -> String {
    let digest = Sha256::digest(group_key.as_bytes());
    URL_SAFE_NO_PAD.encode(digest)[..32].to_owned()
}

/// Sends pushes.
pub struct PushChannel {
    subscriptions: Arc<PushSubscriptions>,
    vapid: Arc<VapidKey>,
    subject: String,
    when: PushWhen,
    /// Who has a stream open now, for `TIDINGS_PUSH_WHEN=offline` (across
    /// the cluster with Redis).
    presence: Arc<dyn Presence>,
    /// The read pool: the unread count of the payload.
    db: DatabaseConnection,
    /// hyper-util's pooled client over rustls (ring, webpki roots), as the
    /// webhook channel's: keep-alive per push service, no redirects.
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// One push's deadline: connect, send, answer.
    timeout: Duration,
}

/// The `User-Agent` of every push.
const USER_AGENT: &str = concat!("tidings/", env!("CARGO_PKG_VERSION"));

/// How one subscription's push ended.
enum Sent {
    Delivered,
    /// 404 or 410: the subscription was removed.
    Gone(String),
    Failed(DeliveryError),
}

impl PushChannel {
    /// A channel with `settings`' key (which must be set), whose requests
    /// give up after `timeout` (shorter than the outbox lease).
    pub fn new(
        settings: &PushSettings,
        subscriptions: Arc<PushSubscriptions>,
        presence: Arc<dyn Presence>,
        db: DatabaseConnection,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let vapid = settings.vapid.clone().ok_or_else(|| anyhow::anyhow!("Web Push needs a VAPID key"))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https);
        Ok(PushChannel { subscriptions, vapid, subject: settings.subject.clone(), when: settings.when, presence, db, client, timeout })
    }

    async fn push(&self, delivery: &Delivery, notification: &RenderedNotification) -> Result<(), DeliveryError> {
        let user = UserId::parse(delivery.user_id.clone()).map_err(|_| DeliveryError::permanent("the delivery's user id is not valid"))?;
        if self.when == PushWhen::Offline && self.presence.has_open_stream(&user).await {
            return Err(DeliveryError::skipped("the user had a stream open when the push fell due (TIDINGS_PUSH_WHEN=offline)"));
        }
        let subscriptions = self.subscriptions.of_user(user.as_str()).await.map_err(|e| DeliveryError::retryable(format!("reading push subscriptions: {e}")))?;
        if subscriptions.is_empty() {
            return Err(DeliveryError::skipped("the user has no push subscription"));
        }
        let now = Utc::now();
        let unread_count = crate::store::unread::count(&self.db, &user, now).await.map_err(|e| DeliveryError::retryable(format!("reading the unread count: {e}")))?;
        let payload = Payload {
            id: notification.id,
            title: notification.title.clone(),
            body: notification.body.clone(),
            action_url: notification.action_url.clone(),
            unread_count,
        }
        .encode();
        let ttl = match notification.expires_at {
            Some(at) => (at - now).to_std().unwrap_or_default().min(MAX_TTL),
            None => DEFAULT_TTL,
        };
        if ttl.is_zero() {
            return Err(DeliveryError::skipped("the notification expired before the push was sent"));
        }
        let headers = Headers {
            ttl: ttl.as_secs(),
            urgency: if notification.critical { "high" } else { "normal" },
            topic: notification.group_key.as_deref().map(topic),
        };
        let (mut delivered, mut gone, mut retry, mut refused) = (0, Vec::new(), None, None);
        for subscription in &subscriptions {
            match self.send(subscription, &payload, &headers).await {
                Sent::Delivered => delivered += 1,
                Sent::Gone(why) => gone.push(why),
                Sent::Failed(e) if e.retryable => retry = Some(e),
                Sent::Failed(e) => refused = Some(e),
            }
        }
        if let Some(e) = retry {
            return Err(e);
        }
        if delivered > 0 {
            return Ok(());
        }
        if let Some(e) = refused {
            return Err(e);
        }
        Err(DeliveryError::permanent(format!("every push subscription is gone and was removed ({})", gone.join("; "))))
    }

    /// One push to one browser.
    async fn send(&self, subscription: &push_subscription::Model, payload: &[u8], headers: &Headers) -> Sent {
        if subscription.expires_at.is_some_and(|at| at <= Utc::now()) {
            return self.gone(subscription, "the subscription's expirationTime passed".into()).await;
        }
        let endpoint = match url::Url::parse(&subscription.endpoint) {
            Ok(url) => url,
            Err(_) => return self.gone(subscription, "the stored endpoint is not a URL".into()).await,
        };
        let keys = URL_SAFE_NO_PAD
            .decode(&subscription.p256dh)
            .ok()
            .and_then(|bytes| web_push_native::p256::PublicKey::from_sec1_bytes(&bytes).ok())
            .zip(URL_SAFE_NO_PAD.decode(&subscription.auth).ok().and_then(|auth| <[u8; 16]>::try_from(auth.as_slice()).ok()));
        let Some((public, auth)) = keys else {
            return self.gone(subscription, "the stored keys do not decode".into()).await;
        };
        let body = match web_push_native::encrypt(payload.to_vec(), &public, &web_push_native::Auth::from(auth)) {
            Ok(body) => body,
            Err(e) => return Sent::Failed(DeliveryError::permanent(format!("encrypting the push: {e}"))),
        };
        let authorization = match self.vapid.authorization(&endpoint, &self.subject) {
            Ok(header) => header,
            Err(e) => return Sent::Failed(DeliveryError::permanent(format!("signing the VAPID token: {e}"))),
        };
        let origin = endpoint.origin().ascii_serialization();
        let mut request = Request::post(endpoint.as_str())
            .header(header::AUTHORIZATION, authorization)
            .header(header::CONTENT_ENCODING, "aes128gcm")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::USER_AGENT, USER_AGENT)
            .header("TTL", headers.ttl.to_string())
            .header("Urgency", headers.urgency);
        if let Some(topic) = &headers.topic {
            request = request.header("Topic", topic);
        }
        let request = match request.body(Full::new(Bytes::from(body))) {
            Ok(request) => request,
            Err(e) => return self.gone(subscription, format!("the stored endpoint cannot be requested: {e}")).await,
        };
        let attempt = async {
            let response = self.client.request(request).await.map_err(|e| format!("POST to the push service {origin}: {}", error_chain(&e)))?;
            let status = response.status();
            // Read the (small) answer, so the connection goes back to the pool.
            let _ = response.into_body().collect().await;
            Ok::<_, String>(status)
        };
        let status = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(status)) => status,
            Ok(Err(message)) => return Sent::Failed(DeliveryError::retryable(message)),
            Err(_) => return Sent::Failed(DeliveryError::retryable(format!("the push service {origin} gave no answer within {} s", self.timeout.as_secs_f32()))),
        };
        if status.is_success() {
            return Sent::Delivered;
        }
        let message = format!("the push service {origin} answered {}", status.as_u16());
        match status.as_u16() {
            404 | 410 => self.gone(subscription, message).await,
            408 | 429 | 500..=599 => Sent::Failed(DeliveryError::retryable(message)),
            _ => Sent::Failed(DeliveryError::permanent(message)),
        }
    }

    /// Removes a dead subscription; if that fails, the row is retried and
    /// the removal with it.
    async fn gone(&self, subscription: &push_subscription::Model, why: String) -> Sent {
        match self.subscriptions.remove(subscription.id).await {
            Ok(()) => {
                metrics::counter!("tidings_push_subscriptions_removed_total").increment(1);
                tracing::info!(user = %subscription.user_id, reason = %why, "a push subscription is gone; removed");
                Sent::Gone(why)
            }
            Err(e) => Sent::Failed(DeliveryError::retryable(format!("{why}; removing the subscription failed: {e}"))),
        }
    }
}

/// The RFC 8030 headers of one notification's pushes.
struct Headers {
    ttl: u64,
    urgency: &'static str,
    topic: Option<String>,
}

/// An error with its causes (hyper's own message says only "client error").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Channel for PushChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Push
    }

    fn deliver<'a>(&'a self, delivery: &'a Delivery, notification: &'a RenderedNotification, _contact: &'a Contact) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.push(delivery, notification))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(title: &str, body: &str) -> Payload {
        Payload { id: 1, title: title.into(), body: body.into(), action_url: Some("/x".into()), unread_count: 3 }
    }

    #[test]
    fn a_long_body_is_cut_to_fit_and_the_title_is_kept_whole() {
        let title = "é".repeat(255);
        let encoded = payload(&title, &"naïve ".repeat(2000)).encode();
        assert!(encoded.len() <= MAX_PAYLOAD_BYTES, "{}", encoded.len());
        assert!(encoded.len() > MAX_PAYLOAD_BYTES - 8, "the body fills what is left: {}", encoded.len());
        let back: serde_json::Value = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(back["title"], title.as_str());
        assert!(back["body"].as_str().unwrap().ends_with('…'));
        assert_eq!(back["action_url"], "/x");
    }

    #[test]
    fn a_short_payload_is_left_alone() {
        let back: serde_json::Value = serde_json::from_slice(&payload("Hi", "there").encode()).unwrap();
        assert_eq!(back, serde_json::json!({"id": 1, "title": "Hi", "body": "there", "action_url": "/x", "unread_count": 3}));
    }

    #[test]
    fn a_topic_is_32_url_safe_characters_and_the_same_for_a_group() {
        let t = topic("order:42");
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(t, topic("order:42"));
        assert_ne!(t, topic("order:43"));
    }
}
