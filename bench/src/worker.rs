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
    sync::{Semaphore, mpsc},
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

    let total = setup.conns.len();
    for spec in setup.conns {
        let task = hold(client.clone(), spec, gate.clone(), live.clone(), connected_tx.clone(), timeout);
        tokio::spawn(task);
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
                reply(&Reply::Progress { delivered: live.tally.delivered, disconnects: live.tally.disconnects })?;
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
async fn hold(
    client: reqwest::Client,
    spec: ConnSpec,
    gate: Arc<Semaphore>,
    live: Arc<Mutex<LiveTally>>,
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
    let mut seen = Seen::default();
    while let Some(event) = events.next().await {
        let Ok(event) = event else { break };
        if let Some(received) = stamp::read(&event.data) {
            let now = stamp::now_ns();
            live.lock().unwrap().record(&mut seen, &spec.expect, &received, now);
        }
    }
    live.lock().unwrap().tally.disconnects += 1;
}

fn reply(reply: &Reply) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, reply)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
