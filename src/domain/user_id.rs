//! User ids: the JWT `sub`, opaque to Tidings.

use std::fmt;

/// A user id as it comes in a token's `sub` or a request body. Opaque, but
/// bounded: it becomes part of a topic name and of database keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// The longest id accepted, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Accepts 1 to 255 bytes without control characters.
    pub fn parse(raw: impl Into<String>) -> Result<Self, &'static str> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err("must not be empty");
        }
        if raw.len() > Self::MAX_LEN {
            return Err("must be at most 255 bytes");
        }
        if raw.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(UserId(raw))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The OpenAPI schema of a user id in a request: what [`UserId::parse`]
/// accepts, so that a generated client or a fuzzer sends only ids the server
/// takes. JSON Schema counts characters where the rule counts bytes: ids of
/// plain ASCII, the usual case, agree exactly; the description says bytes.
pub struct UserIdText;

impl utoipa::PartialSchema for UserIdText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A user id (the JWT `sub`): 1-255 bytes of UTF-8, no control characters."))
            .min_length(Some(1))
            .max_length(Some(UserId::MAX_LEN))
            .pattern(Some(crate::domain::NO_CONTROL_PATTERN))
            .into()
    }
}

impl utoipa::ToSchema for UserIdText {
    fn name() -> std::borrow::Cow<'static, str> {
        "UserId".into()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::UserId;

    #[test]
    fn an_ordinary_id_is_accepted() {
        assert_eq!(UserId::parse("alice@example.com").unwrap().as_str(), "alice@example.com");
    }

    #[test]
    fn empty_overlong_and_control_character_ids_are_rejected() {
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a".repeat(256)).is_err());
        assert!(UserId::parse("a\nb").is_err());
    }
}
