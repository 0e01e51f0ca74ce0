//! Reading request input into our error vocabulary: bodies, queries and
//! path ids that cannot be read become the contract's error body, never
//! axum's plain-text rejections.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. The Content-Type is not checked: `curl -d` sends a form
/// type by default, and refusing it would only annoy. Unknown fields are
/// refused by the target types themselves (`deny_unknown_fields`).
pub struct JsonBody<T> {
    pub value: T,
    /// The body as received, for fingerprinting idempotent requests.
    pub raw: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let raw = read_body(req, state).await?;
        let value = parse_json(&raw)?;
        Ok(JsonBody { value, raw })
    }
}

/// A JSON body that may be absent: an empty body, or `null` (what the
/// document's optional body allows, and what generated clients send for
/// "no body"), reads as `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let raw = read_body(req, state).await?;
        if raw.iter().all(u8::is_ascii_whitespace) || raw.trim_ascii() == b"null" {
            return Ok(OptionalJsonBody(T::default()));
        }
        Ok(OptionalJsonBody(parse_json(&raw)?))
    }
}

/// The answer to a body over `TIDINGS_MAX_BODY_BYTES`, whether it was
/// declared so or turned out so.
pub fn body_too_large() -> ApiError {
    ApiError::PayloadTooLarge("the request body is larger than this server accepts".into())
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection: BytesRejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            body_too_large()
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })
}

/// Parses a request body, naming the field at fault when there is one.
///
/// Every body of the API is a JSON object: anything else (`[...]`, `true`)
/// is refused here, because serde would otherwise map an array onto a
/// struct's fields by position. A missing or unknown field is named in
/// `field` by its path (`title`, `items[2].title`); a syntax error names
/// none, as no field is at fault.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let message = format!("invalid JSON body: {}", err.inner());
        match field_at_fault(err.path(), err.inner()) {
            Some(field) => ApiError::bad_field(field, message),
            None => ApiError::bad_request(message),
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// Reads one already parsed JSON value (an item of a batch) as `T`, by
/// the rules of [`parse_json`]: an object only, the field at fault named.
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request("invalid item: an item must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let message = format!("invalid item: {}", err.inner());
        match field_at_fault(err.path(), err.inner()) {
            Some(field) => ApiError::bad_field(field, message),
            None => ApiError::bad_request(message),
        }
    })
}

/// The field a JSON error is about: the path where it happened (for an
/// unknown field, its own key), plus the name serde gives for a missing
/// field, whose error is raised at the enclosing object. `None` for syntax
/// errors, and for paths that serde could not follow (shown as `?`): never
/// a field that is not one.
fn field_at_fault(path: &serde_path_to_error::Path, error: &serde_json::Error) -> Option<String> {
    use serde_path_to_error::Segment;
    if !error.is_data() {
        return None;
    }
    let mut field = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Map { key } => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
            }
            Segment::Seq { index } => field.push_str(&format!("[{index}]")),
            Segment::Enum { .. } => {}
            Segment::Unknown => return None,
        }
    }
    if let Some(name) = missing_field(&error.to_string()) {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(&name);
    }
    (!field.is_empty()).then_some(field)
}

/// The field serde names in "missing field `x`".
fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(name, _)| name.to_owned()).filter(|name| !name.is_empty())
}

/// A resource id from the path. An id that cannot exist is simply not found.
pub fn path_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or(ApiError::NotFound)
}

/// The query string, read into `T` (a `Deserialize` struct of the
/// handler's parameters). Parsed with `serde_html_form`, so a repeated key
/// (`?topic=a&topic=b`) fills a `Vec`; unknown parameters are ignored (the
/// stream's `access_token` is the auth extractor's). The one rejection: a
/// value that does not parse answers 400 `invalid_request` with `field`
/// naming the parameter, never axum's plain-text rejection.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// [`Query`]'s parsing, on its own for tests.
fn parse_query<T: DeserializeOwned>(raw: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(serde_html_form::Deserializer::from_bytes(raw.as_bytes())).map_err(|error| {
        let field = error.path().to_string();
        if field.is_empty() || field == "." {
            ApiError::bad_request(format!("the query string cannot be read: {}", error.inner()))
        } else {
            ApiError::bad_field(field.clone(), format!("{field} {}", error.inner()))
        }
    })
}

/// Parsers of query values for [`Query`]'s targets (`deserialize_with`).
/// Each error says what the value must be; the rejection puts the
/// parameter's name in front. An empty value (`?cursor=`) is an absent one
/// where the parameter is optional.
pub mod query {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, de::Error};

    use crate::domain::{EventId, notification::NotificationType};

    /// The page size when `limit` is absent.
    pub fn default_limit() -> u64 {
        50
    }

    /// `limit`: 1 to 100.
    pub fn limit<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse::<u64>().ok().filter(|n| (1..=100).contains(n)).ok_or_else(|| D::Error::custom("must be an integer from 1 to 100"))
    }

    /// A paging cursor (`cursor`, `before`): a `next_cursor` of an earlier page.
    pub fn cursor<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        optional(d, |raw| raw.parse::<i64>().ok().filter(|c| *c > 0).ok_or("must be a next_cursor value from an earlier page"))
    }

    /// A notification type; empty means any.
    pub fn notification_type<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NotificationType>, D::Error> {
        optional(d, NotificationType::parse)
    }

    /// An RFC 3339 time.
    pub fn time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        optional(d, |raw| DateTime::parse_from_rfc3339(raw).map(|t| t.with_timezone(&Utc)).map_err(|_| "must be an RFC 3339 time"))
    }

    /// A BCP 47 locale tag (`fr`, `pt-BR`); empty means none.
    pub fn locale<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        optional(d, |raw| crate::contacts::validate_locale(raw).map(|()| raw.to_owned()))
    }

    /// An event id of the log.
    pub fn event_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<EventId>, D::Error> {
        optional(d, |raw| EventId::parse(raw).ok_or("must be an event id"))
    }

    /// Comma-separated user ids, blanks skipped, at most `MAX` of them.
    pub fn comma_list<'de, D: Deserializer<'de>, const MAX: usize>(d: D) -> Result<Vec<String>, D::Error> {
        let raw = String::deserialize(d)?;
        let ids: Vec<String> = raw.split(',').map(str::trim).filter(|id| !id.is_empty()).map(str::to_owned).collect();
        if ids.len() > MAX {
            return Err(D::Error::custom(format!("must list at most {MAX} user ids")));
        }
        Ok(ids)
    }

    fn optional<'de, D: Deserializer<'de>, T>(d: D, parse: impl FnOnce(&str) -> Result<T, &'static str>) -> Result<Option<T>, D::Error> {
        let raw = String::deserialize(d)?;
        if raw.is_empty() {
            return Ok(None);
        }
        parse(&raw).map(Some).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        title: String,
        items: Option<Vec<Inner>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
    }

    fn field_of(raw: &str) -> Option<String> {
        match parse_json::<Outer>(raw.as_bytes()) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("{raw} must be refused: {other:?}"),
        }
    }

    #[test]
    fn the_field_at_fault_is_named_by_its_path() {
        assert_eq!(field_of(r#"{}"#).as_deref(), Some("title"));
        assert_eq!(field_of(r#"{"title": 5}"#).as_deref(), Some("title"));
        assert_eq!(field_of(r#"{"title": "x", "extra": 1}"#).as_deref(), Some("extra"));
        assert_eq!(field_of(r#"{"title": "x", "items": [{"name": "a"}, {}]}"#).as_deref(), Some("items[1].name"));
        assert_eq!(field_of(r#"{"title": "x", "items": [{"name": 1}]}"#).as_deref(), Some("items[0].name"));
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Params {
        #[serde(default = "query::default_limit", deserialize_with = "query::limit")]
        limit: u64,
        #[serde(default, deserialize_with = "query::cursor")]
        cursor: Option<i64>,
        #[serde(default)]
        topic: Vec<String>,
    }

    #[test]
    fn a_query_reads_repeated_keys_and_empty_values_and_names_the_parameter_at_fault() {
        let params: Params = parse_query("topic=a&topic=b&cursor=&access_token=x").unwrap();
        assert_eq!((params.limit, params.cursor, params.topic), (50, None, vec!["a".to_owned(), "b".to_owned()]));
        for (raw, at_fault) in [("limit=0", "limit"), ("limit=ten", "limit"), ("cursor=-1", "cursor"), ("limit=5&cursor=x", "cursor")] {
            match parse_query::<Params>(raw) {
                Err(ApiError::Invalid { status, field, message }) => {
                    assert_eq!(status, StatusCode::BAD_REQUEST);
                    assert_eq!(field.as_deref(), Some(at_fault), "{raw}");
                    assert!(message.starts_with(at_fault), "{message}");
                }
                other => panic!("{raw} must be refused: {other:?}"),
            }
        }
    }

    #[test]
    fn syntax_errors_and_bodies_that_are_not_objects_name_no_field() {
        for raw in [r#"{"title": "x",}"#, r#"{"title" "x"}"#, r#"{"title": "#, r#"["x"]"#, "true", "", " null"] {
            assert_eq!(field_of(raw), None, "{raw}");
        }
    }
}
