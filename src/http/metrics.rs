//! `GET /metrics`: Prometheus text format, through the `metrics` facade and
//! its Prometheus exporter.
//!
//! Request counts and latencies are recorded per matched route by
//! [`record_request`], from the edge middleware; the hub's counters are plain atomics on the hot path,
//! copied into the exporter when scraped.

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::{OnceLock, atomic::Ordering},
    time::Instant,
};

use axum::{
    extract::State,
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sea_orm::DbBackend;

use crate::app::AppState;

/// Latency buckets, in seconds: from a cached read to a slow batch publish.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process-wide exporter. Installed once: the `metrics` recorder is
/// global, and tests build many applications in one process.
pub fn exporter() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("tidings_http_request_duration_seconds".into()), LATENCY_BUCKETS)
            .expect("static buckets are valid")
            .install_recorder()
            .expect("the metrics recorder is installed once")
    })
}

/// The `/metrics` route, on the main listener or a separate one.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(scrape))
}

/// Prometheus metrics in the text exposition format. Stats the hub keeps
/// as atomics are copied in first.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn scrape(State(state): State<AppState>) -> Response {
    let stats = state.hub.stats();
    gauge!("tidings_open_streams").set(stats.open_streams.load(Ordering::Relaxed) as f64);
    counter!("tidings_events_appended_total").absolute(stats.events_published.load(Ordering::Relaxed));
    counter!("tidings_frames_delivered_total").absolute(stats.frames_delivered.load(Ordering::Relaxed));
    counter!("tidings_replayed_events_total").absolute(stats.replayed_events.load(Ordering::Relaxed));
    counter!("tidings_catch_ups_total").absolute(stats.catch_ups.load(Ordering::Relaxed));
    counter!("tidings_mailbox_overflows_total").absolute(state.hub.overflows());
    counter!("tidings_refused_streams_total").absolute(stats.refused_streams.load(Ordering::Relaxed));
    let writer = state.writer.stats();
    counter!("tidings_write_batches_total").absolute(writer.batches.load(Ordering::Relaxed));
    counter!("tidings_write_jobs_total").absolute(writer.jobs.load(Ordering::Relaxed));
    counter!("tidings_write_refused_total").absolute(writer.refused.load(Ordering::Relaxed));
    gauge!("tidings_write_queue_depth").set(writer.queued.load(Ordering::Relaxed) as f64);
    let (size, idle) = match state.db.get_database_backend() {
        DbBackend::Sqlite => {
            let pool = state.db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
        DbBackend::Postgres => {
            let pool = state.db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        _ => (0, 0),
    };
    gauge!("tidings_db_pool_connections", "state" => "idle").set(idle as f64);
    gauge!("tidings_db_pool_connections", "state" => "in_use").set(size.saturating_sub(idle as u32) as f64);
    // The outbox: rows by channel and status (every node sees the same
    // table), and the age of the oldest row that is due and not taken.
    match crate::outbox::store::counts(&state.db).await {
        Ok(counts) => {
            for (channel, status, n) in counts {
                gauge!("tidings_deliveries", "channel" => channel, "status" => status).set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "counting deliveries for /metrics failed"),
    }
    match crate::outbox::worker::oldest_due(&state.db).await {
        Ok(oldest) => {
            let lag = oldest.map_or(0.0, |due| (chrono::Utc::now() - due).num_milliseconds().max(0) as f64 / 1000.0);
            gauge!("tidings_outbox_lag_seconds").set(lag);
        }
        Err(e) => tracing::warn!(error = %e, "reading the outbox lag for /metrics failed"),
    }
    let handle = exporter();
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
}

/// The `route` label of every request that matched no route: one label,
/// whatever the path, so that scanners cannot mint new series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Counts a request by method, matched route and status, and records its
/// latency (for the stream: the time to its headers). Called by the edge
/// middleware (`super::edge`). Labels come from closed sets only (see
/// [`method_label`] and [`UNMATCHED_ROUTE`]): any client can send any
/// method and path, and each new label value would be a series kept until
/// the process ends.
pub fn record_request(method: &'static str, route: &str, status: StatusCode, started: Instant) {
    let (requests, duration) = request_series(method, route, status);
    requests.increment(1);
    duration.record(started.elapsed().as_secs_f64());
}

/// The two series of one method, route and status, built once per thread
/// that serves requests. Why: naming a series by its labels on every
/// request (allocating the labels, hashing them, finding them in the
/// exporter's registry) cost about 4,000 instructions per request under
/// callgrind, more than the rest of the edge middleware. Per thread, so
/// that requests never wait on each other for a lock; the set is as closed
/// as the labels, a few dozen entries a thread.
fn request_series(method: &'static str, route: &str, status: StatusCode) -> (Counter, Histogram) {
    type Series = HashMap<String, HashMap<(&'static str, u16), (Counter, Histogram)>>;
    thread_local! {
        static SERIES: RefCell<Series> = RefCell::default();
    }
    SERIES.with_borrow_mut(|series| {
        if let Some(found) = series.get(route).and_then(|by_status| by_status.get(&(method, status.as_u16()))) {
            return found.clone();
        }
        // Handles taken before the recorder is installed would count nowhere.
        exporter();
        let handles = (
            counter!("tidings_http_requests_total", "method" => method, "route" => route.to_owned(), "status" => status.as_u16().to_string()),
            histogram!("tidings_http_request_duration_seconds", "method" => method, "route" => route.to_owned()),
        );
        series.entry(route.to_owned()).or_default().insert((method, status.as_u16()), handles.clone());
        handles
    })
}

/// The `method` label: the standard methods by name, anything else
/// (`FOOBAR1`, which HTTP allows as an extension method) as `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_methods_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::from_bytes(b"FOOBAR1").unwrap()), "other");
        assert_eq!(method_label(&Method::from_bytes(b"get").unwrap()), "other", "methods are case-sensitive");
    }
}
