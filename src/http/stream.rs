//! `GET /v1/stream`: the SSE endpoint. The work is in `crate::stream`; this
//! handler picks the resume point and sets the headers proxies need.

use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, Uri, header},
    response::Response,
    routing::get,
};

use super::input::query_param;
use crate::{app::AppState, auth::StreamUser, stream};

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/stream", get(open))
}

async fn open(State(state): State<AppState>, StreamUser(principal): StreamUser, headers: HeaderMap, uri: Uri) -> Response {
    // The header wins: EventSource sets it on its own reconnections, while the
    // query parameter is what a page put in the URL when it first connected.
    let resume_from = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(uri.query(), "last_event_id"))
        .filter(|raw| !raw.trim().is_empty());
    let body = Body::from_stream(stream::open(state.stream_context(), principal, resume_from));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx buffers proxied responses unless told not to, which would hold
    // events back until its buffer fills.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
