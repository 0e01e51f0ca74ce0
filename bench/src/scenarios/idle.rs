//! `idle`: N streams open and idle. Measures what an open stream costs the
//! server in resident memory (VmRSS after minus before, over N) and CPU to
//! open.

use std::time::Duration;

use super::{Ctx, connect, server_cost};
use crate::{
    cli::IdleArgs,
    report::{Better, Report},
};

pub async fn run(ctx: &Ctx, args: &IdleArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("idle", &ctx.target);
    report.param("streams", args.streams);
    report.param("settle_s", args.settle);
    let conns = (0..args.streams)
        .map(|i| {
            let user = ctx.name("u", i);
            ctx.target.conn(&user, &user, &user)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let before = ctx.sample();
    let (mut fleet, connected) = connect(ctx, &mut report, conns, Duration::from_secs(args.settle)).await?;
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let after = ctx.sample();
    let (_, dropped) = fleet.progress().await?;
    fleet.stop().await;

    report.row("time to open all", "s", Some(connected.elapsed.as_secs_f64()), Better::Lower);
    report.row("server RSS before", "MiB", before.map(|b| b.rss_kib as f64 / 1024.0), Better::Info);
    let per_stream = match (before, after) {
        (Some(b), Some(a)) if connected.ok > 0 => Some((a.rss_kib as f64 - b.rss_kib as f64) / connected.ok as f64),
        _ => None,
    };
    report.row("memory per open stream", "KiB", per_stream, Better::Lower);
    server_cost(&mut report, before, after, connected.ok, "streams opened");
    report.row("streams dropped while idle", "", Some(dropped as f64), Better::Lower);
    if dropped > 0 {
        report.problem(format!("{dropped} idle streams ended by themselves"));
    }
    report.note("memory per stream = (VmRSS of the server's process tree after - before) / streams open");
    Ok(report)
}
