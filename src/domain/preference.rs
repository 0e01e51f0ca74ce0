//! Preferences: whether a user wants a notification type, and on which channels.

use serde::{Deserialize, Serialize};

/// Delivery channels: `web` is the stream; the others are delivered from
/// the durable outbox (`crate::outbox`) when the hub has them configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Channels {
    pub web: bool,
    pub email: bool,
    pub push: bool,
    /// The operator's own endpoints (`POST /v1/webhooks`): the way out to
    /// channels the hub does not speak (SMS, FCM, APNs).
    pub webhook: bool,
}

impl Default for Channels {
    /// The operator's default unless configured: web and webhook on (a
    /// webhook delivers only where an operator registered one), the others off.
    fn default() -> Self {
        Channels { web: true, email: false, push: false, webhook: true }
    }
}

/// A user's preference for one type, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Preference {
    #[serde(rename = "type")]
    pub kind: String,
    pub enabled: bool,
    pub channels: Channels,
}

impl Preference {
    /// Whether a notification of this type reaches the user today. While the
    /// stream is the only delivering channel, a type with `web` off reaches
    /// nobody, so it is suppressed like a disabled one.
    pub fn delivers(&self) -> bool {
        self.enabled && self.channels.web
    }
}

impl From<entity::preference::Model> for Preference {
    fn from(row: entity::preference::Model) -> Self {
        Preference {
            kind: row.kind,
            enabled: row.enabled,
            channels: Channels { web: row.web, email: row.email, push: row.push, webhook: row.webhook },
        }
    }
}

/// The body of `PUT /v1/preferences/{type}`. Channels left out keep the
/// operator's default.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferenceUpdate {
    pub enabled: bool,
    #[serde(default)]
    pub channels: Option<ChannelsUpdate>,
}

/// Channels in an update; each one optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelsUpdate {
    pub web: Option<bool>,
    pub email: Option<bool>,
    pub push: Option<bool>,
    pub webhook: Option<bool>,
}

impl ChannelsUpdate {
    /// The channels this update sets, the rest from `defaults`.
    pub fn resolve(&self, defaults: Channels) -> Channels {
        Channels {
            web: self.web.unwrap_or(defaults.web),
            email: self.email.unwrap_or(defaults.email),
            push: self.push.unwrap_or(defaults.push),
            webhook: self.webhook.unwrap_or(defaults.webhook),
        }
    }
}
