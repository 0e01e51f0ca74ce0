//! `GET /v1/stream`: the SSE endpoint. The work is in `crate::stream`; this
//! handler picks the resume point and sets the headers proxies need.

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::Response,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{input::Query, topics::topic_name};
use crate::{
    app::AppState,
    auth::StreamUser,
    error::{ApiError, ErrorBody},
    hub::Refusal,
    stream,
};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(open))
}

/// The caller's Server-Sent Events stream.
///
/// Without a resume point: the unread notifications (newest 100, oldest
/// first), then `unread_count`, then live events. With `Last-Event-ID` (or
/// `last_event_id`): every stored event after it, then `unread_count`, then
/// live events; `reset` first if that history is gone. Events and their
/// payloads are listed in `x-sse-events`. A `: ping` comment comes every 15 s.
#[utoipa::path(get, path = "/v1/stream", tag = "stream", security(("bearer" = [])),
    params(
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id"),
        ("last_event_id" = Option<String>, Query, description = "Resume point, for clients that cannot set headers"),
        ("access_token" = Option<String>, Query, description = "The JWT, for EventSource (or the `tidings_token` cookie)")),
    responses(
        (status = 200, content_type = "text/event-stream", body = String, description = "The stream"),
        (status = 401, body = ErrorBody), (status = 429, body = ErrorBody, description = "Too many streams for this user"),
        (status = 503, body = ErrorBody, description = "This node holds as many streams as it can")))]
async fn open(State(state): State<AppState>, StreamUser(principal): StreamUser, headers: HeaderMap, Query(query): Query<OpenParams>) -> Result<Response, ApiError> {
    // The header wins: EventSource sets it on its own reconnections, while the
    // query parameter is what a page put in the URL when it first connected.
    // A header that is not visible ASCII is still a resume point the client
    // asked for: read lossily, it is garbage like any other and gets `reset`
    // (dropping it would silently start afresh without telling the client).
    let resume_from = headers
        .get("last-event-id")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .or(query.last_event_id)
        .filter(|raw| !raw.trim().is_empty());
    let topics = requested_topics(&state, &principal, query.topic)?;
    // Read before the connection subscribes: a fresh stream also sends its
    // conversations' and topics' events committed after this point.
    let context = state.stream_context();
    // Admission: a surge of opens takes turns at reading their starting
    // state; one that cannot get a turn in time is refused before any byte.
    let turn = stream::opening_turn(&context)
        .await
        .ok_or(ApiError::Overloaded { retry_after_secs: 1 })?;
    // Before it subscribes: what the registry has handed out so far.
    let floor = state.hub.registry().delivered_upto();
    let viewer = state.viewer(&principal);
    let frames = stream::open(context, principal, viewer, resume_from, topics, floor, turn).map_err(|refusal| match refusal {
        Refusal::TooManyForUser => ApiError::RateLimited { retry_after_secs: 10 },
        Refusal::NodeFull => ApiError::Unavailable("this node holds as many streams as it can; retry on another".into()),
    })?;
    let mut response = Response::new(Body::from_stream(frames));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers proxied responses unless told not to, which would hold
    // events back until its buffer fills.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The query of [`open`] (`access_token` is the auth extractor's).
#[derive(serde::Deserialize)]
struct OpenParams {
    last_event_id: Option<String>,
    /// Repeated: `?topic=a&topic=b`.
    #[serde(default)]
    topic: Vec<String>,
}

/// The broadcast topics of `?topic=a&topic=b`: at most 32, each a valid
/// name the caller may read, refused before any byte of the stream.
fn requested_topics(state: &AppState, principal: &crate::auth::Principal, raw: Vec<String>) -> Result<Vec<crate::domain::Topic>, ApiError> {
    if raw.len() > crate::topics::MAX_STREAM_TOPICS {
        return Err(ApiError::bad_field("topic", "at most 32 topics per stream"));
    }
    let mut topics = Vec::with_capacity(raw.len());
    for name in raw {
        let name = topic_name(&name)?;
        if !state.topic_access.may_read(principal, &name) {
            return Err(ApiError::Forbidden(format!("this token may not read topic {}", name.as_str())));
        }
        let topic = crate::domain::Topic::named(&name);
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    Ok(topics)
}
