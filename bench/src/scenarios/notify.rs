//! `notify`: N users, each with one open stream; notifications to random
//! users at R/s for T s. Measures publish-to-receive latency, deliveries per
//! second and loss.

use std::{sync::Arc, time::Duration};

use rand::Rng;

use super::{Ctx, Live, connect, deliver};
use crate::{cli::NotifyArgs, publisher::Schedule, report::Report};

pub async fn run(ctx: &Ctx, args: &NotifyArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("notify", &ctx.target);
    report.param("users", args.users);
    report.param("rate", args.rate);
    report.param("duration_s", args.duration);
    report.param("concurrency", args.concurrency);
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    let users: Vec<String> = (0..args.users).map(|i| ctx.name("u", i)).collect();
    let conns = users.iter().map(|u| ctx.target.conn(u, u, u)).collect::<anyhow::Result<Vec<_>>>()?;
    let busy = Duration::from_secs(args.duration + args.drain);
    let (fleet, _) = connect(ctx, &mut report, conns, busy).await?;

    let target = ctx.target.clone();
    let mut rng = rand::rng();
    let mut posts = move |_seq: u32| {
        let user = &users[rng.random_range(0..users.len())];
        Arc::new(target.posts_to_user(user, 1))
    };
    let schedule = Schedule {
        rate: (args.rate > 0.0).then_some(args.rate),
        duration: Duration::from_secs(args.duration),
        concurrency: args.concurrency,
        max_messages: None,
    };
    let live = Live { schedule, drain: Duration::from_secs(args.drain), posts: &mut posts };
    deliver(ctx, &mut report, fleet, live).await?;
    Ok(report)
}
