//! `/v1/notifications`: publish (backends), list, count, read, click, delete.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::input::{JsonBody, OptionalJsonBody, Query, parse_json, parse_value, path_id, query};
use crate::{
    app::AppState,
    auth::{AuthUser, Publisher},
    domain::{
        events::UnreadCount,
        notification::{Notification, NotificationType, PublishRequest},
    },
    error::{ApiError, ErrorBody},
    notifications::{IdempotencyKey, ListQuery, Page, PublishOutcome, Published, ReadAllResult},
};

/// Most items in one batch publish.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// The longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish, list))
        .routes(routes!(publish_batch))
        .routes(routes!(unread_count))
        .routes(routes!(read_all))
        .routes(routes!(remove))
        .routes(routes!(read))
        .routes(routes!(click))
        .routes(routes!(deliveries))
}

/// The deliveries of a notification beyond the page (email, push,
/// webhook), one per channel and endpoint: the owner's own, or any with
/// scope `publish`.
#[utoipa::path(get, path = "/v1/notifications/{id}/deliveries", tag = "notifications", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = Vec<crate::outbox::DeliveryState>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn deliveries(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>) -> Result<Json<Vec<crate::outbox::DeliveryState>>, ApiError> {
    let as_publisher = user.has_scope(crate::auth::PUBLISH_SCOPE);
    Ok(Json(state.notifications.deliveries(&user.user, as_publisher, path_id(&id)?).await?))
}

/// Publishes a notification to one user or up to 1000 (scope `publish`).
/// Each recipient's copy is stored, then sent on their open streams. With
/// `audience` (`"all"` or `{"topic": ...}`) it is an announcement instead:
/// stored once, shown to every user in the audience with their own read
/// state, and answered with `user_id` null.
#[utoipa::path(post, path = "/v1/notifications", tag = "notifications", security(("bearer" = [])),
    request_body = PublishRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$", description = "A retry with the same key and body creates nothing and gets the first answer")),
    responses(
        (status = 201, body = Published, description = "Created (or, with a reused Idempotency-Key, the first answer again, with `Idempotent-Replayed: true`)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn publish(State(state): State<AppState>, Publisher(caller): Publisher, headers: HeaderMap, body: JsonBody<PublishRequest>) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers, &body.raw)?;
    let new = body.value.validate(chrono::Utc::now())?;
    let outcome = state.notifications.publish(&caller.user, key, new).await?;
    Ok(respond(outcome, StatusCode::CREATED))
}

/// The body of `POST /v1/notifications/batch`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1,000 bodies of `POST /v1/notifications`.
    #[schema(value_type = Vec<PublishRequest>, min_items = 1, max_items = 1000)]
    items: Vec<serde_json::Value>,
}

/// Publishes up to 1,000 notifications in one request (scope `publish`):
/// each item succeeds or fails alone, and the answer lists, in order, what
/// each would have got alone or its error. The cheap way for a backend to
/// send a digest or a job's results.
#[utoipa::path(post, path = "/v1/notifications/batch", tag = "notifications", security(("bearer" = [])),
    request_body = BatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$", description = "Covers the whole batch: a retry with the same key and body gets the first answer")),
    responses(
        (status = 200, description = "`{\"results\": [...]}`: per item `{created, suppressed, rate_limited}` or `{error}`"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn publish_batch(State(state): State<AppState>, Publisher(caller): Publisher, headers: HeaderMap, body: JsonBody<BatchRequest>) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers, &body.raw)?;
    let items = body.value.items;
    if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
        return Err(ApiError::bad_field("items", "items must hold 1 to 1000 notifications"));
    }
    let now = chrono::Utc::now();
    let items = items
        .into_iter()
        .map(|item| match parse_value::<PublishRequest>(item) {
            Ok(request) => request.validate(now),
            // An item that cannot be read is refused alone, like one that breaks a rule.
            Err(ApiError::Invalid { field, message, .. }) => Err(crate::domain::DomainError::Invalid { field, message }),
            Err(other) => Err(crate::domain::DomainError::Invalid { field: None, message: other.to_string() }),
        })
        .collect();
    let outcome = state.notifications.publish_batch(&caller.user, key, items).await?;
    Ok(respond(outcome, StatusCode::OK))
}

/// The `Idempotency-Key` header, with the fingerprint of the body it came with.
fn idempotency_key<'a>(headers: &'a HeaderMap, raw: &[u8]) -> Result<Option<IdempotencyKey<'a>>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
                .ok_or_else(|| ApiError::invalid_field("Idempotency-Key", "Idempotency-Key must be 1-255 visible ASCII characters"))?;
            Ok(Some(IdempotencyKey { key, request_hash: fingerprint(raw)? }))
        }
    }
}

/// A publish answer as stored: its status and JSON body, marked when it
/// is the remembered answer to an earlier request.
fn respond(outcome: PublishOutcome, default: StatusCode) -> Response {
    let status = StatusCode::from_u16(outcome.status).unwrap_or(default);
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], outcome.body).into_response();
    if outcome.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// SHA-256 of the body's JSON value: key order and white space do not make
/// two equal requests differ.
fn fingerprint(raw: &[u8]) -> Result<String, ApiError> {
    let value: serde_json::Value = parse_json(raw)?;
    let canonical = serde_json::to_vec(&value).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(hex::encode(Sha256::digest(canonical)))
}

/// The caller's notifications, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", security(("bearer" = [])),
    params(
        ("status" = Option<String>, Query, pattern = "^(unread|all)$", description = "`unread` or `all` (default)"),
        ("type" = Option<String>, Query, max_length = 50, pattern = r"^[a-z0-9_.-]{0,50}$", description = "Only this type; empty means any"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1-100, default 50"),
        ("cursor" = Option<String>, Query, pattern = r"^[1-9][0-9]{0,17}$", description = "`next_cursor` of the previous page")),
    responses((status = 200, body = Page), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list(State(state): State<AppState>, AuthUser(user): AuthUser, Query(params): Query<ListParams>) -> Result<Json<Page>, ApiError> {
    let ListParams { status, kind, limit, cursor } = params;
    let unread_only = status == Some(ListStatus::Unread);
    let kind = kind.map(|kind| kind.as_str().to_owned());
    let page = state.notifications.list(&state.viewer(&user), ListQuery { unread_only, kind, cursor, limit }).await?;
    Ok(Json(page))
}

/// The query of [`list`].
#[derive(Deserialize)]
struct ListParams {
    status: Option<ListStatus>,
    #[serde(rename = "type", default, deserialize_with = "query::notification_type")]
    kind: Option<NotificationType>,
    #[serde(default = "query::default_limit", deserialize_with = "query::limit")]
    limit: u64,
    #[serde(default, deserialize_with = "query::cursor")]
    cursor: Option<i64>,
}

/// `status=unread|all`.
#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum ListStatus {
    Unread,
    All,
}

/// How many of the caller's notifications are unread.
#[utoipa::path(get, path = "/v1/notifications/unread_count", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = UnreadCount), (status = 401, body = ErrorBody)))]
async fn unread_count(State(state): State<AppState>, AuthUser(user): AuthUser) -> Result<Json<UnreadCount>, ApiError> {
    let count = state.notifications.unread_count(&state.viewer(&user)).await?;
    Ok(Json(UnreadCount { count }))
}

/// Marks one notification read; every stream of the user hears of it.
#[utoipa::path(post, path = "/v1/notifications/{id}/read", tag = "notifications", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = Notification), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn read(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>) -> Result<Json<Notification>, ApiError> {
    Ok(Json(state.notifications.read(&state.viewer(&user), path_id(&id)?).await?))
}

/// Records a click on a notification, which also marks it read.
#[utoipa::path(post, path = "/v1/notifications/{id}/click", tag = "notifications", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = Notification), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn click(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>) -> Result<Json<Notification>, ApiError> {
    Ok(Json(state.notifications.click(&state.viewer(&user), path_id(&id)?).await?))
}

/// Deletes one of the caller's notifications.
#[utoipa::path(delete, path = "/v1/notifications/{id}", tag = "notifications", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove(State(state): State<AppState>, AuthUser(user): AuthUser, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    state.notifications.delete(&state.viewer(&user), path_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The optional body of `read_all`.
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadAllRequest {
    /// Only notifications of this type.
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Marks every unread notification of the caller read (optionally of one type).
#[utoipa::path(post, path = "/v1/notifications/read_all", tag = "notifications", security(("bearer" = [])),
    request_body(content = Option<ReadAllRequest>, description = "Optional"),
    responses((status = 200, body = ReadAllResult), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn read_all(State(state): State<AppState>, AuthUser(user): AuthUser, OptionalJsonBody(body): OptionalJsonBody<ReadAllRequest>) -> Result<Json<ReadAllResult>, ApiError> {
    let kind = match body.kind {
        None => None,
        Some(raw) => Some(NotificationType::parse(&raw).map_err(|why| ApiError::invalid_field("type", format!("type {why}")))?),
    };
    let updated = state.notifications.read_all(&state.viewer(&user), kind.as_ref().map(NotificationType::as_str)).await?;
    Ok(Json(ReadAllResult { updated }))
}
