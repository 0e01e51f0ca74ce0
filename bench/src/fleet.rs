//! The coordinator's side of the connection workers: splits the
//! connections over worker processes (each under the open-file limit, each
//! from its own 127.0.0.x), starts them, and collects their tallies.

use std::{
    net::{IpAddr, Ipv4Addr},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::future::try_join_all;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout},
};

use crate::{
    cli::LoadArgs,
    metrics::Tally,
    protocol::{Command, Reply, Setup},
    target::ConnSpec,
};

/// Running workers. Dropping the fleet kills them.
pub struct Fleet {
    workers: Vec<Worker>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// Counters of all workers at one moment.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    pub delivered: u64,
    pub disconnects: u64,
    pub live_again: u64,
}

/// How connecting went.
#[derive(Debug, Clone)]
pub struct Connected {
    pub ok: u64,
    pub failed: u64,
    /// The first few errors.
    pub errors: Vec<String>,
    /// From starting the workers to the last connection's answer.
    pub elapsed: Duration,
    pub workers: usize,
}

impl Fleet {
    /// Starts workers holding `conns` and waits until every connection is
    /// open or failed. Workers exit by themselves after `lifetime`. With
    /// `resume`, streams reconnect with their `Last-Event-ID` and retry
    /// refused opens (`protocol::Setup::resume`).
    pub async fn start_with(conns: Vec<ConnSpec>, load: &LoadArgs, lifetime: Duration, resume: bool) -> anyhow::Result<(Fleet, Connected)> {
        let started = Instant::now();
        let total = conns.len().max(1);
        let per_worker = load.conns_per_worker as usize;
        let count = load.workers.unwrap_or_else(|| total.div_ceil(per_worker).max(2)).clamp(1, total);
        let share = total.div_ceil(count);
        if share > per_worker {
            bail!("{total} connections over {count} workers is {share} each, above --conns-per-worker {per_worker}");
        }
        let exe = std::env::current_exe().context("locating the bench binary")?;
        let mut workers = Vec::with_capacity(count);
        let mut conns = conns.into_iter();
        for index in 0..count {
            let mine: Vec<ConnSpec> = conns.by_ref().take(share).collect();
            let source = IpAddr::V4(Ipv4Addr::from(u32::from(load.source_base) + index as u32));
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker")?;
            let mut stdin = child.stdin.take().expect("piped");
            let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
            let setup = Setup {
                source: Some(source),
                conns: mine,
                connect_concurrency: load.connect_concurrency,
                connect_timeout_secs: load.connect_timeout,
                lifetime_secs: lifetime.as_secs().max(1),
                resume,
            };
            let mut line = serde_json::to_vec(&setup)?;
            line.push(b'\n');
            stdin.write_all(&line).await?;
            stdin.flush().await?;
            workers.push(Worker { child, stdin, stdout });
        }
        let mut fleet = Fleet { workers };
        let replies = fleet.collect(lifetime).await?;
        let mut connected = Connected { ok: 0, failed: 0, errors: Vec::new(), elapsed: Duration::ZERO, workers: count };
        for reply in replies {
            let Reply::Connected { ok, failed, errors } = reply else { bail!("unexpected worker reply {reply:?}") };
            connected.ok += ok;
            connected.failed += failed;
            connected.errors.extend(errors);
        }
        connected.elapsed = started.elapsed();
        Ok((fleet, connected))
    }

    /// First deliveries and disconnects so far, over all workers.
    pub async fn progress(&mut self) -> anyhow::Result<(u64, u64)> {
        let progress = self.progress_detail().await?;
        Ok((progress.delivered, progress.disconnects))
    }

    /// First deliveries, disconnects and streams live again after
    /// [`drop_all`](Self::drop_all), over all workers.
    pub async fn progress_detail(&mut self) -> anyhow::Result<Progress> {
        let mut totals = Progress::default();
        for reply in self.ask(Command::Progress).await? {
            let Reply::Progress { delivered, disconnects, live_again } = reply else { bail!("unexpected worker reply {reply:?}") };
            totals.delivered += delivered;
            totals.disconnects += disconnects;
            totals.live_again += live_again;
        }
        Ok(totals)
    }

    /// Tells every worker to close all its streams at once (they reconnect
    /// by themselves if the fleet was started resuming); returns how many
    /// streams were told.
    pub async fn drop_all(&mut self) -> anyhow::Result<u64> {
        let mut streams = 0;
        for reply in self.ask(Command::Drop).await? {
            let Reply::Dropped { streams: n } = reply else { bail!("unexpected worker reply {reply:?}") };
            streams += n;
        }
        Ok(streams)
    }

    /// The merged tally of all workers; then the workers stop.
    pub async fn finish(mut self) -> anyhow::Result<Tally> {
        let mut total = Tally::default();
        for reply in self.ask(Command::Final).await? {
            let Reply::Final(tally) = reply else { bail!("unexpected worker reply {reply:?}") };
            total.merge(&tally);
        }
        self.stop().await;
        Ok(total)
    }

    /// Tells every worker to stop and waits a little for them to exit.
    pub async fn stop(&mut self) {
        let line = command_line(&Command::Stop);
        for worker in &mut self.workers {
            let _ = worker.stdin.write_all(&line).await;
            let _ = worker.stdin.flush().await;
        }
        for worker in &mut self.workers {
            if tokio::time::timeout(Duration::from_secs(10), worker.child.wait()).await.is_err() {
                let _ = worker.child.start_kill();
            }
        }
    }

    async fn ask(&mut self, command: Command) -> anyhow::Result<Vec<Reply>> {
        let line = command_line(&command);
        for worker in &mut self.workers {
            worker.stdin.write_all(&line).await.context("a worker is gone")?;
            worker.stdin.flush().await?;
        }
        self.collect(Duration::from_secs(60)).await
    }

    /// One reply from every worker, read concurrently.
    async fn collect(&mut self, within: Duration) -> anyhow::Result<Vec<Reply>> {
        let reads = self.workers.iter_mut().map(|worker| async move {
            let line = tokio::time::timeout(within, worker.stdout.next_line())
                .await
                .context("a worker did not answer in time")??
                .context("a worker exited")?;
            anyhow::Ok(serde_json::from_str::<Reply>(&line)?)
        });
        try_join_all(reads).await
    }
}

fn command_line(command: &Command) -> Vec<u8> {
    let mut line = serde_json::to_vec(command).expect("plain JSON");
    line.push(b'\n');
    line
}
