//! `/v1/topics/{topic}/events`: publish to a broadcast topic (backends) and
//! page its history (its readers).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::input::{JsonBody, Query, query};
use crate::{
    app::AppState,
    auth::{AuthUser, Publisher},
    domain::{EventId, TopicName},
    error::{ApiError, ErrorBody},
    topics::{TopicEvent, TopicEventRequest, TopicPage},
};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(publish, history))
}

/// A topic name from the path: 400 naming `topic` when it breaks the rule.
pub fn topic_name(raw: &str) -> Result<TopicName, ApiError> {
    TopicName::parse(raw).map_err(|why| ApiError::bad_field("topic", why))
}

/// Appends one event to a broadcast topic (scope `publish`): stored once,
/// sent as `event: topic.event` to every stream that added the topic.
#[utoipa::path(post, path = "/v1/topics/{topic}/events", tag = "topics", security(("bearer" = [])),
    params(("topic" = String, Path, min_length = 1, max_length = 100, pattern = r"^[a-z0-9_.:-]{1,100}$", description = "1-100 characters of a-z 0-9 _ . : -")),
    request_body = TopicEventRequest,
    responses((status = 201, body = TopicEvent), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn publish(State(state): State<AppState>, Publisher(_publisher): Publisher, Path(topic): Path<String>, body: JsonBody<TopicEventRequest>) -> Result<(StatusCode, Json<TopicEvent>), ApiError> {
    let name = topic_name(&topic)?;
    // Every rule of a topic publish is about what the request says, not about
    // stored state: refused as unreadable (400), naming the field.
    let new = body.value.validate().map_err(|e| match e {
        crate::domain::DomainError::Invalid { field, message } => ApiError::Invalid { status: StatusCode::BAD_REQUEST, message, field },
        other => other.into(),
    })?;
    Ok((StatusCode::CREATED, Json(state.topics.publish(name, new).await?)))
}

/// A topic's stored events after `after`, oldest first (its readers: a
/// token whose `topics` patterns match, a public topic, or scope `publish`).
#[utoipa::path(get, path = "/v1/topics/{topic}/events", tag = "topics", security(("bearer" = [])),
    params(("topic" = String, Path, min_length = 1, max_length = 100, pattern = r"^[a-z0-9_.:-]{1,100}$", description = "1-100 characters of a-z 0-9 _ . : -"),
        ("after" = Option<String>, Query, pattern = r"^[0-9]{1,18}$", description = "An event id: only later events; `next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "1-100, default 50")),
    responses((status = 200, body = TopicPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn history(State(state): State<AppState>, AuthUser(principal): AuthUser, Path(topic): Path<String>, Query(page): Query<HistoryParams>) -> Result<Json<TopicPage>, ApiError> {
    let name = topic_name(&topic)?;
    if !state.topic_access.may_read(&principal, &name) {
        return Err(ApiError::Forbidden("this token may not read that topic".into()));
    }
    Ok(Json(state.topics.history(&name, page.after.unwrap_or(EventId::ZERO), page.limit).await?))
}

/// The query of [`history`].
#[derive(serde::Deserialize)]
struct HistoryParams {
    #[serde(default, deserialize_with = "query::event_id")]
    after: Option<EventId>,
    #[serde(default = "query::default_limit", deserialize_with = "query::limit")]
    limit: u64,
}
