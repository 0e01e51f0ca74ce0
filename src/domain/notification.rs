//! Notifications: the rules for what a backend may publish, and the object
//! clients receive.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{TopicName, UserId};
use crate::domain::DomainError;

/// The most recipients one request may name.
pub const MAX_RECIPIENTS: usize = 1000;
/// The largest `data` object, encoded, in bytes.
pub const MAX_DATA_BYTES: usize = 16 * 1024;
/// The longest `body`, in characters.
pub const MAX_BODY_CHARS: usize = 10_000;
/// How deeply `data` may nest: deeper objects are refused before they reach
/// clients whose JSON parsers may have lower limits than ours.
pub const MAX_DATA_DEPTH: usize = 16;
/// The longest `title`, in characters.
pub const MAX_TITLE_CHARS: usize = 255;
/// The longest `action_url` or `group_key`, in characters.
const MAX_URL_CHARS: usize = 2048;
const MAX_GROUP_KEY_CHARS: usize = 255;

/// A notification type such as `comment.created`: 1 to 50 characters of
/// `a-z 0-9 _ . -`, so it is safe in metrics labels, URLs and preferences.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NotificationType(String);

impl NotificationType {
    /// Applies the contract's rule for types.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let valid = (1..=50).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(NotificationType(raw.to_owned()))
        } else {
            Err("must be 1-50 characters of a-z, 0-9, '_', '.', '-'")
        }
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The body of `POST /v1/notifications`, as sent. Unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The one recipient; give this or `user_ids`, not both. Shown in the
    /// schema as a non-null string that may be left out: `null` reads as
    /// absent, and the document's `oneOf` asks for exactly one of the two.
    #[schema(value_type = String, required = false, min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub user_id: Option<String>,
    /// 1 to 1000 recipients; duplicates are folded.
    #[schema(value_type = Vec<super::user_id::UserIdText>, required = false, min_items = 1, max_items = 1000)]
    pub user_ids: Option<Vec<String>>,
    /// 1-50 characters of `a-z 0-9 _ . -`.
    #[serde(rename = "type")]
    #[schema(example = "comment.created", min_length = 1, max_length = 50, pattern = r"^[a-z0-9_.-]{1,50}$")]
    pub kind: String,
    /// 1-255 characters, no control characters, not only white space.
    /// May be left out (with `body`) when the type has a template
    /// (`PUT /v1/templates/{type}`): both are then rendered from it with
    /// `data`, in each recipient's contact locale.
    #[serde(default)]
    #[schema(value_type = String, required = false, min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    pub title: Option<String>,
    /// At most 10,000 characters.
    #[serde(default)]
    #[schema(max_length = 10000)]
    pub body: String,
    /// A JSON object of at most 16 KiB, nested at most 16 levels deep
    /// (JSON Schema cannot state either bound).
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    /// An absolute http(s) URL, or a path starting with a single `/`
    /// (not `//` or `/\`, which browsers read as another host). The pattern
    /// is narrower than the rule (hosts of letters, digits, `.`, `-`; ports
    /// up to 9999) so that every URL it admits also parses.
    #[schema(max_length = 2048, pattern = r"^(https?://[a-zA-Z][a-zA-Z0-9-]*(\.[a-zA-Z][a-zA-Z0-9-]*)*(:[1-9][0-9]{0,3})?(/[^\s\x00-\x1f\x7f-\x9f]*)?|/([^/\\\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*)?)$")]
    pub action_url: Option<String>,
    /// When the notification disappears; must be in the future.
    pub expires_at: Option<DateTime<Utc>>,
    /// 1-255 characters. While the recipient's notification with this key
    /// is unread, a new one updates it (`count` + 1) instead of adding one.
    #[schema(min_length = 1, max_length = 255)]
    pub group_key: Option<String>,
    /// Bypasses the recipient's preferences (security alerts and the like).
    #[serde(default)]
    pub critical: bool,
    /// An announcement instead of named recipients: `"all"` (every user)
    /// or `{"topic": "<name>"}` (every user whose token may read the
    /// topic). Stored once, whatever the audience's size.
    pub audience: Option<AudienceRequest>,
}

/// The `audience` of an announcement, as sent.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(untagged)]
pub enum AudienceRequest {
    /// `"all"`: every user.
    Everyone(Everyone),
    /// `{"topic": "<name>"}`: the readers of a topic.
    Topic(TopicAudience),
}

/// The literal `"all"`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Everyone {
    All,
}

/// `{"topic": "<name>"}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicAudience {
    /// A topic name: 1-100 characters of `a-z 0-9 _ . : -`.
    #[schema(min_length = 1, max_length = 100, pattern = r"^[a-z0-9_.:-]{1,100}$")]
    pub topic: String,
}

/// Who an announcement is for, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every user.
    All,
    /// Every user whose token may read this topic.
    Topic(TopicName),
}

impl Audience {
    /// The stored form: `None` for everyone, else the topic's name.
    pub fn stored(&self) -> Option<String> {
        match self {
            Audience::All => None,
            Audience::Topic(name) => Some(name.as_str().to_owned()),
        }
    }

    /// Reads the stored form back; a name that no longer parses (it cannot,
    /// short of a hand-edited row) reaches nobody rather than everyone.
    pub fn from_stored(stored: Option<&str>) -> Self {
        match stored {
            None => Audience::All,
            Some(name) => Audience::Topic(TopicName::parse(name).unwrap_or_else(|_| TopicName::parse("-").expect("a valid name"))),
        }
    }

    /// As the notification object shows it: `"all"` or `{"topic": ...}`.
    pub fn view(&self) -> AudienceRequest {
        match self {
            Audience::All => AudienceRequest::Everyone(Everyone::All),
            Audience::Topic(name) => AudienceRequest::Topic(TopicAudience { topic: name.as_str().to_owned() }),
        }
    }
}

/// A validated publish request: what the core stores, once per recipient.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// Distinct recipients, in the order given.
    pub recipients: Vec<UserId>,
    pub kind: NotificationType,
    pub title: String,
    pub body: String,
    /// Compact JSON of the `data` object.
    pub data: Option<String>,
    pub action_url: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub group_key: Option<String>,
    pub critical: bool,
    /// True when the title was left out: title and body are rendered from
    /// the type's template before the publish is queued.
    pub templated: bool,
    /// Recipients whose locale renders the template differently from
    /// `title` and `body`: user id → (title, body).
    pub localized: std::collections::HashMap<String, (String, String)>,
    /// `Some` for an announcement, stored once for this audience; then
    /// `recipients` is empty.
    pub audience: Option<Audience>,
}

impl NewNotification {
    /// The title and body `user`'s copy carries.
    pub fn text_for(&self, user: &str) -> (&str, &str) {
        match self.localized.get(user) {
            Some((title, body)) => (title, body),
            None => (&self.title, &self.body),
        }
    }
}

/// Checks a title against the contract's rule (also a rendered one).
pub fn validate_title(title: &str) -> Result<(), DomainError> {
    // The same rule as conversation titles: 1-255 characters, no control
    // characters (NUL breaks PostgreSQL text, line breaks break logs and
    // e-mail subjects), and not only white space.
    super::chat::validate_short("title", Some(title))?;
    if title.trim().is_empty() {
        return Err(DomainError::invalid_field("title", "title must not be only white space"));
    }
    Ok(())
}

/// Checks a body's length (also a rendered one).
pub fn validate_body(body: &str) -> Result<(), DomainError> {
    if body.chars().count() > MAX_BODY_CHARS {
        return Err(DomainError::invalid_field("body", "body must be at most 10000 characters"));
    }
    Ok(())
}

impl PublishRequest {
    /// Checks every rule of the contract; the first broken one names its field.
    pub fn validate(self, now: DateTime<Utc>) -> Result<NewNotification, DomainError> {
        let audience = match self.audience {
            None => None,
            Some(_) if self.user_id.is_some() || self.user_ids.is_some() => {
                return Err(DomainError::invalid_field("audience", "give user_id, user_ids or audience, not several"));
            }
            Some(AudienceRequest::Everyone(Everyone::All)) => Some(Audience::All),
            Some(AudienceRequest::Topic(TopicAudience { topic })) => {
                Some(Audience::Topic(TopicName::parse(&topic).map_err(|why| DomainError::invalid_field("audience", why))?))
            }
        };
        let raw_recipients = match (self.user_id, self.user_ids) {
            _ if audience.is_some() => Vec::new(),
            (Some(one), None) => vec![one],
            (None, Some(many)) => {
                if many.is_empty() || many.len() > MAX_RECIPIENTS {
                    return Err(DomainError::invalid_field("user_ids", "must list 1 to 1000 user ids"));
                }
                many
            }
            (Some(_), Some(_)) => {
                return Err(DomainError::invalid_field("user_ids", "give either user_id or user_ids, not both"));
            }
            (None, None) => return Err(DomainError::invalid_field("user_id", "user_id, user_ids or audience is required")),
        };
        let mut recipients: Vec<UserId> = Vec::with_capacity(raw_recipients.len());
        for raw in raw_recipients {
            let user = UserId::parse(raw).map_err(|why| DomainError::invalid_field("user_id", format!("user id {why}")))?;
            if !recipients.contains(&user) {
                recipients.push(user);
            }
        }
        let kind = NotificationType::parse(&self.kind).map_err(|why| DomainError::invalid_field("type", format!("type {why}")))?;
        let templated = self.title.is_none();
        if let Some(title) = &self.title {
            validate_title(title)?;
        }
        validate_body(&self.body)?;
        let data = match self.data {
            None | Some(serde_json::Value::Null) => None,
            Some(value @ serde_json::Value::Object(_)) => {
                if depth(&value) > MAX_DATA_DEPTH {
                    return Err(DomainError::invalid_field("data", "data must be nested at most 16 levels deep"));
                }
                let encoded = value.to_string();
                if encoded.len() > MAX_DATA_BYTES {
                    return Err(DomainError::invalid_field("data", "data must be at most 16 KiB when encoded"));
                }
                Some(encoded)
            }
            Some(_) => return Err(DomainError::invalid_field("data", "data must be a JSON object or null")),
        };
        if let Some(url) = &self.action_url {
            validate_action_url(url)?;
        }
        if let Some(expires_at) = self.expires_at
            && expires_at <= now
        {
            return Err(DomainError::invalid_field("expires_at", "expires_at must be in the future"));
        }
        if let Some(key) = &self.group_key {
            let chars = key.chars().count();
            if chars == 0 || chars > MAX_GROUP_KEY_CHARS {
                return Err(DomainError::invalid_field("group_key", "group_key must be 1-255 characters"));
            }
        }
        Ok(NewNotification {
            recipients,
            kind,
            title: self.title.unwrap_or_default(),
            body: self.body,
            data,
            action_url: self.action_url,
            expires_at: self.expires_at.map(truncate_to_millis),
            group_key: self.group_key,
            critical: self.critical,
            templated,
            localized: std::collections::HashMap::new(),
            audience,
        })
    }
}

/// How many levels of objects and arrays a value nests.
pub fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// An action URL is an absolute http(s) URL or a path on the page's origin:
/// anything else (`javascript:`, `data:`) would be a script injection vector
/// in every client that renders it as a link. A path starts with exactly one
/// `/`: browsers read `\` as `/`, so `/\evil.com`, like `//evil.com`, is a
/// link to another host.
fn validate_action_url(raw: &str) -> Result<(), DomainError> {
    let invalid = || DomainError::invalid_field("action_url", "action_url must be an http(s) URL or a path starting with a single '/'");
    if raw.is_empty() || raw.chars().count() > MAX_URL_CHARS || raw.chars().any(char::is_control) {
        return Err(invalid());
    }
    if let Some(rest) = raw.strip_prefix('/') {
        return if rest.starts_with(['/', '\\']) { Err(invalid()) } else { Ok(()) };
    }
    match url::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        _ => Err(invalid()),
    }
}

/// Times are kept to the millisecond: both databases store that exactly, so
/// what a client reads back equals what the stream sent.
pub fn truncate_to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
}

/// The notification object of the contract, as clients receive it over REST
/// and in `notification` events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Notification {
    pub id: i64,
    /// The recipient; `null` for an announcement, the same object for its
    /// whole audience (with each user's own `read_at`).
    pub user_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub body: String,
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    pub action_url: Option<String>,
    pub group_key: Option<String>,
    pub count: i32,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "rfc3339::option")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(with = "rfc3339::option")]
    pub read_at: Option<DateTime<Utc>>,
    /// An announcement's audience (`"all"` or `{"topic": ...}`); absent on
    /// a user's own notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<AudienceRequest>,
    /// Shown whatever the user's preferences (an announcement published
    /// with `critical`); left out when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub critical: bool,
    /// When the email of this notification is due, while one is pending:
    /// only in `GET /v1/notifications` answers (the page's "email pending"
    /// mark); left out otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339::option")]
    pub email_due_at: Option<DateTime<Utc>>,
}

impl From<entity::notification::Model> for Notification {
    fn from(row: entity::notification::Model) -> Self {
        let data = row.data.as_deref().and_then(|json| serde_json::from_str(json).ok());
        Notification::with_data(&row, data)
    }
}

impl Notification {
    /// The notification of `row` with its `data` already decoded: a publish
    /// to many users decodes the shared `data` once, not once per copy.
    pub fn with_data(row: &entity::notification::Model, data: Option<serde_json::Value>) -> Self {
        Notification {
            id: row.id,
            user_id: Some(row.user_id.clone()),
            kind: row.kind.clone(),
            title: row.title.clone(),
            body: row.body.clone(),
            data,
            action_url: row.action_url.clone(),
            group_key: row.group_key.clone(),
            count: row.count,
            created_at: row.created_at,
            updated_at: row.updated_at,
            expires_at: row.expires_at,
            read_at: row.read_at,
            audience: None,
            critical: false,
            email_due_at: None,
        }
    }
}

/// RFC 3339 UTC with milliseconds and a `Z`, the one time format of the API.
pub mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `2026-11-22T05:08:07.123Z`.
    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    /// Reads any RFC 3339 time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        DateTime::<Utc>::deserialize(d)
    }

    /// The same for optional times, written as `null` when absent.
    pub mod option {
        use super::*;

        /// Writes the time, or `null`.
        pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, s),
                None => s.serialize_none(),
            }
        }

        /// Reads a time or `null`.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<DateTime<Utc>>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PublishRequest {
        serde_json::from_value(serde_json::json!({
            "user_id": "alice", "type": "comment.created", "title": "Hi", "body": "there"
        }))
        .unwrap()
    }

    #[test]
    fn types_follow_the_contract_alphabet() {
        assert!(NotificationType::parse("comment.created_v2-x").is_ok());
        assert!(NotificationType::parse("").is_err());
        assert!(NotificationType::parse("Upper").is_err());
        assert!(NotificationType::parse("with space").is_err());
        assert!(NotificationType::parse(&"a".repeat(51)).is_err());
    }

    #[test]
    fn a_minimal_request_is_valid() {
        let new = request().validate(Utc::now()).unwrap();
        assert_eq!(new.recipients.len(), 1);
        assert_eq!(new.kind.as_str(), "comment.created");
    }

    #[test]
    fn duplicate_recipients_are_folded() {
        let mut req = request();
        req.user_id = None;
        req.user_ids = Some(vec!["a".into(), "b".into(), "a".into()]);
        assert_eq!(req.validate(Utc::now()).unwrap().recipients.len(), 2);
    }

    #[test]
    fn scripts_are_not_action_urls() {
        assert!(validate_action_url("javascript:alert(1)").is_err());
        assert!(validate_action_url("//evil.example").is_err());
        assert!(validate_action_url("/\\evil.example").is_err(), "browsers read a backslash as a slash");
        assert!(validate_action_url("/search?q=a\\b").is_ok());
        assert!(validate_action_url("/posts/1").is_ok());
        assert!(validate_action_url("https://example.com/x").is_ok());
    }

    #[test]
    fn deeply_nested_data_is_refused() {
        let mut req = request();
        let mut value = serde_json::json!(1);
        for _ in 0..20 {
            value = serde_json::json!({ "x": value });
        }
        req.data = Some(value);
        assert!(req.validate(Utc::now()).is_err());
    }

    #[test]
    fn data_must_be_an_object() {
        let mut req = request();
        req.data = Some(serde_json::json!([1, 2]));
        assert!(req.validate(Utc::now()).is_err());
    }
}
