//! A connection worker: a child process of the coordinator that holds its
//! share of the SSE connections, tallies every stamped event they carry,
//! and answers the coordinator over stdin/stdout (see `protocol`). Separate
//! processes keep each one under the per-process open-file limit.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use futures_util::StreamExt;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::{Semaphore, mpsc, watch},
    time::Instant,
};

use crate::{
    metrics::{LiveTally, Seen},
    protocol::{Command, Reply, Setup},
    sse, stamp,
    target::ConnSpec,
};

/// Most connection errors reported back (the rest are only counted).
const ERRORS_KEPT: usize = 5;

/// Runs the worker until the coordinator says stop, closes stdin, or the
/// lifetime in the setup runs out.
pub fn main() -> anyhow::Result<()> {
    // One thread per worker: several workers already spread over the cores,
    // and a single-threaded runtime is the cheapest way to read many sockets.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let setup: Setup = serde_json::from_str(&lines.next_line().await?.context("no setup line")?)?;
    let deadline = Instant::now() + Duration::from_secs(setup.lifetime_secs);
    let timeout = Duration::from_secs(setup.connect_timeout_secs);
    let client = sse::stream_client(setup.source, timeout)?;
    let live = Arc::new(Mutex::new(LiveTally::default()));
    let gate = Arc::new(Semaphore::new(setup.connect_concurrency.max(1)));
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    // Bumped on `Command::Drop`: every stream closes at once.
    let (drops_tx, drops_rx) = watch::channel(0u32);

    let total = setup.conns.len();
    for spec in setup.conns {
        if setup.resume {
            let task = hold_resuming(client.clone(), spec, gate.clone(), live.clone(), connected_tx.clone(), timeout, drops_rx.clone());
            tokio::spawn(task);
        } else {
            let task = hold(client.clone(), spec, gate.clone(), live.clone(), connected_tx.clone(), timeout, drops_rx.clone());
            tokio::spawn(task);
        }
    }
    drop(connected_tx);

    let (mut ok, mut failed, mut errors) = (0u64, 0u64, Vec::new());
    for _ in 0..total {
        let outcome = tokio::select! {
            outcome = connected_rx.recv() => outcome,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        match outcome {
            Some(Ok(())) => ok += 1,
            Some(Err(e)) => {
                failed += 1;
                if errors.len() < ERRORS_KEPT {
                    errors.push(e);
                }
            }
            None => break,
        }
    }
    reply(&Reply::Connected { ok, failed, errors })?;

    loop {
        let line = tokio::select! {
            line = lines.next_line() => line?,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(line) = line else { break };
        match serde_json::from_str::<Command>(&line)? {
            Command::Progress => {
                let live = live.lock().unwrap();
                reply(&Reply::Progress {
                    delivered: live.tally.delivered,
                    disconnects: live.tally.disconnects,
                    live_again: live.tally.resume.live_again_ns.len() as u64,
                })?;
            }
            Command::Drop => {
                drops_tx.send_modify(|generation| *generation += 1);
                reply(&Reply::Dropped { streams: ok })?;
            }
            Command::Final => {
                let snapshot = live.lock().unwrap().snapshot();
                reply(&Reply::Final(snapshot))?;
            }
            Command::Stop => break,
        }
    }
    Ok(())
}

/// Opens one connection and reads it until it ends or the process exits.
/// An open refused with 503 or 429 is retried after its `Retry-After`, as
/// an application's EventSource wrapper does after a deploy, until the
/// connect timeout; any other failure to open counts at once.
async fn hold(
    client: reqwest::Client,
    spec: ConnSpec,
    gate: Arc<Semaphore>,
    live: Arc<Mutex<LiveTally>>,
    connected: mpsc::UnboundedSender<Result<(), String>>,
    timeout: Duration,
    mut drops: watch::Receiver<u32>,
) {
    let permit = gate.acquire_owned().await;
    let deadline = Instant::now() + timeout;
    let events = loop {
        let failure = match sse::try_open(&client, &spec, None, timeout).await {
            Ok(events) => break events,
            Err(sse::OpenError::Refused { retry_after, .. }) if Instant::now() + retry_after <= deadline => {
                live.lock().unwrap().tally.resume.refused += 1;
                tokio::time::sleep(retry_after).await;
                continue;
            }
            Err(sse::OpenError::Refused { status, .. }) => format!("status {status}, still refused after {timeout:?}"),
            Err(sse::OpenError::Status(status)) => format!("status {status}"),
            Err(sse::OpenError::Connect(e)) => format!("{e:#}"),
        };
        let _ = connected.send(Err(format!("{}: {failure}", spec.url)));
        return;
    };
    drop(permit);
    let _ = connected.send(Ok(()));
    let mut events = std::pin::pin!(events);
    let mut seen = Seen::default();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            // Dropped on command: closed, and not counted as a disconnect.
            Ok(()) = drops.changed() => return,
        };
        let Some(Ok(event)) = event else { break };
        if let Some(received) = stamp::read(&event.data) {
            let now = stamp::now_ns();
            live.lock().unwrap().record(&mut seen, &spec.expect, &received, now);
        }
    }
    live.lock().unwrap().tally.disconnects += 1;
}

/// Like [`hold`], but the stream behaves as an EventSource: refused opens
/// (503/429) are retried after `Retry-After`, connection errors after 1 s,
/// and after an end or a [`Command::Drop`] it reconnects with the last
/// event id it saw. After a drop, the stream counts as live again at its
/// first `unread_count`. Duplicates are judged over all its connections.
async fn hold_resuming(
    client: reqwest::Client,
    spec: ConnSpec,
    gate: Arc<Semaphore>,
    live: Arc<Mutex<LiveTally>>,
    connected: mpsc::UnboundedSender<Result<(), String>>,
    timeout: Duration,
    mut drops: watch::Receiver<u32>,
) {
    let mut permit = Some(gate.acquire_owned().await);
    // The first open gives up after the connect timeout, as `hold` does
    // (refusals are retried until then); reconnections never give up.
    let first_deadline = Instant::now() + timeout;
    let mut last_id: Option<String> = None;
    let mut seen = Seen::default();
    // Dropped on command and not yet live again.
    let mut awaiting_live = false;
    let mut live_recorded = false;
    loop {
        let events = loop {
            let outcome = sse::try_open(&client, &spec, last_id.as_deref(), timeout).await;
            let first = permit.is_some();
            let wait = match outcome {
                Ok(events) => break Some(events),
                Err(sse::OpenError::Refused { retry_after, .. }) => {
                    live.lock().unwrap().tally.resume.refused += 1;
                    retry_after
                }
                Err(sse::OpenError::Connect(e)) => {
                    live.lock().unwrap().tally.resume.connect_errors += 1;
                    if first && Instant::now() >= first_deadline {
                        let _ = connected.send(Err(format!("{}: {e:#}", spec.url)));
                        return;
                    }
                    Duration::from_secs(1)
                }
                Err(sse::OpenError::Status(status)) => {
                    live.lock().unwrap().tally.resume.failed += 1;
                    if first {
                        let _ = connected.send(Err(format!("{}: status {status}", spec.url)));
                    }
                    break None;
                }
            };
            if first && Instant::now() + wait > first_deadline {
                let _ = connected.send(Err(format!("{}: still refused after {timeout:?}", spec.url)));
                return;
            }
            tokio::time::sleep(wait).await;
        };
        let Some(events) = events else { return };
        if permit.take().is_some() {
            let _ = connected.send(Ok(()));
        }
        let mut events = std::pin::pin!(events);
        let dropped = loop {
            let event = tokio::select! {
                event = events.next() => event,
                Ok(()) = drops.changed() => break true,
            };
            let Some(Ok(event)) = event else { break false };
            if !event.id.is_empty() {
                last_id = Some(event.id.clone());
            }
            match event.event.as_str() {
                "unread_count" if awaiting_live => {
                    awaiting_live = false;
                    live_recorded = true;
                    live.lock().unwrap().tally.resume.live_again_ns.push(stamp::now_ns());
                }
                "reset" => live.lock().unwrap().tally.resume.resets += 1,
                _ => {}
            }
            if let Some(received) = stamp::read(&event.data) {
                let now = stamp::now_ns();
                let mut live = live.lock().unwrap();
                if live.record(&mut seen, &spec.expect, &received, now) {
                    live.tally.resume.samples.push((received.sent_ns, now.saturating_sub(received.sent_ns) / 1000));
                }
            }
        };
        if dropped {
            awaiting_live = !live_recorded;
        } else {
            // The server ended it: a failure, after which an EventSource
            // reconnects by itself.
            live.lock().unwrap().tally.disconnects += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn reply(reply: &Reply) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, reply)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
