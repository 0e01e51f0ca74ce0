//! `announce`: M subscribers, each a different user on their own plain
//! stream, R announcements per second to all of them. Measures deliveries
//! per second and latency like `topic`, and also what issue 11's target is
//! about: the publish request's own latency (p50, p99, max), which should
//! not grow with the number of users, and, on Tidings, the rows the run
//! stored (one per announcement, none per user).
//!
//! Tidings: subscriber `s{i}` streams `/v1/stream` with a plain user token
//! (no topics claim), and a message is one `POST /v1/notifications` with
//! `{"audience": "all", "type", "title", "body", "data": {"bench": STAMP}}`
//! under a `publish` token. Every open stream receives it as
//! `event: notification` (the notification object, `user_id: null`,
//! `audience: "all"`, the stamp at `data.bench`) followed by
//! `event: unread_count`, which carries no stamp and is not counted. A
//! channel hub does exactly what it does in `fanout` and `topic`: every
//! subscriber on the channel `ROOM`, one publish per message, the same body.
//!
//! The rows are counted before and after publishing, so a server that
//! already holds data (the smoke run's, or one started by hand) reports
//! only this run's: with `--tidings-db` from the SQLite file through the
//! `sqlite3` command, and always through one subscriber's own
//! `GET /v1/notifications/unread_count` (every announcement is unread).

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use serde::Deserialize;

use super::{Ctx, Live, connect, deliver};
use crate::{
    cli::AnnounceArgs,
    publisher::{self, Schedule},
    report::{Better, Report},
};

/// The publish latency issue 11 asks for, whatever the number of users.
const TARGET_PUBLISH_MS: f64 = 10.0;

/// The tables counted, in the order `sqlite3` prints them.
const TABLES: [&str; 4] = ["announcements", "announcement_marks", "notifications", "events"];

pub async fn run(ctx: &Ctx, args: &AnnounceArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("announce", &ctx.target);
    report.param("subscribers", args.subscribers);
    report.param("rate", args.rate);
    report.param("duration_s", args.duration);
    report.param("concurrency", args.concurrency);
    anyhow::ensure!(args.subscribers > 0, "--subscribers must be at least 1");
    let listeners = u32::try_from(args.subscribers).map_err(|_| anyhow::anyhow!("--subscribers is too large"))?;
    let room = ctx.name("all", 0);
    let first = ctx.name("s", 0);
    let conns = (0..args.subscribers).map(|i| ctx.target.conn(&ctx.name("s", i), &room, &room)).collect::<anyhow::Result<Vec<_>>>()?;
    let requests = Arc::new(ctx.target.posts_to_all(&room, listeners));
    let busy = Duration::from_secs(args.duration + args.drain);
    let (fleet, _) = connect(ctx, &mut report, conns, busy).await?;

    let tidings = ctx.target.is_tidings();
    let rows_before = if tidings { count_rows(ctx, &mut report).await } else { None };
    let unread_before = if tidings { unread_count(ctx, &first).await? } else { 0 };
    if tidings {
        report.note(
            "Tidings: each message is one POST /v1/notifications with audience \"all\", stored once in SQLite (one announcements row, one event) before it is sent to every open stream; no row per user",
        );
    }

    let mut posts = move |_seq: u32| requests.clone();
    let schedule = Schedule {
        rate: (args.rate > 0.0).then_some(args.rate),
        duration: Duration::from_secs(args.duration),
        concurrency: args.concurrency,
        max_messages: None,
    };
    let live = Live { schedule, drain: Duration::from_secs(args.drain), posts: &mut posts };
    let published = deliver(ctx, &mut report, fleet, live).await?;
    let publish_max = published.post_latency.max_ms();
    report.row("publish request max", "ms", publish_max, Better::Lower);
    if let (Some(p99), Some(max)) = (published.post_latency.quantile_ms(0.99), publish_max) {
        let verdict = if max < TARGET_PUBLISH_MS { "every publish" } else if p99 < TARGET_PUBLISH_MS { "p99 but not every publish" } else { "not even p99" };
        report.note(format!(
            "publish request under {TARGET_PUBLISH_MS} ms (issue 11's target for an announcement to all): {verdict} (p99 {p99:.2} ms, max {max:.2} ms, at {} subscribers)",
            args.subscribers
        ));
    }

    let confirmed = published.ok_requests;
    let rows_after = if tidings { count_rows(ctx, &mut report).await } else { None };
    let stored = rows_before.zip(rows_after).map(|(before, after)| {
        let mut added = [0i64; TABLES.len()];
        for (i, slot) in added.iter_mut().enumerate() {
            *slot = after[i] - before[i];
        }
        added
    });
    for (i, table) in TABLES.iter().enumerate() {
        report.row(&format!("rows added to {table}"), "", stored.map(|added| added[i] as f64), Better::Info);
    }
    let unread = if tidings { Some(unread_count(ctx, &first).await?.saturating_sub(unread_before)) } else { None };
    report.row("unread count gained by one subscriber", "", unread.map(|n| n as f64), Better::Info);
    if let Some(added) = stored {
        let per_user = added[1] + added[2];
        if added[0] != confirmed as i64 || per_user != 0 {
            report.problem(format!(
                "{confirmed} announcements confirmed, but {} announcements rows and {per_user} per-user rows (marks, notifications) were added",
                added[0]
            ));
        }
    }
    if let Some(unread) = unread
        && unread != confirmed
    {
        report.problem(format!("{confirmed} announcements confirmed, but subscriber {first}'s unread count grew by {unread}"));
    }
    Ok(report)
}

/// Rows in each of [`TABLES`] now, read from `--tidings-db` with the
/// `sqlite3` command; `None` (with a note saying why) without one.
async fn count_rows(ctx: &Ctx, report: &mut Report) -> Option<[i64; TABLES.len()]> {
    let Some(path) = &ctx.target.tidings_db else {
        note_once(report, "rows stored: n/a (no --tidings-db); the unread count of one subscriber stands in for them");
        return None;
    };
    match sqlite_counts(path).await {
        Ok(counts) => Some(counts),
        Err(e) => {
            note_once(report, format!("rows stored: n/a ({e:#}); the unread count of one subscriber stands in for them"));
            None
        }
    }
}

fn note_once(report: &mut Report, note: impl Into<String>) {
    let note = note.into();
    if !report.notes.contains(&note) {
        report.note(note);
    }
}

/// `SELECT COUNT(*)` of every table in [`TABLES`], through the `sqlite3`
/// command, read-only (SQLite's WAL lets it read beside the running server).
async fn sqlite_counts(path: &Path) -> anyhow::Result<[i64; TABLES.len()]> {
    let query = format!("SELECT {};", TABLES.map(|t| format!("(SELECT COUNT(*) FROM {t})")).join(", "));
    let output = tokio::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(path)
        .arg(&query)
        .output()
        .await
        .context("cannot run sqlite3")?;
    anyhow::ensure!(output.status.success(), "sqlite3 {}: {}", path.display(), String::from_utf8_lossy(&output.stderr).trim());
    let text = String::from_utf8(output.stdout)?;
    let counts: Vec<i64> = text.trim().split('|').map(str::parse).collect::<Result<_, _>>().with_context(|| format!("sqlite3 printed {text:?}"))?;
    counts.try_into().map_err(|c: Vec<i64>| anyhow::anyhow!("sqlite3 printed {} counts, not {}", c.len(), TABLES.len()))
}

/// `user`'s unread count, as their own `GET /v1/notifications/unread_count`.
async fn unread_count(ctx: &Ctx, user: &str) -> anyhow::Result<u64> {
    #[derive(Deserialize)]
    struct Count {
        count: u64,
    }
    let (base, _) = ctx.target.tidings_api().context("unread counts exist only on Tidings")?;
    let url = format!("{base}/v1/notifications/unread_count");
    let response = publisher::api_client(1)?.get(&url).bearer_auth(ctx.target.user_token(user)?).send().await?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    Ok(response.json::<Count>().await?.count)
}
