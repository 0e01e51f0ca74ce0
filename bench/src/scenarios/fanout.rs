//! `fanout`: one audience of M connected users, R messages per second to
//! all of them. Measures deliveries per second and latency.
//!
//! A channel hub subscribes every member to the audience's channel and
//! publishes once per message. Tidings has no conversations yet, so each
//! member holds their own stream and a message is published with
//! `user_ids`: one request per 1000 members (5 per message for 5,000),
//! each stored as one notification per member before it is sent.

use std::{sync::Arc, time::Duration};

use super::{Ctx, Live, connect, deliver};
use crate::{
    cli::FanoutArgs,
    publisher::Schedule,
    report::Report,
    target::TIDINGS_MAX_RECIPIENTS,
};

pub async fn run(ctx: &Ctx, args: &FanoutArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("fanout", &ctx.target);
    report.param("members", args.members);
    report.param("rate", args.rate);
    report.param("duration_s", args.duration);
    report.param("concurrency", args.concurrency);
    let room = ctx.name("room", 0);
    let members: Vec<String> = (0..args.members).map(|i| ctx.name("m", i)).collect();
    let conns = members.iter().map(|m| ctx.target.conn(m, &room, &room)).collect::<anyhow::Result<Vec<_>>>()?;
    let busy = Duration::from_secs(args.duration + args.drain);
    let (fleet, _) = connect(ctx, &mut report, conns, busy).await?;

    let requests = Arc::new(ctx.target.posts_to_audience(&room, &members));
    if ctx.target.is_tidings() {
        report.note(format!(
            "Tidings has no chat yet: each message is published with user_ids, {} request(s) of up to {TIDINGS_MAX_RECIPIENTS} recipients, each recipient's notification stored in SQLite before it is sent",
            requests.len()
        ));
    }
    let mut posts = move |_seq: u32| requests.clone();
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
