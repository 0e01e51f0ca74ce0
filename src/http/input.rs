//! Reading request input into our error vocabulary: bodies, queries and
//! path ids that cannot be read become the contract's error body, never
//! axum's plain-text rejections.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, rejection::BytesRejection},
    http::StatusCode,
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

/// The value of one query parameter, decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The `limit` query parameter: 1 to 100, 50 when absent.
pub fn limit_param(query: Option<&str>) -> Result<u64, ApiError> {
    match query_param(query, "limit") {
        None => Ok(50),
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::bad_field("limit", "limit must be an integer from 1 to 100")),
    }
}

/// A paging cursor parameter (`cursor`, `before`): a `next_cursor` value
/// from an earlier page, or absent.
pub fn cursor_param(query: Option<&str>, name: &str) -> Result<Option<i64>, ApiError> {
    match query_param(query, name).filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|c| *c > 0)
            .map(Some)
            .ok_or_else(|| ApiError::bad_field(name, format!("{name} must be a next_cursor value from an earlier page"))),
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

    #[test]
    fn syntax_errors_and_bodies_that_are_not_objects_name_no_field() {
        for raw in [r#"{"title": "x",}"#, r#"{"title" "x"}"#, r#"{"title": "#, r#"["x"]"#, "true", "", " null"] {
            assert_eq!(field_of(raw), None, "{raw}");
        }
    }
}
