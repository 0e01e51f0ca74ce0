//! `ingest`: publishes as fast as C requests in flight allow, for T s, to
//! random users nobody listens to. Measures how many publishes per second
//! the hub accepts (for Tidings, each answered only after its SQLite
//! commit) and what a publish costs.

use std::{sync::Arc, time::Duration};

use rand::Rng;

use super::{Ctx, server_cost};
use crate::{
    cli::IngestArgs,
    publisher::{self, Publisher, Schedule},
    report::{Better, Report},
};

pub async fn run(ctx: &Ctx, args: &IngestArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("ingest", &ctx.target);
    report.param("concurrency", args.concurrency);
    report.param("duration_s", args.duration);
    report.param("users", args.users);
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    let users: Vec<String> = (0..args.users).map(|i| ctx.name("i", i)).collect();
    let target = ctx.target.clone();
    let mut rng = rand::rng();
    let posts = move |_seq: u32| Arc::new(target.posts_to_user(&users[rng.random_range(0..users.len())], 0));
    let publisher = Arc::new(Publisher::new(args.concurrency, ctx.output.body_bytes)?);
    let schedule = Schedule { rate: None, duration: Duration::from_secs(args.duration), concurrency: args.concurrency, max_messages: None };

    let before = ctx.sample();
    let published = publisher::run(&publisher, schedule, 0, posts).await;
    let after = ctx.sample();

    let secs = published.elapsed.as_secs_f64();
    report.row("publishes confirmed", "", Some(published.ok_requests as f64), Better::Info);
    report.row("publishes per second", "1/s", (secs > 0.0).then(|| published.ok_requests as f64 / secs), Better::Higher);
    report.row("publish latency p50", "ms", published.post_latency.quantile_ms(0.50), Better::Lower);
    report.row("publish latency p99", "ms", published.post_latency.quantile_ms(0.99), Better::Lower);
    report.row("publish latency p99.9", "ms", published.post_latency.quantile_ms(0.999), Better::Lower);
    report.row("publishes failed", "", Some(published.failed_requests as f64), Better::Lower);
    server_cost(&mut report, before, after, published.ok_requests, "publishes");
    if published.failed_requests > 0 {
        report.problem(format!("{} publishes failed: {}", published.failed_requests, published.errors.join("; ")));
    }
    if ctx.target.is_tidings() {
        report.note("Tidings answers 201 after the notification and its event are committed to its database");
    }
    Ok(report)
}
