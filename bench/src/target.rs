//! The hub under test, described well enough to subscribe to it and publish
//! to it: Tidings itself (tokens minted with its secret, its JSON publish
//! API), or any hub given as a publish URL template, a subscribe URL
//! template and how its event ids look (Nchan, the better-sse hub, ...).

use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::{
    cli::{IdStyle, TargetArgs},
    stamp::Stamp,
};

/// Most recipients one Tidings publish may name (`user_ids`).
pub const TIDINGS_MAX_RECIPIENTS: usize = 1000;

/// Lifetime of minted tokens: longer than any bounded run.
const TOKEN_TTL_SECS: u64 = 6 * 3600;

/// A hub and how to talk to it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Label in reports.
    pub name: String,
    pub kind: Kind,
    /// The server's process, for /proc sampling.
    pub server_pid: Option<u32>,
    /// Sentences about the target that go into its report.
    pub notes: Vec<String>,
    /// Tidings only: its SQLite file, to count stored rows after a run.
    pub tidings_db: Option<PathBuf>,
}

/// The two ways a hub can be described.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Tidings: per-user streams at `/v1/stream`, publishes at
    /// `/v1/notifications`, both authenticated with HS256 JWTs.
    Tidings { base: String, publish_base: String, secret: String, publish_token: String },
    /// A channel hub: POST the message to `publish`, subscribe to
    /// `subscribe`; both contain `{channel}`.
    Template { publish: String, subscribe: String, ids: IdStyle },
}

/// One SSE connection a worker opens, and what it should receive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnSpec {
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The `to` of every stamp this connection may receive; anything else
    /// is counted as misrouted.
    pub expect: String,
}

/// One publish request. A message to a large audience can take several
/// (Tidings: at most 1000 `user_ids` per request).
#[derive(Debug, Clone)]
pub struct PostSpec {
    pub url: String,
    pub bearer: Option<String>,
    pub recipients: Recipients,
    /// Connections that should receive the message if this request succeeds.
    pub listeners: u32,
    /// What the stamp's `to` says: the user, or the audience's name.
    pub to: String,
    /// Whether the answer lists the recipients it accepted (Tidings'
    /// `created`, `suppressed`, `rate_limited`): a 201 may still refuse some.
    pub itemized: bool,
    /// What the body looks like.
    pub shape: Shape,
}

/// The JSON shape of a publish body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A Tidings notification: `user_id(s)`, `type`, `title`, `body`
    /// (the filler), `data.bench`.
    Notification,
    /// A Tidings topic event: `type` and `data` only, the filler in
    /// `data.body` beside `data.bench` (topic publishes take no other
    /// field).
    TopicEvent,
    /// A Tidings announcement: a notification with `"audience": "all"`
    /// instead of `user_id(s)`, otherwise as [`Shape::Notification`].
    Announcement,
}

/// Prefix of the broadcast topic names the bench publishes to; subscriber
/// tokens carry the pattern `bench:*`.
pub const TOPIC_PREFIX: &str = "bench:";

/// The parts of a Tidings publish answer that say who got the message.
#[derive(Debug, Deserialize)]
pub struct Itemized {
    #[serde(default)]
    pub created: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    pub suppressed: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    pub rate_limited: Vec<serde::de::IgnoredAny>,
}

/// Whom a publish request names in its body.
#[derive(Debug, Clone)]
pub enum Recipients {
    /// Tidings `user_id`.
    One(String),
    /// Tidings `user_ids`.
    Many(Vec<String>),
    /// A channel hub: the URL names the channel, the body names nobody.
    Channel,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    /// Patterns of the broadcast topics the holder may read.
    #[serde(skip_serializing_if = "Option::is_none")]
    topics: Option<&'a [&'a str]>,
}

/// The JSON body of a publish: the Tidings notification shape, which the
/// channel hubs receive too so that every hub carries the same bytes.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_ids: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<&'static str>,
    r#type: &'static str,
    title: &'static str,
    body: &'a str,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    bench: &'a Stamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

/// The JSON body of a topic publish (Tidings refuses any other field).
#[derive(Serialize)]
struct TopicBody<'a> {
    r#type: &'static str,
    data: Data<'a>,
}

impl Target {
    /// Builds the target from the command line.
    pub fn from_args(args: &TargetArgs) -> anyhow::Result<Self> {
        let kind = match (&args.tidings, &args.publish_url, &args.subscribe_url) {
            (Some(base), None, None) => {
                let secret = args.secret.clone().context("--tidings needs --secret (or TIDINGS_JWT_SECRET)")?;
                let base = base.trim_end_matches('/').to_owned();
                let publish_base = args.tidings_publish.as_deref().map_or_else(|| base.clone(), |p| p.trim_end_matches('/').to_owned());
                let publish_token = mint(&secret, "tidings-bench-publisher", Some("publish"), None)?;
                Kind::Tidings { base, publish_base, secret, publish_token }
            }
            (None, Some(publish), Some(subscribe)) => {
                if !publish.contains("{channel}") || !subscribe.contains("{channel}") {
                    bail!("--publish-url and --subscribe-url must both contain {{channel}}");
                }
                Kind::Template { publish: publish.clone(), subscribe: subscribe.clone(), ids: args.ids }
            }
            _ => bail!("give either --tidings URL, or --publish-url and --subscribe-url"),
        };
        let name = args.name.clone().unwrap_or_else(|| match kind {
            Kind::Tidings { .. } => "tidings".into(),
            Kind::Template { .. } => "hub".into(),
        });
        Ok(Target { name, kind, server_pid: args.server_pid, notes: args.note.clone(), tidings_db: args.tidings_db.clone() })
    }

    /// Whether this is Tidings (which fans out by `user_ids`).
    pub fn is_tidings(&self) -> bool {
        matches!(self.kind, Kind::Tidings { .. })
    }

    /// Tidings only: the base URL requests go to (`--tidings-publish` if
    /// given) and the token with scope `publish`, for scenarios that use
    /// Tidings' own API (`batch`, `chat`) rather than the common publish.
    pub fn tidings_api(&self) -> Option<(&str, &str)> {
        match &self.kind {
            Kind::Tidings { publish_base, publish_token, .. } => Some((publish_base, publish_token)),
            Kind::Template { .. } => None,
        }
    }

    /// Tidings only: an operator's token (scope `admin`), to register a
    /// webhook endpoint.
    pub fn admin_token(&self) -> anyhow::Result<String> {
        match &self.kind {
            Kind::Tidings { secret, .. } => mint(secret, "tidings-bench-operator", Some("admin"), None),
            Kind::Template { .. } => bail!("admin tokens exist only for Tidings"),
        }
    }

    /// Tidings only: a user token (no scope) for `user`, to call the API as
    /// that user (create a conversation, send a message).
    pub fn user_token(&self, user: &str) -> anyhow::Result<String> {
        match &self.kind {
            Kind::Tidings { secret, .. } => mint(secret, user, None, None),
            Kind::Template { .. } => bail!("user tokens exist only for Tidings"),
        }
    }

    /// Whether a subscriber can resume from an event id (for `catchup`).
    pub fn resumes(&self) -> bool {
        match &self.kind {
            Kind::Tidings { .. } => true,
            Kind::Template { ids, .. } => *ids == IdStyle::Opaque,
        }
    }

    /// The stream of `user` (Tidings) or of `channel` (channel hubs),
    /// expecting stamps addressed to `expect`.
    pub fn conn(&self, user: &str, channel: &str, expect: &str) -> anyhow::Result<ConnSpec> {
        Ok(match &self.kind {
            Kind::Tidings { base, secret, .. } => ConnSpec {
                url: format!("{base}/v1/stream"),
                headers: vec![("authorization".into(), format!("Bearer {}", mint(secret, user, None, None)?))],
                expect: expect.into(),
            },
            Kind::Template { subscribe, .. } => ConnSpec {
                url: subscribe.replace("{channel}", channel),
                headers: Vec::new(),
                expect: expect.into(),
            },
        })
    }

    /// The stream of subscriber `user` to the broadcast topic `room`:
    /// Tidings streams `/v1/stream?topic=bench:ROOM` with a token whose
    /// `topics` claim is `["bench:*"]`; a channel hub subscribes to the
    /// channel `room`, as in `fanout`. Stamps are addressed to `room`.
    pub fn topic_conn(&self, user: &str, room: &str) -> anyhow::Result<ConnSpec> {
        Ok(match &self.kind {
            Kind::Tidings { base, secret, .. } => {
                let pattern = format!("{TOPIC_PREFIX}*");
                let token = mint(secret, user, None, Some(&[pattern.as_str()]))?;
                ConnSpec {
                    url: format!("{base}/v1/stream?topic={}", topic_name(room)?),
                    headers: vec![("authorization".into(), format!("Bearer {token}"))],
                    expect: room.into(),
                }
            }
            Kind::Template { .. } => self.conn(user, room, room)?,
        })
    }

    /// The one request that sends a message to the broadcast topic `room`
    /// with `listeners` subscribers: Tidings `POST /v1/topics/bench:ROOM/events`
    /// (stored once, whatever the audience), a channel hub a publish to the
    /// channel `room`. Both carry the same body, the topic event's shape.
    pub fn posts_to_topic(&self, room: &str, listeners: u32) -> anyhow::Result<Vec<PostSpec>> {
        let url = match &self.kind {
            Kind::Tidings { publish_base, .. } => format!("{publish_base}/v1/topics/{}/events", topic_name(room)?),
            Kind::Template { publish, .. } => publish.replace("{channel}", room),
        };
        let bearer = match &self.kind {
            Kind::Tidings { publish_token, .. } => Some(publish_token.clone()),
            Kind::Template { .. } => None,
        };
        Ok(vec![PostSpec { url, bearer, recipients: Recipients::Channel, listeners, to: room.into(), itemized: false, shape: Shape::TopicEvent }])
    }

    /// The one request that sends an announcement to every user, `listeners`
    /// of whom are connected: Tidings `POST /v1/notifications` with
    /// `"audience": "all"` (stored once, whatever the number of users; its
    /// 201 lists the one notification in `created`, so it is not itemized
    /// per recipient), a channel hub a publish to the channel `room` all the
    /// subscribers are on. Both carry the same body; stamps are addressed to
    /// `room`.
    pub fn posts_to_all(&self, room: &str, listeners: u32) -> Vec<PostSpec> {
        let (url, bearer) = match &self.kind {
            Kind::Tidings { publish_base, publish_token, .. } => (format!("{publish_base}/v1/notifications"), Some(publish_token.clone())),
            Kind::Template { publish, .. } => (publish.replace("{channel}", room), None),
        };
        vec![PostSpec { url, bearer, recipients: Recipients::Channel, listeners, to: room.into(), itemized: false, shape: Shape::Announcement }]
    }

    /// The requests that deliver one message to one user with `listeners`
    /// connections.
    pub fn posts_to_user(&self, user: &str, listeners: u32) -> Vec<PostSpec> {
        vec![match &self.kind {
            Kind::Tidings { publish_base, publish_token, .. } => PostSpec {
                url: format!("{publish_base}/v1/notifications"),
                bearer: Some(publish_token.clone()),
                recipients: Recipients::One(user.into()),
                listeners,
                to: user.into(),
                itemized: true,
                shape: Shape::Notification,
            },
            Kind::Template { publish, .. } => PostSpec {
                url: publish.replace("{channel}", user),
                bearer: None,
                recipients: Recipients::Channel,
                listeners,
                to: user.into(),
                itemized: false,
                shape: Shape::Notification,
            },
        }]
    }

    /// The requests that deliver one message to a whole audience, each
    /// member with one connection. A channel hub publishes once to the
    /// audience's channel; Tidings, which has no conversations yet, names
    /// the members with `user_ids`, 1000 per request.
    pub fn posts_to_audience(&self, room: &str, members: &[String]) -> Vec<PostSpec> {
        match &self.kind {
            Kind::Tidings { publish_base, publish_token, .. } => members
                .chunks(TIDINGS_MAX_RECIPIENTS)
                .map(|chunk| PostSpec {
                    url: format!("{publish_base}/v1/notifications"),
                    bearer: Some(publish_token.clone()),
                    recipients: Recipients::Many(chunk.to_vec()),
                    listeners: chunk.len() as u32,
                    to: room.into(),
                    itemized: true,
                    shape: Shape::Notification,
                })
                .collect(),
            Kind::Template { publish, .. } => vec![PostSpec {
                url: publish.replace("{channel}", room),
                bearer: None,
                recipients: Recipients::Channel,
                listeners: members.len() as u32,
                to: room.into(),
                itemized: false,
                shape: Shape::Notification,
            }],
        }
    }

    /// One-line description for reports.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Tidings { base, .. } => format!("Tidings at {base} (per-user streams, HS256 tokens)"),
            Kind::Template { publish, subscribe, ids } => {
                format!("channel hub: publish {publish}, subscribe {subscribe}, ids {ids:?}").to_lowercase()
            }
        }
    }
}

impl PostSpec {
    /// The JSON body for this request carrying `stamp`.
    pub fn body(&self, stamp: &Stamp, filler: &str) -> String {
        let (user_id, user_ids) = match &self.recipients {
            Recipients::One(user) => (Some(user.as_str()), None),
            Recipients::Many(users) => (None, Some(users.as_slice())),
            Recipients::Channel => (None, None),
        };
        // The channel hubs get an announcement's very bytes, `audience` included.
        let audience = (self.shape == Shape::Announcement).then_some("all");
        let encoded = match self.shape {
            Shape::Notification | Shape::Announcement => {
                serde_json::to_string(&Body { user_id, user_ids, audience, r#type: "bench", title: "bench", body: filler, data: Data { bench: stamp, body: None } })
            }
            Shape::TopicEvent => serde_json::to_string(&TopicBody { r#type: "bench", data: Data { bench: stamp, body: Some(filler) } }),
        };
        encoded.expect("plain JSON")
    }
}

/// The Tidings topic of the bench's audience `room`: `bench:ROOM`, checked
/// against Tidings' rule (1-100 characters of `a-z 0-9 _ . : -`).
fn topic_name(room: &str) -> anyhow::Result<String> {
    let name = format!("{TOPIC_PREFIX}{room}");
    if name.len() > 100 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-')) {
        bail!("topic name {name:?} is not 1-100 characters of a-z 0-9 _ . : - (check --run-id)");
    }
    Ok(name)
}

/// Signs an HS256 token for `sub` the way Tidings expects, with the topic
/// patterns the holder may read if any.
fn mint(secret: &str, sub: &str, scope: Option<&str>, topics: Option<&[&str]>) -> anyhow::Result<String> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + TOKEN_TTL_SECS;
    let claims = Claims { sub, exp, scope, topics };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tidings() -> Target {
        let args = TargetArgs {
            name: None,
            tidings: Some("http://127.0.0.1:1".into()),
            tidings_publish: None,
            secret: Some("s".into()),
            publish_url: None,
            subscribe_url: None,
            ids: IdStyle::None,
            server_pid: None,
            tidings_db: None,
            note: Vec::new(),
        };
        Target::from_args(&args).unwrap()
    }

    #[test]
    fn an_announcement_names_the_audience_all_and_no_user_and_a_channel_hub_gets_the_same_bytes() {
        let stamp = Stamp { seq: 1, to: "room".into(), sent_ns: 2 };
        let posts = tidings().posts_to_all("room", 5);
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].url, "http://127.0.0.1:1/v1/notifications");
        assert_eq!(posts[0].listeners, 5);
        assert!(!posts[0].itemized, "the 201 lists one notification for everyone");
        let body: serde_json::Value = serde_json::from_str(&posts[0].body(&stamp, "xx")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"audience": "all", "type": "bench", "title": "bench", "body": "xx", "data": {"bench": {"seq": 1, "to": "room", "sent_ns": 2}}})
        );

        let hub = Target {
            name: "hub".into(),
            kind: Kind::Template { publish: "http://h/pub/{channel}".into(), subscribe: "http://h/sub/{channel}".into(), ids: IdStyle::None },
            server_pid: None,
            notes: Vec::new(),
            tidings_db: None,
        };
        let channel = hub.posts_to_all("room", 5);
        assert_eq!(channel[0].url, "http://h/pub/room");
        assert_eq!(channel[0].body(&stamp, "xx"), posts[0].body(&stamp, "xx"));
    }
}
