//! The scenarios, one module each. Every scenario is bounded in time,
//! prints one results table and returns it as a [`Report`].
//!
//! This module holds what they share: the run context (target, load layout,
//! server probe, unique names) and the live-delivery procedure that `notify`,
//! `fanout`, `topic` and `announce` all are: connect, publish on a schedule,
//! drain, reconcile.

pub mod announce;
pub mod batch;
pub mod catchup;
pub mod chat;
pub mod fanout;
pub mod idle;
pub mod ingest;
pub mod notify;
pub mod storm;
pub mod topic;
pub mod webhook;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    cli::{LoadArgs, OutputArgs},
    fleet::{Connected, Fleet},
    metrics::Latency,
    procstat::{Sample, ServerProbe},
    publisher::{self, Publisher, Schedule},
    report::{Better, Report},
    target::{ConnSpec, PostSpec, Target},
};

/// Time allowed for everything that is not the scenario's own duration:
/// starting workers, connecting, settling, final reports.
const MARGIN: Duration = Duration::from_secs(180);

/// Everything a scenario needs besides its own arguments.
pub struct Ctx {
    pub target: Target,
    pub load: LoadArgs,
    pub output: OutputArgs,
    /// Prefix of every user and channel name of this run.
    pub run_id: String,
    probe: Option<ServerProbe>,
}

impl Ctx {
    pub fn new(target: Target, load: LoadArgs, output: OutputArgs) -> Self {
        let run_id = output.run_id.clone().unwrap_or_else(|| format!("b{}", crate::stamp::now_ns() / 1_000_000 % 1_000_000_000));
        let probe = target.server_pid.map(ServerProbe::new);
        Ctx { target, load, output, run_id, probe }
    }

    /// The `i`-th name of a kind (`u` users, `c` catch-up users, `room`...).
    pub fn name(&self, kind: &str, i: u64) -> String {
        format!("{}-{kind}{i}", self.run_id)
    }

    /// The server's memory and CPU now, if its pid is known and readable.
    pub fn sample(&self) -> Option<Sample> {
        let probe = self.probe.as_ref()?;
        match probe.sample() {
            Ok(sample) => Some(sample),
            Err(e) => {
                eprintln!("tidings-bench: cannot read the server's /proc: {e:#}");
                None
            }
        }
    }

    /// How long workers may live for a scenario of this length.
    pub fn lifetime(&self, busy: Duration) -> Duration {
        busy + MARGIN + Duration::from_secs(self.load.connect_timeout)
    }
}

/// Opens the connections, reporting (and flagging) how many failed.
pub async fn connect(ctx: &Ctx, report: &mut Report, conns: Vec<ConnSpec>, busy: Duration) -> anyhow::Result<(Fleet, Connected)> {
    connect_with(ctx, &ctx.load, false, report, conns, busy).await
}

/// [`connect`] with another load layout, and streams that reconnect with
/// their `Last-Event-ID` if `resume` (see `protocol::Setup::resume`).
pub async fn connect_with(
    ctx: &Ctx,
    load: &LoadArgs,
    resume: bool,
    report: &mut Report,
    conns: Vec<ConnSpec>,
    busy: Duration,
) -> anyhow::Result<(Fleet, Connected)> {
    let wanted = conns.len() as u64;
    eprintln!("tidings-bench: opening {wanted} streams on {}", ctx.target.name);
    let (fleet, connected) = Fleet::start_with(conns, load, ctx.lifetime(busy), resume).await?;
    eprintln!(
        "tidings-bench: {} open, {} failed, in {:.1} s over {} workers",
        connected.ok,
        connected.failed,
        connected.elapsed.as_secs_f64(),
        connected.workers
    );
    report.param("workers", connected.workers);
    report.row("streams open", "", Some(connected.ok as f64), Better::Info);
    if connected.failed > 0 {
        report.problem(format!("{} of {wanted} streams failed to open: {}", connected.failed, connected.errors.join("; ")));
    }
    Ok((fleet, connected))
}

/// A live-delivery run: messages on `schedule`, each sent with `posts(seq)`,
/// to connections already open in `fleet`.
pub struct Live<'a> {
    pub schedule: Schedule,
    pub drain: Duration,
    pub posts: &'a mut dyn FnMut(u32) -> Arc<Vec<PostSpec>>,
}

/// Publishes, waits for the deliveries, and fills the report with
/// throughput, latency, loss and server cost. Returns what the publisher
/// saw, for scenarios that report more of it.
pub async fn deliver(ctx: &Ctx, report: &mut Report, mut fleet: Fleet, live: Live<'_>) -> anyhow::Result<publisher::Published> {
    let publisher = Arc::new(Publisher::new(live.schedule.concurrency, ctx.output.body_bytes)?);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ctx.sample();
    eprintln!("tidings-bench: publishing for {:?}", live.schedule.duration);
    let published = publisher::run(&publisher, live.schedule, 0, live.posts).await;
    let expected = published.expected_total();
    let drained = Instant::now();
    loop {
        let (delivered, _) = fleet.progress().await?;
        if delivered >= expected || drained.elapsed() >= live.drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = ctx.sample();
    tokio::time::sleep(Duration::from_secs(ctx.load.hold_streams)).await;
    let tally = fleet.finish().await?;
    let verdict = tally.reconcile(&published.expected);
    let latency = Latency::from_pairs(&tally.latency);

    let window = match (published.first_send_ns, tally.last_ns) {
        (Some(first), Some(last)) if last > first => Some((last - first) as f64 / 1e9),
        _ => None,
    };
    let publish_secs = published.elapsed.as_secs_f64();
    report.row("messages published", "", Some(published.messages as f64), Better::Info);
    report.row("publish rate achieved", "msg/s", (publish_secs > 0.0).then(|| published.messages as f64 / publish_secs), Better::Higher);
    report.row("deliveries", "", Some(tally.delivered as f64), Better::Info);
    report.row("deliveries per second", "1/s", window.map(|w| tally.delivered as f64 / w), Better::Higher);
    report.row("latency p50", "ms", latency.quantile_ms(0.50), Better::Lower);
    report.row("latency p99", "ms", latency.quantile_ms(0.99), Better::Lower);
    report.row("latency p99.9", "ms", latency.quantile_ms(0.999), Better::Lower);
    report.row("latency max", "ms", latency.max_ms(), Better::Lower);
    report.row("lost", "", Some(verdict.lost as f64), Better::Lower);
    report.row("duplicated", "", Some(tally.duplicates as f64), Better::Lower);
    report.row("misrouted", "", Some(tally.misrouted as f64), Better::Lower);
    server_cost(report, before, after, tally.delivered, "deliveries");
    report.row("opens refused (503/429, retried)", "", Some(tally.resume.refused as f64), Better::Lower);
    report.row("publish request p50", "ms", published.post_latency.quantile_ms(0.50), Better::Lower);
    report.row("publish request p99", "ms", published.post_latency.quantile_ms(0.99), Better::Lower);
    if let Some(first) = published.first_send_ns {
        let slowest: Vec<String> = published.slowest.iter().map(|&(at, micros)| format!("{:.0} ms at {:.1} s", micros as f64 / 1e3, at.saturating_sub(first) as f64 / 1e9)).collect();
        eprintln!("tidings-bench: slowest publish requests (duration at seconds since the first): {}", slowest.join(", "));
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
    if published.failed_requests > 0 {
        report.problem(format!("{} publish requests failed: {}", published.failed_requests, published.errors.join("; ")));
    }
    if verdict.unconfirmed > 0 {
        report.note(format!("{} deliveries of messages whose publish request failed", verdict.unconfirmed));
    }
    if tally.disconnects > 0 {
        report.problem(format!("{} streams ended during the run", tally.disconnects));
    }
    if let Some(rate) = live.schedule.rate {
        let achieved = published.messages as f64 / publish_secs.max(1e-9);
        if achieved < rate * 0.95 {
            report.note(format!("the publisher fell behind: {achieved:.0} of {rate} msg/s (publish requests in flight capped at {})", live.schedule.concurrency));
        }
    }
    Ok(published)
}

/// Adds the server's CPU seconds per 1,000 `unit` and its resident memory.
pub fn server_cost(report: &mut Report, before: Option<Sample>, after: Option<Sample>, count: u64, unit: &str) {
    let cpu = match (before, after) {
        (Some(b), Some(a)) if count > 0 => Some((a.cpu_secs - b.cpu_secs) / count as f64 * 1000.0),
        _ => None,
    };
    report.row(&format!("server CPU per 1,000 {unit}"), "s", cpu, Better::Lower);
    report.row("server RSS at end", "MiB", after.map(|a| a.rss_kib as f64 / 1024.0), Better::Info);
}
