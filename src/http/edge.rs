//! The edge: what every request and every answer passes through, in one
//! middleware. In order: the request's log span, a body declared too large
//! refused at once, the handler, the contract's error body for errors that
//! have none, `Cache-Control: no-store` on JSON, then the request's metrics
//! and its log line.
//!
//! Why one middleware and not one per concern: axum wraps every layer around
//! every route, and each layer a request passes through clones its inner
//! service and boxes a future. With six layers that plumbing cost more than
//! all the middlewares' own work: about a tenth of the CPU of opening a
//! stream (callgrind, BENCHMARKS.md, "ninth session"). Each concern keeps
//! its own function, named here, in the module it belongs to.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::Instrument;

use super::{input, metrics, request_log};
use crate::error::ApiError;

/// Middleware: see the module's documentation. `max_body_bytes` is the
/// body limit that a declared `Content-Length` is checked against.
pub async fn edge(State(max_body_bytes): State<usize>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = metrics::method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or(metrics::UNMATCHED_ROUTE, MatchedPath::as_str);
    let span = request_log::span(request.method(), route);
    let mut response = if declares_oversize(&request, max_body_bytes) {
        input::body_too_large().into_response()
    } else {
        next.run(request).instrument(span.clone()).await
    };
    response = contract_error_body(response);
    no_store_for_json(&mut response);
    metrics::record_request(method, route, response.status(), started);
    request_log::answered(&span, response.status(), started);
    response
}

/// Whether the request's `Content-Length` already says it is over the body
/// limit: then it gets `413` at once. The body limit alone only counts bytes
/// as they arrive, so a client that declares a huge body and sends nothing
/// would hold its request open until the deadline and get a 503.
fn declares_oversize(request: &Request, max: usize) -> bool {
    request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .is_some_and(|length| length > max as u64)
}

/// An error answered without a body by a layer below our handlers (Swagger
/// UI's 404 for an unknown file under `/docs/`) gets the contract's error
/// body, keeping its status and headers. Our own errors already carry it,
/// and a JSON type, so they pass untouched.
fn contract_error_body(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || response.headers().contains_key(header::CONTENT_TYPE) {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut replacement = ApiError::for_status(status).into_response();
    *replacement.status_mut() = status;
    let mut headers = parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    for (name, value) in replacement.headers() {
        headers.insert(name.clone(), value.clone());
    }
    *replacement.headers_mut() = headers;
    replacement
}

/// Every JSON answer, errors included, carries `Cache-Control: no-store`
/// unless its handler chose otherwise. They hold one user's notifications
/// and messages, which no shared cache or browser history should keep. The
/// stream sets its own `no-cache`, as the contract says.
fn no_store_for_json(response: &mut Response) {
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if json && !response.headers().contains_key(header::CACHE_CONTROL) {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}
