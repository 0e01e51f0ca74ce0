//! `/v1/notifications`: publish (backends), list, count, read, click, delete.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::input::{JsonBody, OptionalJsonBody, parse_json, path_id, query_param};
use crate::{
    app::AppState,
    auth::{AuthUser, Publisher},
    domain::notification::{NotificationType, PublishRequest},
    error::ApiError,
    notifications::{IdempotencyKey, ListQuery},
};

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/notifications", post(publish).get(list))
        .route("/notifications/unread_count", get(unread_count))
        .route("/notifications/read_all", post(read_all))
        .route("/notifications/{id}", delete(remove))
        .route("/notifications/{id}/read", post(read))
        .route("/notifications/{id}/click", post(click))
}

async fn publish(State(state): State<AppState>, Publisher(caller): Publisher, headers: HeaderMap, body: JsonBody<PublishRequest>) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
                .ok_or_else(|| ApiError::invalid_field("Idempotency-Key", "Idempotency-Key must be 1-255 visible ASCII characters"))?;
            Some(IdempotencyKey { key, request_hash: fingerprint(&body.raw)? })
        }
    };
    let new = body.value.validate(chrono::Utc::now())?;
    let outcome = state.notifications.publish(&caller.user, key, new).await?;
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::CREATED);
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], outcome.body).into_response();
    if outcome.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// SHA-256 of the body's JSON value: key order and white space do not make
/// two equal requests differ.
fn fingerprint(raw: &[u8]) -> Result<String, ApiError> {
    let value: serde_json::Value = parse_json(raw)?;
    let canonical = serde_json::to_vec(&value).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(hex::encode(Sha256::digest(canonical)))
}

async fn list(State(state): State<AppState>, AuthUser(user): AuthUser, uri: Uri) -> Result<impl IntoResponse, ApiError> {
    let query = uri.query();
    let unread_only = match query_param(query, "status").as_deref() {
        None | Some("all") => false,
        Some("unread") => true,
        Some(_) => return Err(ApiError::bad_field("status", "status must be 'unread' or 'all'")),
    };
    let kind = match query_param(query, "type").filter(|t| !t.is_empty()) {
        None => None,
        Some(raw) => Some(
            NotificationType::parse(&raw)
                .map_err(|why| ApiError::bad_field("type", format!("type {why}")))?
                .as_str()
                .to_owned(),
        ),
    };
    let limit = match query_param(query, "limit") {
        None => 50,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::bad_field("limit", "limit must be an integer from 1 to 100"))?,
    };
    let cursor = match query_param(query, "cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => Some(
            raw.parse::<i64>()
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| ApiError::bad_field("cursor", "cursor must be a next_cursor value from an earlier page"))?,
        ),
    };
    let page = state.notifications.list(&user.user, ListQuery { unread_only, kind, cursor, limit }).await?;
    Ok(Json(page))
}

async fn unread_count(State(state): State<AppState>, AuthUser(user): AuthUser) -> Result<impl IntoResponse, ApiError> {
    let count = state.notifications.unread_count(&user.user).await?;
    Ok(Json(json!({ "count": count })))
}

async fn read(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.notifications.read(&user.user, path_id(&id)?).await?))
}

async fn click(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(state.notifications.click(&user.user, path_id(&id)?).await?))
}

async fn remove(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.notifications.delete(&user.user, path_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The optional body of `read_all`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadAllRequest {
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn read_all(State(state): State<AppState>, AuthUser(user): AuthUser, OptionalJsonBody(body): OptionalJsonBody<ReadAllRequest>) -> Result<impl IntoResponse, ApiError> {
    let kind = match body.kind {
        None => None,
        Some(raw) => Some(NotificationType::parse(&raw).map_err(|why| ApiError::invalid_field("type", format!("type {why}")))?),
    };
    let updated = state.notifications.read_all(&user.user, kind.as_ref().map(NotificationType::as_str)).await?;
    Ok(Json(json!({ "updated": updated })))
}
