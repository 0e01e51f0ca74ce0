//! The request log: one span per request, and one `request` line when its
//! answer leaves, naming the matched route, never the raw URI (a stream's
//! query string may carry its token).
//!
//! Ours rather than tower-http's `TraceLayer`, because `TraceLayer` wraps
//! the response body to see its end, and so keeps the span open for as
//! long as the body lives: for `/v1/stream`, a span per open stream, held
//! for hours. Here the span covers the handler only, and ends with the
//! response head. A stream logs its own opening and closing as events
//! (`crate::stream`), and the rest is counted in metrics.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use tracing::{Instrument, field::Empty};

use super::metrics::UNMATCHED_ROUTE;

/// Middleware: runs the request inside its span (the auth extractors fill
/// in `user`) and logs its status and latency when the answer is ready.
pub async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED_ROUTE, |path| path.as_str());
    let span = tracing::info_span!("request", method = %request.method(), route, user = Empty, status = Empty);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    span.in_scope(|| tracing::info!(latency_ms = started.elapsed().as_secs_f64() * 1000.0, "request"));
    response
}
