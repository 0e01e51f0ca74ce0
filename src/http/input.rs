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

/// A JSON body that may be absent: an empty body reads as `T::default()`.
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let raw = read_body(req, state).await?;
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        Ok(OptionalJsonBody(parse_json(&raw)?))
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection: BytesRejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("the request body is larger than this server accepts".into())
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })
}

/// Parses JSON, naming the field at fault when there is one.
pub fn parse_json<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(raw);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let message = format!("invalid JSON body: {}", err.inner());
        if path.is_empty() || path == "." {
            ApiError::bad_request(message)
        } else {
            ApiError::bad_field(path, message)
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// Reads one already parsed JSON value (an item of a batch) as `T`,
/// naming the field at fault like [`parse_json`].
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = format!("invalid item: {}", err.inner());
        if path.is_empty() || path == "." {
            ApiError::bad_request(message)
        } else {
            ApiError::bad_field(path, message)
        }
    })
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
