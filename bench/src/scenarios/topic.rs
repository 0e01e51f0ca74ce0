//! `topic`: the broadcast counterpart of `fanout`. M subscribers of one
//! topic, R messages per second to it. Measures deliveries per second and
//! latency.
//!
//! Tidings: every subscriber is a different user whose token carries the
//! claim `topics: ["bench:*"]` and whose stream adds the topic with
//! `/v1/stream?topic=bench:ROOM`; a message is one
//! `POST /v1/topics/bench:ROOM/events`, stored once whatever the audience,
//! and arrives as `event: topic.event` with what was published in its
//! `data` (so the stamp is at `data.bench`, as in a notification). A
//! channel hub does exactly what it does in `fanout`: every subscriber on
//! the channel `ROOM`, one publish per message. Both receive the same body.

use std::{sync::Arc, time::Duration};

use super::{Ctx, Live, connect, deliver};
use crate::{cli::TopicArgs, publisher::Schedule, report::Report};

pub async fn run(ctx: &Ctx, args: &TopicArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("topic", &ctx.target);
    report.param("subscribers", args.subscribers);
    report.param("rate", args.rate);
    report.param("duration_s", args.duration);
    report.param("concurrency", args.concurrency);
    anyhow::ensure!(args.subscribers > 0, "--subscribers must be at least 1");
    let listeners = u32::try_from(args.subscribers).map_err(|_| anyhow::anyhow!("--subscribers is too large"))?;
    let room = ctx.name("topic", 0);
    let conns = (0..args.subscribers).map(|i| ctx.target.topic_conn(&ctx.name("s", i), &room)).collect::<anyhow::Result<Vec<_>>>()?;
    let requests = Arc::new(ctx.target.posts_to_topic(&room, listeners)?);
    let busy = Duration::from_secs(args.duration + args.drain);
    let (fleet, _) = connect(ctx, &mut report, conns, busy).await?;

    if ctx.target.is_tidings() {
        report.note(format!(
            "Tidings: one broadcast topic (bench:{room}), each message one POST /v1/topics/{{topic}}/events, stored once in SQLite before it is sent to every subscriber"
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
