//! Web Push: notifications that reach a browser whose tab is closed.
//!
//! - **VAPID** ([`vapid`]): the hub's key pair; browsers subscribe with its
//!   public key (`GET /v1/push/vapid_public_key`).
//! - **Subscriptions** (this module): each browser a user enables push in
//!   posts its `PushSubscription` (`POST /v1/push/subscriptions`); a user
//!   may have several devices. A push service answering 404 or 410 for one
//!   removes it.
//! - **Sending** ([`channel`]): the outbox's `push` channel encrypts the
//!   payload to each of the user's subscriptions (RFC 8291, aes128gcm),
//!   signs with VAPID, and posts it to the push service (RFC 8030), with
//!   the outbox's retries.
//! - **Only when it helps**: by default (`TIDINGS_PUSH_WHEN=offline`) a
//!   push is skipped while the user has a stream open, since the page shows
//!   the notification already; and never sent for a notification read
//!   before it fell due.

pub mod channel;
pub mod vapid;

use std::{net::IpAddr, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, sea_query::OnConflict};
use serde::Deserialize;

use crate::{
    domain::{DomainError, UserId},
    writer::Writer,
};
use entity::push_subscription::{self, Column, Entity as Subscriptions};

pub use vapid::VapidKey;

/// The longest endpoint accepted; push services' are a few hundred characters.
pub const MAX_ENDPOINT_CHARS: usize = 2048;
/// Devices a user may have subscribed: beyond it the oldest is dropped
/// (browsers re-subscribe with new endpoints over time, and old ones are
/// only found dead when a push is refused).
pub const MAX_PER_USER: usize = 20;

/// When a push is sent (`TIDINGS_PUSH_WHEN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PushWhen {
    /// Only if the user has no open stream when the delivery falls due: an
    /// open page shows the notification already.
    #[default]
    Offline,
    /// Whatever the user's streams.
    Always,
}

/// How Web Push works on this hub.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// The VAPID key; `None` turns Web Push off (no channel, and the public
    /// key answers 404). `tidings serve` always has one (generated on a
    /// first start).
    pub vapid: Option<Arc<VapidKey>>,
    /// The VAPID `sub`: how a push service reaches the operator, a
    /// `mailto:` or `https:` URL.
    pub subject: String,
    pub when: PushWhen,
    /// Accept `http://` endpoints and loopback or private hosts: for tests
    /// and local trials with a push service of one's own, never production
    /// (a user could make the hub post to internal addresses).
    pub allow_insecure: bool,
}

/// The VAPID subject when none is configured.
pub const DEFAULT_SUBJECT: &str = "mailto:tidings@localhost";

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings { vapid: None, subject: DEFAULT_SUBJECT.to_owned(), when: PushWhen::Offline, allow_insecure: false }
    }
}

/// The browser's `PushSubscription.toJSON()`, as posted.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// The push service's URL for this browser: `https://`.
    #[schema(max_length = 2048)]
    pub endpoint: String,
    /// When the push service ends the subscription, in milliseconds since
    /// the epoch; `null` for never.
    #[serde(default, rename = "expirationTime")]
    pub expiration_time: Option<f64>,
    pub keys: SubscriptionKeys,
}

/// The keys a payload is encrypted to.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key: base64url of the 65-byte uncompressed point.
    #[schema(min_length = 86, max_length = 88)]
    pub p256dh: String,
    /// The browser's authentication secret: base64url of 16 bytes.
    #[schema(min_length = 22, max_length = 24)]
    pub auth: String,
}

/// A checked subscription, ready to store.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub endpoint: url::Url,
    /// Unpadded base64url, as the channel decodes it.
    pub p256dh: String,
    pub auth: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl SubscriptionRequest {
    /// Checks the endpoint (https, or http and private hosts when
    /// `allow_insecure`) and the keys (a P-256 point, a 16-byte secret),
    /// naming the field at fault.
    pub fn parse(self, allow_insecure: bool) -> Result<NewSubscription, DomainError> {
        let endpoint = parse_endpoint(&self.endpoint, allow_insecure)?;
        let p256dh = decode(&self.keys.p256dh).filter(|bytes| bytes.len() == 65 && p256::PublicKey::from_sec1_bytes(bytes).is_ok()).ok_or_else(|| {
            DomainError::invalid_field("keys.p256dh", "keys.p256dh must be a P-256 public key: base64url of the 65-byte uncompressed point")
        })?;
        let auth = decode(&self.keys.auth)
            .filter(|bytes| bytes.len() == 16)
            .ok_or_else(|| DomainError::invalid_field("keys.auth", "keys.auth must be base64url of 16 bytes"))?;
        let expires_at = match self.expiration_time {
            None => None,
            Some(ms) if ms.is_finite() && ms > 0.0 => Some(
                DateTime::from_timestamp_millis(ms as i64)
                    .ok_or_else(|| DomainError::invalid_field("expirationTime", "expirationTime must be milliseconds since 1970 or null"))?,
            ),
            Some(_) => return Err(DomainError::invalid_field("expirationTime", "expirationTime must be milliseconds since 1970 or null")),
        };
        if expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(DomainError::invalid_field("expirationTime", "the subscription has expired already"));
        }
        Ok(NewSubscription { endpoint, p256dh: URL_SAFE_NO_PAD.encode(p256dh), auth: URL_SAFE_NO_PAD.encode(auth), expires_at })
    }
}

/// Base64url, padded or not (browsers send it unpadded).
fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// An endpoint the hub may post to: absolute `https://` with a host and no
/// credentials; unless `allow_insecure`, not `localhost` nor a loopback,
/// private, link-local or unspecified address (the hub must not be turned
/// into a way to reach its own network).
pub fn parse_endpoint(text: &str, allow_insecure: bool) -> Result<url::Url, DomainError> {
    let invalid = |why: &str| DomainError::invalid_field("endpoint", format!("endpoint must be {why}"));
    if text.chars().count() > MAX_ENDPOINT_CHARS {
        return Err(invalid("at most 2048 characters"));
    }
    let url = url::Url::parse(text).map_err(|_| invalid("an absolute https URL"))?;
    let secure = url.scheme() == "https";
    if !(secure || (allow_insecure && url.scheme() == "http")) {
        return Err(invalid("an https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("a URL without credentials"));
    }
    let internal = match url.host() {
        None => return Err(invalid("an absolute https URL")),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost") || name.to_ascii_lowercase().ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => internal_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => internal_ip(IpAddr::V6(ip)),
    };
    if internal && !allow_insecure {
        return Err(invalid("a public push service's URL"));
    }
    Ok(url)
}

fn internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast() || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64,
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80 || v6.to_ipv4_mapped().is_some_and(|v4| internal_ip(IpAddr::V4(v4)))
        }
    }
}

/// The users' subscriptions: written through the writer, read from the pool.
pub struct PushSubscriptions {
    writer: Arc<Writer>,
    db: DatabaseConnection,
}

impl PushSubscriptions {
    /// Subscriptions written through `writer` and read from `db`.
    pub fn new(writer: Arc<Writer>, db: DatabaseConnection) -> Self {
        PushSubscriptions { writer, db }
    }

    /// Stores `user`'s subscription. An endpoint already stored (the same
    /// browser subscribing again, perhaps as another user) is replaced: an
    /// endpoint reaches one browser, whoever subscribed it last. Beyond
    /// [`MAX_PER_USER`] devices the oldest is dropped.
    pub async fn subscribe(&self, user: &UserId, new: NewSubscription) -> Result<(), DomainError> {
        let owner = user.as_str().to_owned();
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    let row = push_subscription::ActiveModel {
                        user_id: Set(owner.clone()),
                        endpoint: Set(new.endpoint.to_string()),
                        p256dh: Set(new.p256dh),
                        auth: Set(new.auth),
                        expires_at: Set(new.expires_at),
                        created_at: Set(Utc::now()),
                        ..Default::default()
                    };
                    Subscriptions::insert(row)
                        .on_conflict(
                            OnConflict::column(Column::Endpoint)
                                .update_columns([Column::UserId, Column::P256dh, Column::Auth, Column::ExpiresAt, Column::CreatedAt])
                                .to_owned(),
                        )
                        .exec_without_returning(write.conn())
                        .await?;
                    // At most one over: this is checked on every subscribe.
                    let newest_first: Vec<i64> = Subscriptions::find()
                        .select_only()
                        .column(Column::Id)
                        .filter(Column::UserId.eq(owner.as_str()))
                        .order_by_desc(Column::CreatedAt)
                        .order_by_desc(Column::Id)
                        .into_tuple()
                        .all(write.conn())
                        .await?;
                    let beyond: Vec<i64> = newest_first.into_iter().skip(MAX_PER_USER).collect();
                    if !beyond.is_empty() {
                        Subscriptions::delete_many().filter(Column::Id.is_in(beyond)).exec(write.conn()).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    /// Removes `user`'s subscription at `endpoint`, if they have one there.
    pub async fn unsubscribe(&self, user: &UserId, endpoint: &str) -> Result<(), DomainError> {
        let (owner, endpoint) = (user.as_str().to_owned(), endpoint.to_owned());
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    Subscriptions::delete_many().filter(Column::UserId.eq(owner)).filter(Column::Endpoint.eq(endpoint)).exec(write.conn()).await?;
                    Ok(())
                })
            })
            .await
    }

    /// Removes one subscription by id: its push service said it is gone.
    pub async fn remove(&self, id: i64) -> Result<(), DomainError> {
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    Subscriptions::delete_by_id(id).exec(write.conn()).await?;
                    Ok(())
                })
            })
            .await
    }

    /// `user`'s subscriptions, oldest first.
    pub async fn of_user(&self, user: &str) -> Result<Vec<push_subscription::Model>, DbErr> {
        of_user(&self.db, user).await
    }
}

/// `user`'s subscriptions, oldest first.
pub async fn of_user(conn: &impl ConnectionTrait, user: &str) -> Result<Vec<push_subscription::Model>, DbErr> {
    Subscriptions::find().filter(Column::UserId.eq(user)).order_by_asc(Column::Id).all(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(endpoint: &str, p256dh: &str, auth: &str) -> SubscriptionRequest {
        SubscriptionRequest { endpoint: endpoint.into(), expiration_time: None, keys: SubscriptionKeys { p256dh: p256dh.into(), auth: auth.into() } }
    }

    const P256DH: &str = "BLn9b-VR0ca83knDNZ32dCHGyjJp-1riX9ZTN40MqV8K_LpQmLqxC_DoHvqvFXO_nGdAB4W9dogZb_sM-uV4JbY";
    const AUTH: &str = "_ordMnz7uTCmrpBTeUV4Bw";

    fn field(result: Result<NewSubscription, DomainError>) -> String {
        match result {
            Err(DomainError::Invalid { field: Some(field), .. }) => field,
            other => panic!("expected a refusal naming a field, got {other:?}"),
        }
    }

    #[test]
    fn a_browsers_subscription_parses() {
        let parsed = request("https://fcm.googleapis.com/fcm/send/abc", P256DH, AUTH).parse(false).unwrap();
        assert_eq!(parsed.p256dh, P256DH);
        assert_eq!(parsed.auth, AUTH);
    }

    #[test]
    fn endpoints_must_be_https_and_public_unless_insecure_is_allowed() {
        for bad in ["http://push.example.com/x", "ftp://push.example.com/x", "https://127.0.0.1/x", "https://10.1.2.3/x", "https://localhost/x", "https://[::1]/x", "https://u:p@push.example.com/x", "push"] {
            assert_eq!(field(request(bad, P256DH, AUTH).parse(false)), "endpoint", "{bad}");
        }
        assert!(request("http://127.0.0.1:9/x", P256DH, AUTH).parse(true).is_ok());
    }

    #[test]
    fn keys_of_the_wrong_length_or_off_the_curve_are_refused() {
        assert_eq!(field(request("https://push.example.com/x", "BAAA", AUTH).parse(false)), "keys.p256dh");
        let off_curve = URL_SAFE_NO_PAD.encode([4u8; 65]);
        assert_eq!(field(request("https://push.example.com/x", &off_curve, AUTH).parse(false)), "keys.p256dh");
        assert_eq!(field(request("https://push.example.com/x", P256DH, "c2hvcnQ").parse(false)), "keys.auth");
    }
}
