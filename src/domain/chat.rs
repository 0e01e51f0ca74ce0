//! Chat: the objects clients receive and the rules for what they may send.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::notification::rfc3339;
use crate::domain::DomainError;

/// The longest message, in characters.
pub const MAX_CONTENT_CHARS: usize = 10_000;
/// The most members a conversation is created with.
pub const MAX_INITIAL_MEMBERS: usize = 1000;
/// The longest title or client message id.
const MAX_SHORT_CHARS: usize = 255;

/// The message object of the contract.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Message {
    pub id: i64,
    pub conversation_id: i64,
    pub sender_id: String,
    /// `null` once deleted.
    pub content: Option<String>,
    pub client_message_id: Option<String>,
    pub reply_to: Option<i64>,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "rfc3339::option")]
    pub edited_at: Option<DateTime<Utc>>,
    #[serde(with = "rfc3339::option")]
    pub deleted_at: Option<DateTime<Utc>>,
}

impl From<entity::message::Model> for Message {
    fn from(row: entity::message::Model) -> Self {
        Message {
            id: row.id,
            conversation_id: row.conversation_id,
            sender_id: row.sender_id,
            content: row.content,
            client_message_id: row.client_message_id,
            reply_to: row.reply_to,
            created_at: row.created_at,
            edited_at: row.edited_at,
            deleted_at: row.deleted_at,
        }
    }
}

/// The conversation object of the contract, as seen by one member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Conversation {
    pub id: i64,
    pub title: Option<String>,
    pub members: Vec<String>,
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// As seen by the caller.
    pub last_message: Option<Message>,
    /// As seen by the caller: messages of others after their read mark.
    pub unread_count: u64,
}

/// `POST /v1/conversations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    /// 1-255 characters without control characters.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub title: Option<String>,
    /// Other members, at most 1000; the caller is always a member.
    #[schema(value_type = Vec<super::user_id::UserIdText>, max_items = 1000)]
    pub members: Vec<String>,
}

/// `POST /v1/conversations/{id}/members`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    #[schema(value_type = super::user_id::UserIdText)]
    pub user_id: String,
}

/// `POST /v1/conversations/{id}/messages`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// 1-10,000 characters, not only white space.
    #[schema(min_length = 1, max_length = 10000, pattern = r"\S")]
    pub content: String,
    /// The sender's own id for this message, 1-255 characters without
    /// control characters: a retry with the same one answers 200 with the
    /// message already stored, and stores nothing.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub client_message_id: Option<String>,
    /// A message of the same conversation.
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1)]
    pub reply_to: Option<i64>,
}

/// `PATCH /v1/conversations/{id}/messages/{message_id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageEdit {
    /// 1-10,000 characters, not only white space.
    #[schema(min_length = 1, max_length = 10000, pattern = r"\S")]
    pub content: String,
}

/// `POST /v1/conversations/{id}/typing`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TypingUpdate {
    pub is_typing: bool,
}

/// `POST /v1/conversations/{id}/read`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadMark {
    #[serde(deserialize_with = "integral::required")]
    #[schema(minimum = 1)]
    pub message_id: i64,
}

/// The answer of `POST /v1/conversations/{id}/read`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationUnread {
    pub unread_count: u64,
}

/// A page of messages, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessagePage {
    pub items: Vec<Message>,
    /// Pass as `before` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Data of the `read` event: a read receipt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadReceipt {
    pub conversation_id: i64,
    pub user_id: String,
    pub message_id: i64,
    #[serde(with = "rfc3339")]
    pub at: DateTime<Utc>,
}

/// Data of the `typing` event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Typing {
    pub conversation_id: i64,
    pub user_id: String,
    pub is_typing: bool,
}

/// Ids in request bodies. JSON Schema's `integer` is any number without a
/// fraction, `7.0` included, and some clients (JavaScript's, generated
/// ones, fuzzers) write ids so; serde's `i64` refuses them. These accept an
/// integral number in range and refuse a fraction as serde would.
mod integral {
    use serde::{Deserialize, Deserializer, de::Error};

    fn to_i64<E: Error>(number: serde_json::Number) -> Result<i64, E> {
        if let Some(n) = number.as_i64() {
            return Ok(n);
        }
        match number.as_f64() {
            // 2^63 is exactly representable; anything below it in magnitude
            // with no fraction converts without loss of range.
            Some(f) if f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) => Ok(f as i64),
            _ => Err(E::custom(format!("invalid value: {number}, expected an integer id"))),
        }
    }

    pub fn required<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        to_i64(serde_json::Number::deserialize(deserializer)?)
    }

    pub fn option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
        Option::<serde_json::Number>::deserialize(deserializer)?.map(to_i64).transpose()
    }
}

/// Checks message content: 1-10,000 characters, not only white space.
pub fn validate_content(content: &str) -> Result<(), DomainError> {
    let chars = content.chars().count();
    if chars == 0 || chars > MAX_CONTENT_CHARS || content.trim().is_empty() {
        return Err(DomainError::invalid_field("content", "content must be 1-10000 characters"));
    }
    Ok(())
}

/// Checks an optional short text (title, client message id).
pub fn validate_short(field: &str, value: Option<&str>) -> Result<(), DomainError> {
    if let Some(value) = value {
        let chars = value.chars().count();
        if chars == 0 || chars > MAX_SHORT_CHARS || value.chars().any(char::is_control) {
            return Err(DomainError::invalid_field(field, format!("{field} must be 1-255 characters without control characters")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_may_be_written_as_integral_numbers_but_not_fractions() {
        let mark: ReadMark = serde_json::from_str(r#"{"message_id": 7.0}"#).unwrap();
        assert_eq!(mark.message_id, 7);
        let mark: ReadMark = serde_json::from_str(r#"{"message_id": 7}"#).unwrap();
        assert_eq!(mark.message_id, 7);
        assert!(serde_json::from_str::<ReadMark>(r#"{"message_id": 7.5}"#).is_err());
        assert!(serde_json::from_str::<ReadMark>(r#"{"message_id": 1e300}"#).is_err());
        assert!(serde_json::from_str::<ReadMark>(r#"{"message_id": "7"}"#).is_err());
        let sent: NewMessage = serde_json::from_str(r#"{"content": "hi", "reply_to": -3.0}"#).unwrap();
        assert_eq!(sent.reply_to, Some(-3));
        let sent: NewMessage = serde_json::from_str(r#"{"content": "hi", "reply_to": null}"#).unwrap();
        assert_eq!(sent.reply_to, None);
        let sent: NewMessage = serde_json::from_str(r#"{"content": "hi"}"#).unwrap();
        assert_eq!(sent.reply_to, None);
    }

    #[test]
    fn content_must_be_present_and_bounded() {
        assert!(validate_content("hi").is_ok());
        assert!(validate_content("").is_err());
        assert!(validate_content("   ").is_err());
        assert!(validate_content(&"x".repeat(10_001)).is_err());
    }
}
