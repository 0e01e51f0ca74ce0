//! `webhook` (Tidings only): the outbox's webhook channel against a local
//! receiver, and what the channel costs publishing.
//!
//! 1. **Channels off**: batch publishes (N notifications per request, each
//!    to a different user) at concurrency C for T s, no webhook registered.
//! 2. A receiver starts here (hyper, port 0, answers 204 at once and
//!    counts distinct `webhook-id`s), and is registered as a webhook for
//!    every type (scope `admin`).
//! 3. **Channels on**: the same publishing for T s: each notification now
//!    also writes one delivery row in its transaction, and the node's
//!    worker posts them while publishing goes on.
//! 4. Waits (up to `--drain`) until every stored notification of phase 3
//!    was received.
//!
//! Reports webhook deliveries per second (distinct ids received over the
//! time from the first to the last arrival), lost and repeated
//! deliveries, and publish throughput and latency off and on.

use std::{
    collections::HashSet,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::{sync::Semaphore, task::JoinSet};

use super::{Ctx, batch, server_cost};
use crate::{
    cli::WebhookArgs,
    metrics::Latency,
    publisher::api_client,
    report::{Better, Report},
};

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    requests: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// One publishing phase's figures.
#[derive(Default)]
struct Phase {
    stored: u64,
    failed: u64,
    secs: f64,
    latency: Latency,
    errors: Vec<String>,
}

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

pub async fn run(ctx: &Ctx, args: &WebhookArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("webhook", &ctx.target);
    report.param("items", args.items);
    report.param("concurrency", args.concurrency);
    report.param("duration_s", args.duration);
    let Some((base, token)) = ctx.target.tidings_api() else {
        report.row("webhook deliveries per second", "1/s", None, Better::Higher);
        report.note("n/a: webhooks are Tidings' own API");
        return Ok(report);
    };
    anyhow::ensure!(args.users >= args.items, "--users must be at least --items");
    let client = api_client(args.concurrency)?;
    let mut next_user = 0u64;

    eprintln!("tidings-bench: webhook: publishing with channels off for {} s", args.duration);
    let off = publish_for(ctx, args, &client, base, token, &mut next_user).await?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let receiver = start_receiver(seen.clone()).await?;
    let admin = ctx.target.admin_token()?;
    let registered = client.post(format!("{base}/v1/webhooks")).bearer_auth(&admin).json(&serde_json::json!({"url": receiver})).send().await?;
    anyhow::ensure!(registered.status() == reqwest::StatusCode::CREATED, "registering the webhook answered {}", registered.status());

    eprintln!("tidings-bench: webhook: publishing with the webhook channel on for {} s", args.duration);
    let before = ctx.sample();
    let on = publish_for(ctx, args, &client, base, token, &mut next_user).await?;
    let drained = Instant::now();
    loop {
        let received = seen.lock().expect("receiver lock").ids.len() as u64;
        if received >= on.stored || drained.elapsed() >= Duration::from_secs(args.drain) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = ctx.sample();
    let seen = seen.lock().expect("receiver lock");
    let received = seen.ids.len() as u64;
    let window = match (seen.first, seen.last) {
        (Some(first), Some(last)) if last > first => Some((last - first).as_secs_f64()),
        _ => None,
    };

    let rate = |phase: &Phase| (phase.secs > 0.0).then(|| phase.stored as f64 / phase.secs);
    report.row("webhook deliveries", "", Some(received as f64), Better::Info);
    report.row("webhook deliveries per second", "1/s", window.map(|w| received as f64 / w), Better::Higher);
    report.row("lost deliveries", "", Some(on.stored.saturating_sub(received) as f64), Better::Lower);
    report.row("repeated deliveries", "", Some(seen.requests.saturating_sub(received) as f64), Better::Lower);
    report.row("published per second, channels off", "1/s", rate(&off), Better::Higher);
    report.row("published per second, channels on", "1/s", rate(&on), Better::Higher);
    report.row(
        "publish throughput on / off",
        "",
        match (rate(&on), rate(&off)) {
            (Some(on), Some(off)) if off > 0.0 => Some(on / off),
            _ => None,
        },
        Better::Higher,
    );
    report.row("batch request p50, channels off", "ms", off.latency.quantile_ms(0.50), Better::Lower);
    report.row("batch request p50, channels on", "ms", on.latency.quantile_ms(0.50), Better::Lower);
    report.row("batch request p99, channels off", "ms", off.latency.quantile_ms(0.99), Better::Lower);
    report.row("batch request p99, channels on", "ms", on.latency.quantile_ms(0.99), Better::Lower);
    server_cost(&mut report, before, after, received, "deliveries (publishing included)");
    if received < on.stored {
        report.problem(format!("{} of {} webhook deliveries did not arrive within {} s", on.stored - received, on.stored, args.drain));
    }
    for phase in [&off, &on] {
        if phase.failed > 0 {
            report.problem(format!("{} items were not stored: {}", phase.failed, phase.errors.join("; ")));
        }
    }
    report.note("channels on: each notification also writes its delivery row in the same transaction, and the node's worker posts deliveries (signed, Standard Webhooks) while publishing goes on");
    Ok(report)
}

/// Batch publishing for `--duration` seconds.
async fn publish_for(ctx: &Ctx, args: &WebhookArgs, client: &reqwest::Client, base: &str, token: &str, next_user: &mut u64) -> anyhow::Result<Phase> {
    let url: Arc<str> = format!("{base}/v1/notifications/batch").into();
    let token: Arc<str> = token.into();
    let filler = "x".repeat(ctx.output.body_bytes);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    let mut phase = Phase::default();
    let absorb = |phase: &mut Phase, outcome: batch::Outcome| {
        phase.stored += outcome.stored;
        phase.failed += outcome.failed;
        phase.latency.record_micros(outcome.micros);
        if phase.errors.len() < 5 {
            phase.errors.extend(outcome.errors);
        }
    };
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    loop {
        let permit = gate.clone().acquire_owned().await.expect("the gate is never closed");
        if Instant::now() >= end {
            break;
        }
        let items = (0..args.items)
            .map(|_| {
                let user_id = ctx.name("w", *next_user % args.users);
                *next_user += 1;
                Item { user_id, r#type: "bench", title: "bench", body: &filler }
            })
            .collect();
        let body = serde_json::to_string(&Batch { items })?;
        let (client, url, token, count) = (client.clone(), url.clone(), token.clone(), args.items);
        in_flight.spawn(async move {
            let outcome = batch::send(&client, &url, &token, body, count).await;
            drop(permit);
            outcome
        });
        while let Some(done) = in_flight.try_join_next() {
            absorb(&mut phase, done.expect("batch tasks do not panic"));
        }
    }
    while let Some(done) = in_flight.join_next().await {
        absorb(&mut phase, done.expect("batch tasks do not panic"));
    }
    phase.secs = start.elapsed().as_secs_f64();
    Ok(phase)
}

/// Starts the receiver on 127.0.0.1, port 0; its URL.
async fn start_receiver(seen: Arc<Mutex<Seen>>) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let id = request.headers().get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                        // Read the body, so the connection is kept alive.
                        let _ = request.into_body().collect().await;
                        let now = Instant::now();
                        let mut seen = seen.lock().expect("receiver lock");
                        seen.requests += 1;
                        seen.first.get_or_insert(now);
                        seen.last = Some(now);
                        if let Some(id) = id {
                            seen.ids.insert(id);
                        }
                        drop(seen);
                        Ok::<_, Infallible>(Response::builder().status(204).body(Empty::<Bytes>::new()).expect("a static response"))
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(url)
}
