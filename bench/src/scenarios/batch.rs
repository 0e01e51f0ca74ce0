//! `batch` (Tidings only): durable batch ingest. POSTs
//! `/v1/notifications/batch` with N notifications per request, each to a
//! different user, as fast as C requests in flight allow, for T s, nobody
//! listening. Measures notifications stored per second, the figure to set
//! beside `ingest`'s publishes per second: what a backend sending digests
//! or a job's results gets out of one request per N notifications.
//!
//! The answer is `200 {"results": [...]}`, one entry per item in order; an
//! item counts as stored only if its entry has `created` with exactly one
//! id. Anything else (an `error`, a suppressed or rate-limited recipient, a
//! missing entry, a failed request) counts as a failed item: the benchmark
//! would otherwise measure the limits, not the hub.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::{sync::Semaphore, task::JoinSet};

use super::{Ctx, server_cost};
use crate::{
    cli::BatchArgs,
    metrics::Latency,
    publisher::api_client,
    report::{Better, Report},
};

/// Most item or request errors kept verbatim (the rest are only counted).
const ERRORS_KEPT: usize = 5;

/// The rows of the report, for the n/a report of a hub that is not Tidings.
const METRICS: [(&str, &str, Better); 6] = [
    ("batch requests per second", "1/s", Better::Higher),
    ("notifications stored per second", "1/s", Better::Higher),
    ("request latency p50", "ms", Better::Lower),
    ("request latency p99", "ms", Better::Lower),
    ("failed items", "", Better::Lower),
    ("server CPU per 1,000 notifications", "s", Better::Lower),
];

/// One item of the batch: a body of `POST /v1/notifications`.
#[derive(Serialize)]
struct Item<'a> {
    user_id: String,
    r#type: &'static str,
    title: &'static str,
    body: &'a str,
}

#[derive(Serialize)]
struct Batch<'a> {
    items: Vec<Item<'a>>,
}

/// What came of one batch request.
pub(super) struct Outcome {
    pub stored: u64,
    pub failed: u64,
    pub request_ok: bool,
    pub micros: u64,
    pub errors: Vec<String>,
}

/// Everything the requests added up to.
#[derive(Default)]
struct Totals {
    requests: u64,
    failed_requests: u64,
    stored: u64,
    failed_items: u64,
    latency: Latency,
    errors: Vec<String>,
}

impl Totals {
    fn absorb(&mut self, outcome: Outcome) {
        self.requests += 1;
        self.failed_requests += u64::from(!outcome.request_ok);
        self.stored += outcome.stored;
        self.failed_items += outcome.failed;
        self.latency.record_micros(outcome.micros);
        for e in outcome.errors {
            if self.errors.len() < ERRORS_KEPT {
                self.errors.push(e);
            }
        }
    }
}

pub async fn run(ctx: &Ctx, args: &BatchArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("batch", &ctx.target);
    report.param("items", args.items);
    report.param("concurrency", args.concurrency);
    report.param("duration_s", args.duration);
    report.param("users", args.users);
    let Some((base, token)) = ctx.target.tidings_api() else {
        for (metric, unit, better) in METRICS {
            report.row(metric, unit, None, better);
        }
        report.note("n/a: batch publishing is Tidings' own API");
        return Ok(report);
    };
    anyhow::ensure!(args.users >= args.items, "--users must be at least --items, so that no batch names a user twice");
    let client = api_client(args.concurrency)?;
    let url: Arc<str> = format!("{base}/v1/notifications/batch").into();
    let token: Arc<str> = token.into();
    let filler = "x".repeat(ctx.output.body_bytes);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    let mut totals = Totals::default();
    let mut next_user = 0u64;

    let before = ctx.sample();
    eprintln!("tidings-bench: batch publishing for {} s", args.duration);
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    loop {
        let permit = gate.clone().acquire_owned().await.expect("the gate is never closed");
        if Instant::now() >= end {
            break;
        }
        // Users are taken in turn over the run, so each batch names
        // `items` different users and a user's notifications are spread out.
        let items = (0..args.items)
            .map(|_| {
                let user_id = ctx.name("n", next_user % args.users);
                next_user += 1;
                Item { user_id, r#type: "bench", title: "bench", body: &filler }
            })
            .collect();
        let body = serde_json::to_string(&Batch { items })?;
        let (client, url, token, count) = (client.clone(), url.clone(), token.clone(), args.items);
        in_flight.spawn(async move {
            let outcome = send(&client, &url, &token, body, count).await;
            drop(permit);
            outcome
        });
        while let Some(done) = in_flight.try_join_next() {
            totals.absorb(done.expect("batch tasks do not panic"));
        }
    }
    while let Some(done) = in_flight.join_next().await {
        totals.absorb(done.expect("batch tasks do not panic"));
    }
    let secs = start.elapsed().as_secs_f64();
    let after = ctx.sample();

    let per_second = |n: u64| (secs > 0.0).then(|| n as f64 / secs);
    report.row("batch requests", "", Some(totals.requests as f64), Better::Info);
    report.row("batch requests per second", "1/s", per_second(totals.requests), Better::Higher);
    report.row("notifications stored", "", Some(totals.stored as f64), Better::Info);
    report.row("notifications stored per second", "1/s", per_second(totals.stored), Better::Higher);
    report.row("request latency p50", "ms", totals.latency.quantile_ms(0.50), Better::Lower);
    report.row("request latency p99", "ms", totals.latency.quantile_ms(0.99), Better::Lower);
    report.row("request latency p99.9", "ms", totals.latency.quantile_ms(0.999), Better::Lower);
    report.row("failed requests", "", Some(totals.failed_requests as f64), Better::Lower);
    report.row("failed items", "", Some(totals.failed_items as f64), Better::Lower);
    server_cost(&mut report, before, after, totals.stored, "notifications");
    if totals.failed_items > 0 || totals.failed_requests > 0 {
        report.problem(format!(
            "{} of {} items were not stored ({} requests failed): {}",
            totals.failed_items,
            totals.stored + totals.failed_items,
            totals.failed_requests,
            totals.errors.join("; ")
        ));
    }
    report.note("Tidings answers a batch once its notifications and their events are committed to its database");
    Ok(report)
}

/// Sends one batch of `count` items and reads the answer item by item.
pub(super) async fn send(client: &reqwest::Client, url: &str, token: &str, body: String, count: u64) -> Outcome {
    let started = Instant::now();
    let result = async {
        let response = client.post(url).bearer_auth(token).header("content-type", "application/json").body(body).send().await.map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("{url} answered {status}: {}", text.chars().take(200).collect::<String>()));
        }
        Ok(text)
    }
    .await;
    let micros = started.elapsed().as_micros() as u64;
    let text = match result {
        Ok(text) => text,
        Err(e) => return Outcome { stored: 0, failed: count, request_ok: false, micros, errors: vec![e] },
    };
    let (stored, errors) = tally(&text, count);
    Outcome { stored, failed: count - stored, request_ok: true, micros, errors }
}

/// Items stored according to a batch answer, and why some were not.
fn tally(answer: &str, count: u64) -> (u64, Vec<String>) {
    let results = match serde_json::from_str::<serde_json::Value>(answer) {
        Ok(serde_json::Value::Object(mut answer)) => match answer.remove("results") {
            Some(serde_json::Value::Array(results)) => results,
            _ => return (0, vec![format!("no results in the answer: {}", answer_excerpt(answer))]),
        },
        _ => return (0, vec![format!("unreadable answer: {}", answer.chars().take(200).collect::<String>())]),
    };
    let mut errors = Vec::new();
    let mut stored = 0;
    for entry in &results {
        if entry.get("created").and_then(|c| c.as_array()).is_some_and(|c| c.len() == 1) {
            stored += 1;
        } else if errors.len() < ERRORS_KEPT {
            errors.push(format!("item not stored: {}", entry.to_string().chars().take(200).collect::<String>()));
        }
    }
    if results.len() as u64 != count {
        errors.push(format!("{} results for {count} items", results.len()));
    }
    (stored.min(count), errors)
}

fn answer_excerpt(answer: serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::Value::Object(answer).to_string().chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_items_created_once() {
        let answer = r#"{"results":[{"created":[1],"suppressed":[],"rate_limited":[]},{"created":[],"suppressed":[],"rate_limited":["u"]},{"error":{"code":"invalid","message":"m"}}]}"#;
        let (stored, errors) = tally(answer, 3);
        assert_eq!(stored, 1);
        assert_eq!(errors.len(), 2);
        let (stored, errors) = tally(r#"{"results":[{"created":[1]}]}"#, 2);
        assert_eq!((stored, errors.len()), (1, 1));
        assert_eq!(tally("oops", 2).0, 0);
    }
}
