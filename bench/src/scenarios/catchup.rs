//! `catchup`: a subscriber comes back K events behind and resumes from the
//! last id it saw. Measures the time from its request to the last of the K
//! events, using the hub's own resume mechanism (`Last-Event-ID`); a hub
//! without usable ids gets n/a.
//!
//! 1. A stream is opened, a marker message published, and the marker's
//!    event id noted; the stream closes.
//! 2. K messages are published to the same user or channel.
//! 3. A stream resumes with `Last-Event-ID: <marker id>` and must receive
//!    exactly the K messages. This is repeated on the same backlog.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::StreamExt;

use super::{Ctx, server_cost};
use crate::{
    cli::CatchupArgs,
    publisher::{self, Publisher, Schedule},
    report::{Better, Report},
    sse, stamp,
    target::ConnSpec,
};

/// One measured resume.
#[derive(Debug, Clone, Copy)]
struct Resume {
    /// Request sent to last of the K events received.
    all: Duration,
    /// Request sent to first of the K events received.
    first: Duration,
    received: u32,
    duplicates: u64,
}

pub async fn run(ctx: &Ctx, args: &CatchupArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("catchup", &ctx.target);
    report.param("events", args.events);
    report.param("repeat", args.repeat);
    if !ctx.target.resumes() {
        for metric in ["time to receive all, median", "time to receive all, slowest", "time to first event", "events per second"] {
            let (unit, better) = if metric.starts_with("events") { ("1/s", Better::Higher) } else { ("ms", Better::Lower) };
            report.row(metric, unit, None, better);
        }
        report.note("n/a: this hub has no history or no resumable event ids");
        return Ok(report);
    }
    let user = ctx.name("c", 0);
    let conn = ctx.target.conn(&user, &user, &user)?;
    let timeout = Duration::from_secs(args.timeout);
    let client = sse::stream_client(None, Duration::from_secs(ctx.load.connect_timeout))?;
    let publisher = Arc::new(Publisher::new(args.concurrency, ctx.output.body_bytes)?);
    let target = ctx.target.clone();
    let posts = {
        let requests = Arc::new(target.posts_to_user(&user, 1));
        move |_seq: u32| requests.clone()
    };

    let marker = marker_id(&client, &conn, &publisher, posts.clone(), timeout).await?;
    eprintln!("tidings-bench: marker id {marker:?}; publishing {} events", args.events);
    let backlog = Schedule { rate: None, duration: Duration::from_secs(600), concurrency: args.concurrency, max_messages: Some(args.events) };
    let published = publisher::run(&publisher, backlog, 1, posts).await;
    if published.failed_requests > 0 || published.ok_requests < args.events as u64 {
        bail!("building the backlog failed: {} of {} publishes failed: {}", published.failed_requests, args.events, published.errors.join("; "));
    }
    let backlog_rate = published.ok_requests as f64 / published.elapsed.as_secs_f64();

    let before = ctx.sample();
    let mut resumes = Vec::new();
    for round in 0..args.repeat.max(1) {
        let resume = resume(&client, &conn, &marker, args.events, timeout).await?;
        eprintln!("tidings-bench: resume {round}: {} events in {:?}", resume.received, resume.all);
        resumes.push(resume);
    }
    let after = ctx.sample();

    let mut times: Vec<Duration> = resumes.iter().map(|r| r.all).collect();
    times.sort();
    let median = times[(times.len() - 1) / 2];
    let slowest = *times.last().expect("at least one resume");
    let first = resumes.iter().map(|r| r.first).min().expect("at least one resume");
    let lost: u64 = resumes.iter().map(|r| (args.events - r.received) as u64).sum();
    let duplicates: u64 = resumes.iter().map(|r| r.duplicates).sum();
    report.row("time to receive all, median", "ms", Some(median.as_secs_f64() * 1000.0), Better::Lower);
    report.row("time to receive all, slowest", "ms", Some(slowest.as_secs_f64() * 1000.0), Better::Lower);
    report.row("time to first event", "ms", Some(first.as_secs_f64() * 1000.0), Better::Lower);
    report.row("events per second", "1/s", Some(args.events as f64 / median.as_secs_f64()), Better::Higher);
    report.row("lost", "", Some(lost as f64), Better::Lower);
    report.row("duplicated", "", Some(duplicates as f64), Better::Lower);
    report.row("backlog publish rate", "1/s", Some(backlog_rate), Better::Info);
    server_cost(&mut report, before, after, args.events as u64 * resumes.len() as u64, "replayed events");
    if lost > 0 {
        report.problem(format!("{lost} events missing after resuming (over {} resumes)", resumes.len()));
    }
    if duplicates > 0 {
        report.problem(format!("{duplicates} events received twice on one resumed stream"));
    }
    Ok(report)
}

/// Opens a stream, publishes message 0 and returns the event id it came with.
async fn marker_id(
    client: &reqwest::Client,
    conn: &ConnSpec,
    publisher: &Arc<Publisher>,
    posts: impl FnMut(u32) -> Arc<Vec<crate::target::PostSpec>>,
    timeout: Duration,
) -> anyhow::Result<String> {
    let events = sse::open(client, conn, None, timeout).await.context("opening the first stream")?;
    let reader = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| anyhow::anyhow!("stream failed: {e}"))?;
            if stamp::read(&event.data).is_some_and(|s| s.seq == 0) {
                return Ok(event.id);
            }
        }
        bail!("the stream ended before the marker arrived")
    });
    let once = Schedule { rate: None, duration: Duration::from_secs(60), concurrency: 1, max_messages: Some(1) };
    let published = publisher::run(publisher, once, 0, posts).await;
    if published.ok_requests != 1 {
        reader.abort();
        bail!("publishing the marker failed: {}", published.errors.join("; "));
    }
    let id = tokio::time::timeout(timeout, reader).await.context("the marker did not arrive")???;
    if id.is_empty() {
        bail!("the hub sent the marker without an id: it cannot be resumed from (use --ids none)");
    }
    Ok(id)
}

/// Resumes after `marker` and reads until messages 1..=k have all arrived.
async fn resume(client: &reqwest::Client, conn: &ConnSpec, marker: &str, k: u32, timeout: Duration) -> anyhow::Result<Resume> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + timeout);
    let events = sse::open(client, conn, Some(marker), timeout).await.context("resuming")?;
    let mut events = std::pin::pin!(events);
    let mut seen = vec![false; k as usize + 1];
    let mut out = Resume { all: Duration::ZERO, first: Duration::ZERO, received: 0, duplicates: 0 };
    while out.received < k {
        let event = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Ok(event))) => event,
            Ok(Some(Err(e))) => bail!("the resumed stream failed: {e}"),
            Ok(None) | Err(_) => break,
        };
        let Some(stamp) = stamp::read(&event.data) else { continue };
        let Some(slot) = seen.get_mut(stamp.seq as usize).filter(|_| stamp.seq >= 1) else { continue };
        if *slot {
            out.duplicates += 1;
            continue;
        }
        *slot = true;
        out.received += 1;
        if out.received == 1 {
            out.first = started.elapsed();
        }
        out.all = started.elapsed();
    }
    Ok(out)
}
