//! `chat` (Tidings only): messages sent into N two-member conversations,
//! the receiving member of each listening on one stream. Measures accepted
//! sends per second, send and delivery latency, and whether every
//! acknowledged message reached the other member exactly once.
//!
//! 1. Setup: user `ca{i}` creates a conversation with `cb{i}`
//!    (`POST /v1/conversations`), for every i.
//! 2. Each `cb{i}` opens one stream (`GET /v1/stream`).
//! 3. For T s, with C sends in flight, the `ca{i}` in turn send
//!    `POST /v1/conversations/{id}/messages` with a unique
//!    `client_message_id`; the content carries the send time.
//! 4. After the last send, wait (at most `--drain` s) until every
//!    acknowledged message has been delivered, then reconcile by message id.
//!
//! The streams are held here, in the coordinator, rather than in worker
//! processes: the workers count the `data.bench` stamp of notifications,
//! which a chat message does not have, while this scenario checks each
//! `message` event by its own id, conversation and sender. A thousand
//! streams is well under one process's open-file limit.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
};

use super::{Ctx, server_cost};
use crate::{
    cli::ChatArgs,
    metrics::Latency,
    publisher::api_client,
    report::{Better, Report},
    sse, stamp,
    target::ConnSpec,
};

/// Most errors kept verbatim (the rest are only counted).
const ERRORS_KEPT: usize = 5;

/// The rows of the report, for the n/a report of a hub that is not Tidings.
const METRICS: [(&str, &str, Better); 7] = [
    ("sends accepted per second", "1/s", Better::Higher),
    ("send latency p50", "ms", Better::Lower),
    ("send latency p99", "ms", Better::Lower),
    ("delivery latency p50", "ms", Better::Lower),
    ("delivery latency p99", "ms", Better::Lower),
    ("lost", "", Better::Lower),
    ("duplicated", "", Better::Lower),
];

/// One conversation: who sends, who receives, where messages go.
struct Pair {
    sender: String,
    sender_token: String,
    receiver: String,
    conversation: i64,
    messages_url: String,
}

#[derive(Serialize)]
struct NewConversation<'a> {
    title: Option<&'a str>,
    members: [&'a str; 1],
}

#[derive(Serialize)]
struct NewMessage<'a> {
    content: &'a str,
    client_message_id: &'a str,
}

/// The parts of a message (send answer, or `message` event) checked here.
#[derive(Deserialize)]
struct MessageSeen {
    id: i64,
    conversation_id: i64,
    sender_id: String,
    content: Option<String>,
}

#[derive(Deserialize)]
struct Created {
    id: i64,
}

/// What the receivers saw, shared by their stream tasks.
#[derive(Default)]
struct Received {
    /// Times each message id arrived on its receiver's stream.
    by_id: HashMap<i64, u32>,
    delivered: u64,
    duplicates: u64,
    /// Messages of another conversation or sender on a stream.
    misrouted: u64,
    /// Streams that ended while the run went on.
    disconnects: u64,
    /// Send-to-receive, from the send time the content carries.
    latency: Latency,
}

/// What the senders saw.
#[derive(Default)]
struct Sent {
    attempted: u64,
    /// Message ids the hub acknowledged (201, or 200 for a retry).
    acked: Vec<i64>,
    replayed: u64,
    failed: u64,
    errors: Vec<String>,
    latency: Latency,
}

pub async fn run(ctx: &Ctx, args: &ChatArgs) -> anyhow::Result<Report> {
    let mut report = Report::new("chat", &ctx.target);
    report.param("conversations", args.conversations);
    report.param("duration_s", args.duration);
    report.param("concurrency", args.concurrency);
    let Some((base, _)) = ctx.target.tidings_api() else {
        for (metric, unit, better) in METRICS {
            report.row(metric, unit, None, better);
        }
        report.note("n/a: conversations are Tidings' own API");
        return Ok(report);
    };
    anyhow::ensure!(args.conversations > 0, "--conversations must be at least 1");
    let client = api_client(args.concurrency)?;

    let pairs = setup(ctx, &mut report, &client, base, args).await?;
    anyhow::ensure!(!pairs.is_empty(), "no conversation could be created: {}", report.problems.join("; "));
    let received = Arc::new(Mutex::new(Received::default()));
    let streams = listen(ctx, &mut report, &pairs, &received).await?;
    // As in `notify`: let the hub finish registering the last streams.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = ctx.sample();
    eprintln!("tidings-bench: sending for {} s into {} conversations", args.duration, pairs.len());
    let (sent, secs) = send_all(ctx, &client, &pairs, args).await;
    let drained = Instant::now();
    let lost = loop {
        let missing = {
            let received = received.lock().unwrap();
            sent.acked.iter().filter(|id| !received.by_id.contains_key(id)).count() as u64
        };
        if missing == 0 || drained.elapsed() >= Duration::from_secs(args.drain) {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = ctx.sample();
    drop(streams);
    let received = std::mem::take(&mut *received.lock().unwrap());
    let unconfirmed = received.delivered.saturating_sub(sent.acked.len() as u64 - lost);

    let acked = sent.acked.len() as u64;
    report.row("sends attempted", "", Some(sent.attempted as f64), Better::Info);
    report.row("sends accepted", "", Some(acked as f64), Better::Info);
    report.row("sends accepted per second", "1/s", (secs > 0.0).then(|| acked as f64 / secs), Better::Higher);
    report.row("send latency p50", "ms", sent.latency.quantile_ms(0.50), Better::Lower);
    report.row("send latency p99", "ms", sent.latency.quantile_ms(0.99), Better::Lower);
    report.row("send latency p99.9", "ms", sent.latency.quantile_ms(0.999), Better::Lower);
    report.row("deliveries", "", Some(received.delivered as f64), Better::Info);
    report.row("delivery latency p50", "ms", received.latency.quantile_ms(0.50), Better::Lower);
    report.row("delivery latency p99", "ms", received.latency.quantile_ms(0.99), Better::Lower);
    report.row("delivery latency max", "ms", received.latency.max_ms(), Better::Lower);
    report.row("lost", "", Some(lost as f64), Better::Lower);
    report.row("duplicated", "", Some(received.duplicates as f64), Better::Lower);
    report.row("misrouted", "", Some(received.misrouted as f64), Better::Lower);
    report.row("sends failed", "", Some(sent.failed as f64), Better::Lower);
    server_cost(&mut report, before, after, acked, "messages");

    if lost > 0 {
        report.problem(format!("{lost} of {acked} acknowledged messages were not delivered to the other member within {} s", args.drain));
    }
    if received.duplicates > 0 {
        report.problem(format!("{} deliveries repeated a message id already delivered", received.duplicates));
    }
    if received.misrouted > 0 {
        report.problem(format!("{} messages arrived on a stream of another conversation or from another sender", received.misrouted));
    }
    if sent.failed > 0 {
        report.problem(format!("{} sends failed: {}", sent.failed, sent.errors.join("; ")));
    }
    if received.disconnects > 0 {
        report.problem(format!("{} streams ended during the run", received.disconnects));
    }
    if sent.replayed > 0 {
        report.note(format!("{} sends were answered 200 (a retry's answer) although none was retried", sent.replayed));
    }
    if unconfirmed > 0 {
        report.note(format!("{unconfirmed} deliveries of messages whose send was not acknowledged"));
    }
    report.note("Tidings answers a send 201 once the message and its event are committed to its database");
    Ok(report)
}

/// Creates the conversations, `concurrency` at once. One that cannot be
/// created is a problem, and the run goes on without it.
async fn setup(ctx: &Ctx, report: &mut Report, client: &reqwest::Client, base: &str, args: &ChatArgs) -> anyhow::Result<Vec<Pair>> {
    eprintln!("tidings-bench: creating {} conversations", args.conversations);
    let started = Instant::now();
    let url = format!("{base}/v1/conversations");
    let mut creations = Vec::with_capacity(args.conversations as usize);
    for i in 0..args.conversations {
        let (sender, receiver) = (ctx.name("ca", i), ctx.name("cb", i));
        let sender_token = ctx.target.user_token(&sender)?;
        creations.push((sender, sender_token, receiver));
    }
    let outcomes: Vec<Result<Pair, String>> = stream::iter(creations)
        .map(|(sender, sender_token, receiver)| {
            let url = &url;
            async move {
                let body = serde_json::to_string(&NewConversation { title: None, members: [&receiver] }).expect("plain JSON");
                let answer = client.post(url).bearer_auth(&sender_token).header("content-type", "application/json").body(body).send().await;
                let response = answer.map_err(|e| format!("{url}: {e}"))?;
                let status = response.status();
                let text = response.text().await.map_err(|e| format!("{url}: {e}"))?;
                if status != reqwest::StatusCode::CREATED {
                    return Err(format!("{url} answered {status}: {}", text.chars().take(200).collect::<String>()));
                }
                let created: Created = serde_json::from_str(&text).map_err(|e| format!("{url}: unreadable answer: {e}"))?;
                let messages_url = format!("{url}/{}/messages", created.id);
                Ok(Pair { sender, sender_token, receiver, conversation: created.id, messages_url })
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let (mut pairs, mut failed, mut errors) = (Vec::new(), 0u64, Vec::new());
    for outcome in outcomes {
        match outcome {
            Ok(pair) => pairs.push(pair),
            Err(e) => {
                failed += 1;
                if errors.len() < ERRORS_KEPT {
                    errors.push(e);
                }
            }
        }
    }
    eprintln!("tidings-bench: {} conversations in {:.1} s", pairs.len(), started.elapsed().as_secs_f64());
    report.row("conversations", "", Some(pairs.len() as f64), Better::Info);
    if failed > 0 {
        report.problem(format!("{failed} of {} conversations could not be created: {}", args.conversations, errors.join("; ")));
    }
    Ok(pairs)
}

/// Opens one stream per receiver, each read by its own task until the
/// returned set is dropped. Reports (and flags) streams that failed.
async fn listen(ctx: &Ctx, report: &mut Report, pairs: &[Pair], received: &Arc<Mutex<Received>>) -> anyhow::Result<JoinSet<()>> {
    eprintln!("tidings-bench: opening {} streams on {}", pairs.len(), ctx.target.name);
    let started = Instant::now();
    let timeout = Duration::from_secs(ctx.load.connect_timeout);
    // From `--source-base`, like the workers, so that consecutive runs do
    // not meet each other's sockets in TIME_WAIT.
    let client = sse::stream_client(Some(IpAddr::V4(ctx.load.source_base)), timeout)?;
    let gate = Arc::new(Semaphore::new(ctx.load.connect_concurrency.max(1)));
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut streams = JoinSet::new();
    for pair in pairs {
        let spec = ctx.target.conn(&pair.receiver, &pair.receiver, &pair.receiver)?;
        let expect = (pair.conversation, pair.sender.clone());
        let (client, gate, received, connected) = (client.clone(), gate.clone(), received.clone(), connected_tx.clone());
        streams.spawn(async move { hold(client, spec, expect, gate, received, connected, timeout).await });
    }
    drop(connected_tx);
    let (mut ok, mut failed, mut errors) = (0u64, 0u64, Vec::new());
    while let Some(outcome) = connected_rx.recv().await {
        match outcome {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                if errors.len() < ERRORS_KEPT {
                    errors.push(e);
                }
            }
        }
        if ok + failed == pairs.len() as u64 {
            break;
        }
    }
    eprintln!("tidings-bench: {ok} open, {failed} failed, in {:.1} s", started.elapsed().as_secs_f64());
    report.row("streams open", "", Some(ok as f64), Better::Info);
    if failed > 0 {
        report.problem(format!("{failed} of {} streams failed to open: {}", pairs.len(), errors.join("; ")));
    }
    Ok(streams)
}

/// Opens one receiver's stream and checks every `message` event on it
/// against the conversation and sender it `expect`s.
async fn hold(
    client: reqwest::Client,
    spec: ConnSpec,
    expect: (i64, String),
    gate: Arc<Semaphore>,
    received: Arc<Mutex<Received>>,
    connected: mpsc::UnboundedSender<Result<(), String>>,
    timeout: Duration,
) {
    let permit = gate.acquire_owned().await;
    let events = match sse::open(&client, &spec, None, timeout).await {
        Ok(events) => events,
        Err(e) => {
            let _ = connected.send(Err(format!("{}: {e:#}", spec.url)));
            return;
        }
    };
    drop(permit);
    let _ = connected.send(Ok(()));
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let Ok(event) = event else { break };
        if event.event != "message" {
            continue;
        }
        let now = stamp::now_ns();
        let mut received = received.lock().unwrap();
        let Ok(message) = serde_json::from_str::<MessageSeen>(&event.data) else {
            received.misrouted += 1;
            continue;
        };
        if (message.conversation_id, message.sender_id.as_str()) != (expect.0, expect.1.as_str()) {
            received.misrouted += 1;
            continue;
        }
        let times = received.by_id.entry(message.id).or_insert(0);
        *times += 1;
        if *times > 1 {
            received.duplicates += 1;
            continue;
        }
        received.delivered += 1;
        if let Some(sent_ns) = message.content.as_deref().and_then(sent_at) {
            received.latency.record_micros(now.saturating_sub(sent_ns) / 1000);
        }
    }
    received.lock().unwrap().disconnects += 1;
}

/// Sends for `duration`, `concurrency` at once, the conversations in turn
/// so that every sender sends about as often. Returns what happened and
/// the seconds from the first send to the last answer.
async fn send_all(ctx: &Ctx, client: &reqwest::Client, pairs: &[Pair], args: &ChatArgs) -> (Sent, f64) {
    let filler = "x".repeat(ctx.output.body_bytes);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    let mut sent = Sent::default();
    let start = Instant::now();
    let end = start + Duration::from_secs(args.duration);
    for seq in 0u64.. {
        let permit = gate.clone().acquire_owned().await.expect("the gate is never closed");
        if Instant::now() >= end {
            break;
        }
        let pair = &pairs[(seq % pairs.len() as u64) as usize];
        let client_message_id = format!("{}-m{seq}", ctx.run_id);
        let (client, url, token, filler) = (client.clone(), pair.messages_url.clone(), pair.sender_token.clone(), filler.clone());
        in_flight.spawn(async move {
            let outcome = send_one(&client, &url, &token, &client_message_id, &filler).await;
            drop(permit);
            outcome
        });
        sent.attempted += 1;
        while let Some(done) = in_flight.try_join_next() {
            absorb(&mut sent, done.expect("send tasks do not panic"));
        }
    }
    while let Some(done) = in_flight.join_next().await {
        absorb(&mut sent, done.expect("send tasks do not panic"));
    }
    (sent, start.elapsed().as_secs_f64())
}

/// One send: its latency in µs, and the message id with whether it was
/// created (201) or a retry's answer (200).
type SendOutcome = (u64, Result<(i64, bool), String>);

fn absorb(sent: &mut Sent, (micros, outcome): SendOutcome) {
    sent.latency.record_micros(micros);
    match outcome {
        Ok((id, created)) => {
            sent.acked.push(id);
            sent.replayed += u64::from(!created);
        }
        Err(e) => {
            sent.failed += 1;
            if sent.errors.len() < ERRORS_KEPT {
                sent.errors.push(e);
            }
        }
    }
}

async fn send_one(client: &reqwest::Client, url: &str, token: &str, client_message_id: &str, filler: &str) -> SendOutcome {
    let started = Instant::now();
    // The send time travels in the content, so the receiver can time the
    // delivery even when the event arrives before the send's answer.
    let content = format!("bench {} {filler}", stamp::now_ns());
    let body = serde_json::to_string(&NewMessage { content: &content, client_message_id }).expect("plain JSON");
    let outcome = async {
        let response = client.post(url).bearer_auth(token).header("content-type", "application/json").body(body).send().await?;
        let status = response.status();
        let text = response.text().await?;
        let created = match status {
            reqwest::StatusCode::CREATED => true,
            reqwest::StatusCode::OK => false,
            _ => anyhow::bail!("answered {status}: {}", text.chars().take(200).collect::<String>()),
        };
        let message: MessageSeen = serde_json::from_str(&text).context("unreadable answer")?;
        Ok((message.id, created))
    }
    .await
    .map_err(|e| format!("{url}: {e:#}"));
    (started.elapsed().as_micros() as u64, outcome)
}

/// The send time (ns since the epoch) a bench message's content carries.
fn sent_at(content: &str) -> Option<u64> {
    let mut words = content.split(' ');
    (words.next()? == "bench").then_some(())?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_send_time_from_the_content() {
        assert_eq!(sent_at("bench 1234 xxxx"), Some(1234));
        assert_eq!(sent_at("bench 99"), Some(99));
        assert_eq!(sent_at("hello 1234"), None);
        assert_eq!(sent_at(""), None);
    }
}
