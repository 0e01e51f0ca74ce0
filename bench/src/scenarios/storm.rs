//! `storm` (Tidings only): a reconnect storm. N users, each with one open
//! stream; notifications to random users at R/s for the whole run. After a
//! warm-up, every stream drops at once (each worker closes all its
//! connections) and reconnects at once with its `Last-Event-ID`, as
//! EventSource clients do after a deploy or a network blip.
//!
//! 1. Open the N streams (resuming workers: see `protocol::Setup::resume`).
//! 2. Publish to random users at R/s from now to the end.
//! 3. After `--warmup` s: the drop. Each stream reconnects at once with the
//!    last event id it saw; a refused open (503 with `Retry-After`, which
//!    Tidings answers when an open waited too long for its turn) is retried
//!    after `Retry-After`, a connection error after 1 s. A stream is live
//!    again at its first `unread_count` after reconnecting.
//! 4. Once all are live again (or after `--storm-timeout`), `--after` s more
//!    of publishing, then at most `--drain` s for outstanding deliveries.
//!
//! Reported: the time from the drop until all streams are live again (and
//! per stream), the server's CPU over that window, refused opens and
//! connection errors (retried, so not failures), and, over the whole run,
//! lost and duplicated events: every notification the server accepted must
//! reach its user's stream exactly once across the reconnection. Delivery
//! latency is split by send time: before the drop, during the storm (from
//! the drop until all are live again; these include the replayed events,
//! so their latency is the time the stream was down), and after.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use rand::Rng;

use super::{Ctx, connect_with};
use crate::{
    cli::StormArgs,
    fleet::Fleet,
    metrics::Latency,
    procstat::Sample,
    publisher::{self, Publisher, Schedule},
    report::{Better, Report},
    stamp,
};

/// The rows of the report, for the n/a report of a hub that is not Tidings.
const METRICS: [(&str, &str, Better); 8] = [
    ("time until all live again", "s", Better::Lower),
    ("reconnect time p99", "ms", Better::Lower),
    ("server CPU during the storm", "s", Better::Lower),
    ("opens refused (503, retried)", "", Better::Lower),
    ("connection errors (retried)", "", Better::Lower),
    ("lost", "", Better::Lower),
    ("duplicated", "", Better::Lower),
    ("latency p99 during the storm", "ms", Better::Lower),
];

/// What the storm phase saw, from the coordinator's side.
struct Storm {
    /// Wall-clock ns just before the drop was sent.
    drop_ns: u64,
    /// Streams told to drop.
    dropped: u64,
    /// Whether every dropped stream was live again within the timeout.
    complete: bool,
    /// From the drop until all were live again (or the timeout).
    window: Duration,
    before: Option<Sample>,
    after: Option<Sample>,
}

pub async fn run(ctx: &Ctx, args: &StormArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("storm", &ctx.target);
    report.param("streams", args.streams);
    report.param("rate", args.rate);
    report.param("warmup_s", args.warmup);
    report.param("after_s", args.after);
    report.param("concurrency", args.concurrency);
    if !ctx.target.is_tidings() {
        for (metric, unit, better) in METRICS {
            report.row(metric, unit, None, better);
        }
        report.note("n/a: the storm is measured on Tidings' resume (Last-Event-ID replay, then unread_count)");
        return Ok(report);
    }
    anyhow::ensure!(args.streams > 0, "--streams must be at least 1");
    anyhow::ensure!(args.streams_per_worker > 0, "--streams-per-worker must be at least 1");
    let users: Vec<String> = (0..args.streams).map(|i| ctx.name("u", i)).collect();
    let conns = users.iter().map(|u| ctx.target.conn(u, u, u)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut load = ctx.load.clone();
    if load.workers.is_none() {
        load.workers = Some(args.streams.div_ceil(args.streams_per_worker).max(2) as usize);
    }
    let busy = Duration::from_secs(args.warmup + args.storm_timeout + args.after + args.drain);
    let (mut fleet, connected) = connect_with(ctx, &load, true, &mut report, conns, busy).await?;

    let publisher = Arc::new(Publisher::new(args.concurrency, ctx.output.body_bytes)?);
    let target = ctx.target.clone();
    let mut rng = rand::rng();
    let posts = move |_seq: u32| {
        let user = &users[rng.random_range(0..users.len())];
        Arc::new(target.posts_to_user(user, 1))
    };
    let schedule = Schedule {
        rate: (args.rate > 0.0).then_some(args.rate),
        // Stopped by `stop` well before this.
        duration: busy + Duration::from_secs(60),
        concurrency: args.concurrency,
        max_messages: None,
    };
    let stop = AtomicBool::new(false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!("tidings-bench: publishing; the drop in {} s", args.warmup);
    let (published, storm) = tokio::join!(publisher::run_until(&publisher, schedule, 0, posts, Some(&stop)), async {
        let storm = storm(ctx, &mut fleet, args, connected.ok).await;
        stop.store(true, Ordering::Relaxed);
        storm
    });
    let storm = storm?;

    let expected = published.expected_total();
    let drained = Instant::now();
    loop {
        let (delivered, _) = fleet.progress().await?;
        if delivered >= expected || drained.elapsed() >= Duration::from_secs(args.drain) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tally = fleet.finish().await?;
    let verdict = tally.reconcile(&published.expected);
    let resume = &tally.resume;

    // Per stream: from the drop to its first `unread_count` after it.
    let mut reconnect = Latency::default();
    for &ns in &resume.live_again_ns {
        reconnect.record_micros(ns.saturating_sub(storm.drop_ns) / 1000);
    }
    let live_again = resume.live_again_ns.len() as u64;
    let all_live_ns = resume.live_again_ns.iter().copied().max();
    let all_live = all_live_ns.filter(|_| storm.complete).map(|ns| ns.saturating_sub(storm.drop_ns) as f64 / 1e9);
    let storm_end_ns = if storm.complete { all_live_ns.unwrap_or(storm.drop_ns) } else { storm.drop_ns + storm.window.as_nanos() as u64 };
    let (mut before, mut during, mut after, mut all) = (Latency::default(), Latency::default(), Latency::default(), Latency::default());
    for &(sent_ns, micros) in &resume.samples {
        all.record_micros(micros);
        if sent_ns < storm.drop_ns {
            before.record_micros(micros);
        } else if sent_ns <= storm_end_ns {
            during.record_micros(micros);
        } else {
            after.record_micros(micros);
        }
    }
    let cpu = match (storm.before, storm.after) {
        (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
        _ => None,
    };
    let window = storm.window.as_secs_f64();
    let publish_secs = published.elapsed.as_secs_f64();

    report.row("streams dropped", "", Some(storm.dropped as f64), Better::Info);
    report.row("time until all live again", "s", all_live, Better::Lower);
    report.row("reconnect time p50", "ms", reconnect.quantile_ms(0.50), Better::Lower);
    report.row("reconnect time p99", "ms", reconnect.quantile_ms(0.99), Better::Lower);
    report.row("streams not live again", "", Some(storm.dropped.saturating_sub(live_again) as f64), Better::Lower);
    report.row("opens refused (503, retried)", "", Some(resume.refused as f64), Better::Lower);
    report.row("connection errors (retried)", "", Some(resume.connect_errors as f64), Better::Lower);
    report.row("opens failed (other status)", "", Some(resume.failed as f64), Better::Lower);
    report.row("streams ended by the server", "", Some(tally.disconnects as f64), Better::Lower);
    report.row("server CPU during the storm", "s", cpu, Better::Lower);
    report.row("server CPU per 1,000 reconnects", "s", cpu.filter(|_| live_again > 0).map(|c| c / live_again as f64 * 1000.0), Better::Lower);
    report.row("server cores busy during the storm", "", cpu.filter(|_| window > 0.0).map(|c| c / window), Better::Info);
    report.row("messages published", "", Some(published.messages as f64), Better::Info);
    report.row("publish rate achieved", "msg/s", (publish_secs > 0.0).then(|| published.messages as f64 / publish_secs), Better::Higher);
    report.row("deliveries", "", Some(tally.delivered as f64), Better::Info);
    report.row("lost", "", Some(verdict.lost as f64), Better::Lower);
    report.row("duplicated", "", Some(tally.duplicates as f64), Better::Lower);
    report.row("misrouted", "", Some(tally.misrouted as f64), Better::Lower);
    report.row("latency p99", "ms", all.quantile_ms(0.99), Better::Lower);
    report.row("latency p99 before the drop", "ms", before.quantile_ms(0.99), Better::Lower);
    report.row("latency p99 during the storm", "ms", during.quantile_ms(0.99), Better::Lower);
    report.row("latency p99 after the storm", "ms", after.quantile_ms(0.99), Better::Lower);
    report.row("publish request p99", "ms", published.post_latency.quantile_ms(0.99), Better::Lower);
    report.row("server RSS at end", "MiB", storm.after.map(|a| a.rss_kib as f64 / 1024.0), Better::Info);
    report.note("live again: a stream's first unread_count after reconnecting with Last-Event-ID; refused opens are retried after Retry-After (1 s without one), connection errors after 1 s, as EventSource would");
    report.note("latency during the storm: notifications sent from the drop until all streams were live again, including those replayed on reconnection");

    if !storm.complete {
        report.problem(format!(
            "{} of {} streams were not live again {} s after the drop",
            storm.dropped.saturating_sub(live_again),
            storm.dropped,
            args.storm_timeout
        ));
    }
    if verdict.lost > 0 {
        report.problem(format!("{} of {expected} expected deliveries were lost", verdict.lost));
    }
    if tally.duplicates > 0 {
        report.problem(format!("{} deliveries were duplicates", tally.duplicates));
    }
    if tally.misrouted > 0 {
        report.problem(format!("{} deliveries reached the wrong connection", tally.misrouted));
    }
    if resume.failed > 0 {
        report.problem(format!("{} reconnections were answered with a status other than 200, 429 or 503", resume.failed));
    }
    if tally.disconnects > 0 {
        report.problem(format!("{} streams were ended by the server (they reconnected)", tally.disconnects));
    }
    if resume.resets > 0 {
        report.problem(format!("{} streams were told to reset (their Last-Event-ID was not resumable)", resume.resets));
    }
    if published.failed_requests > 0 {
        report.problem(format!("{} publish requests failed: {}", published.failed_requests, published.errors.join("; ")));
    }
    if verdict.unconfirmed > 0 {
        report.note(format!("{} deliveries of messages whose publish request failed", verdict.unconfirmed));
    }
    if let Some(rate) = schedule.rate {
        let achieved = published.messages as f64 / publish_secs.max(1e-9);
        if achieved < rate * 0.95 {
            report.note(format!("the publisher fell behind: {achieved:.0} of {rate} msg/s (publish requests in flight capped at {})", args.concurrency));
        }
    }
    Ok(report)
}

/// Warm-up, the drop, and the wait until every stream is live again; then
/// `--after` s more (the publisher runs throughout).
async fn storm(ctx: &Ctx, fleet: &mut Fleet, args: &StormArgs, open: u64) -> anyhow::Result<Storm> {
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let before = ctx.sample();
    let drop_ns = stamp::now_ns();
    let dropped_at = Instant::now();
    let dropped = fleet.drop_all().await?;
    eprintln!("tidings-bench: dropped {dropped} of {open} streams; waiting until all are live again");
    let timeout = Duration::from_secs(args.storm_timeout);
    let complete = loop {
        let progress = fleet.progress_detail().await?;
        if progress.live_again >= dropped {
            break true;
        }
        if dropped_at.elapsed() >= timeout {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = ctx.sample();
    let window = dropped_at.elapsed();
    eprintln!("tidings-bench: {} after {:.1} s; publishing {} s more", if complete { "all live again" } else { "gave up" }, window.as_secs_f64(), args.after);
    tokio::time::sleep(Duration::from_secs(args.after)).await;
    Ok(Storm { drop_ns, dropped, complete, window, before, after })
}
