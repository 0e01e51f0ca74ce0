//! The request log: one span per request, and one `request` line when its
//! answer leaves, naming the matched route, never the raw URI (a stream's
//! query string may carry its token). Both are taken by the edge
//! middleware (`super::edge`).
//!
//! Ours rather than tower-http's `TraceLayer`, because `TraceLayer` wraps
//! the response body to see its end, and so keeps the span open for as
//! long as the body lives: for `/v1/stream`, a span per open stream, held
//! for hours. Here the span covers the handler only, and ends with the
//! response head. A stream logs its own opening and closing as events
//! (`crate::stream`), and the rest is counted in metrics.

use std::time::Instant;

use axum::http::{Method, StatusCode};
use tracing::{Span, field::Empty};

/// The span a request's handler runs in; the auth extractors fill in `user`.
pub fn span(method: &Method, route: &str) -> Span {
    tracing::info_span!("request", method = %method, route, user = Empty, status = Empty)
}

/// The `request` line, with the answer's status and the latency until it
/// was ready.
pub fn answered(span: &Span, status: StatusCode, started: Instant) {
    span.record("status", status.as_u16());
    span.in_scope(|| tracing::info!(latency_ms = started.elapsed().as_secs_f64() * 1000.0, "request"));
}
