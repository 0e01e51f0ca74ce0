//! The publishing side: sends stamped messages at a set rate, or as fast as
//! a set number of requests in flight allows, and remembers which messages
//! the hub confirmed, so that loss is judged against what really went in.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    metrics::Latency,
    stamp::{self, Stamp},
    target::{Itemized, PostSpec},
};

/// Most publish errors kept verbatim (the rest are only counted).
const ERRORS_KEPT: usize = 5;

/// Sends publish requests over a keep-alive connection pool.
pub struct Publisher {
    client: reqwest::Client,
    filler: String,
}

/// How messages are paced.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Messages per second; `None`: as fast as `concurrency` allows.
    pub rate: Option<f64>,
    /// No message starts after this long.
    pub duration: Duration,
    /// Messages in flight at most.
    pub concurrency: usize,
    /// No more than this many messages.
    pub max_messages: Option<u32>,
}

/// Slowest publish requests remembered (see [`Published::slowest`]).
pub const SLOWEST_KEPT: usize = 10;

/// What the publisher saw.
#[derive(Debug, Default)]
pub struct Published {
    /// Messages attempted.
    pub messages: u32,
    /// Requests answered 2xx, and the others (errors, timeouts, statuses).
    pub ok_requests: u64,
    pub failed_requests: u64,
    pub errors: Vec<String>,
    /// Per message (indexed by seq): connections that should receive it,
    /// counting only requests the hub confirmed.
    pub expected: Vec<u32>,
    /// Request round trips.
    pub post_latency: Latency,
    /// Wall-clock ns of the first request sent.
    pub first_send_ns: Option<u64>,
    /// The slowest requests as (sent ns, µs), slowest first, at most
    /// [`SLOWEST_KEPT`]: when they left says whether a tail is periodic.
    pub slowest: Vec<(u64, u64)>,
    /// From the first message to the last answer.
    pub elapsed: Duration,
}

impl Published {
    /// Deliveries the hub owes, summed over messages.
    pub fn expected_total(&self) -> u64 {
        self.expected.iter().map(|&n| n as u64).sum()
    }

    fn absorb(&mut self, sent: Sent) {
        let index = sent.seq as usize;
        if self.expected.len() <= index {
            self.expected.resize(index + 1, 0);
        }
        self.expected[index] += sent.confirmed_listeners;
        self.ok_requests += sent.ok;
        self.failed_requests += sent.failed;
        for e in sent.errors {
            if self.errors.len() < ERRORS_KEPT {
                self.errors.push(e);
            }
        }
        for (sent_ns, micros) in sent.latencies {
            self.post_latency.record_micros(micros);
            if self.slowest.len() < SLOWEST_KEPT || self.slowest.last().is_some_and(|&(_, least)| micros > least) {
                let at = self.slowest.partition_point(|&(_, m)| m >= micros);
                self.slowest.insert(at, (sent_ns, micros));
                self.slowest.truncate(SLOWEST_KEPT);
            }
        }
        self.first_send_ns = match (self.first_send_ns, sent.first_send_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The outcome of one message (one or more requests).
struct Sent {
    seq: u32,
    confirmed_listeners: u32,
    ok: u64,
    failed: u64,
    errors: Vec<String>,
    /// (sent ns, µs) of each request.
    latencies: Vec<(u64, u64)>,
    first_send_ns: Option<u64>,
}

impl Publisher {
    /// A publisher whose messages carry `filler_bytes` of body text.
    pub fn new(concurrency: usize, filler_bytes: usize) -> anyhow::Result<Self> {
        Ok(Publisher { client: api_client(concurrency)?, filler: "x".repeat(filler_bytes) })
    }

    /// Sends message `seq` with the given requests, concurrently. Each
    /// request is stamped just before it leaves.
    async fn send(&self, seq: u32, posts: &[PostSpec]) -> Sent {
        let outcomes = join_all(posts.iter().map(|post| self.send_one(seq, post))).await;
        let mut sent = Sent { seq, confirmed_listeners: 0, ok: 0, failed: 0, errors: Vec::new(), latencies: Vec::new(), first_send_ns: None };
        for (sent_ns, micros, result) in outcomes {
            sent.latencies.push((sent_ns, micros));
            sent.first_send_ns = Some(sent.first_send_ns.map_or(sent_ns, |f: u64| f.min(sent_ns)));
            match result {
                Ok(accepted) => {
                    sent.ok += 1;
                    sent.confirmed_listeners += accepted;
                }
                Err(e) => {
                    sent.failed += 1;
                    sent.errors.push(e);
                }
            }
        }
        sent
    }

    /// Sends one request; `Ok` carries the listeners the hub accepted the
    /// message for.
    async fn send_one(&self, seq: u32, post: &PostSpec) -> (u64, u64, Result<u32, String>) {
        let sent_ns = stamp::now_ns();
        let body = post.body(&Stamp { seq, to: post.to.clone(), sent_ns }, &self.filler);
        let mut request = self.client.post(&post.url).header("content-type", "application/json").body(body);
        if let Some(token) = &post.bearer {
            request = request.bearer_auth(token);
        }
        let started = Instant::now();
        let result = match request.send().await {
            Ok(response) => {
                let status = response.status();
                // Read the body so the connection goes back to the pool.
                let text = response.text().await.unwrap_or_default();
                if !status.is_success() {
                    Err(format!("{} answered {status}: {}", post.url, text.chars().take(200).collect::<String>()))
                } else if post.itemized {
                    accepted(post, &text)
                } else {
                    Ok(post.listeners)
                }
            }
            Err(e) => Err(format!("{}: {e}", post.url)),
        };
        (sent_ns, started.elapsed().as_micros() as u64, result)
    }
}

/// A keep-alive client for API requests (publishes, batches, chat sends),
/// pooling enough connections for `concurrency` requests in flight.
pub fn api_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency.max(1) * 2)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// Reads a Tidings answer: every recipient must be in `created`; one
/// suppressed or rate-limited recipient makes the request count as failed
/// (the benchmark would otherwise measure the limits, not the hub).
fn accepted(post: &PostSpec, answer: &str) -> Result<u32, String> {
    let itemized: Itemized = serde_json::from_str(answer).map_err(|e| format!("{}: unreadable answer: {e}", post.url))?;
    if !itemized.suppressed.is_empty() || !itemized.rate_limited.is_empty() {
        return Err(format!(
            "{}: {} recipient(s) suppressed, {} rate-limited",
            post.url,
            itemized.suppressed.len(),
            itemized.rate_limited.len()
        ));
    }
    Ok((itemized.created.len() as u32).min(post.listeners))
}

/// Publishes messages `first_seq..` on `schedule`; `posts(seq)` gives the
/// requests of each. Returns once every request has been answered.
pub async fn run(
    publisher: &Arc<Publisher>,
    schedule: Schedule,
    first_seq: u32,
    posts: impl FnMut(u32) -> Arc<Vec<PostSpec>>,
) -> Published {
    run_until(publisher, schedule, first_seq, posts, None).await
}

/// [`run`], also stopping (before its duration) once `stop` is set.
pub async fn run_until(
    publisher: &Arc<Publisher>,
    schedule: Schedule,
    first_seq: u32,
    mut posts: impl FnMut(u32) -> Arc<Vec<PostSpec>>,
    stop: Option<&AtomicBool>,
) -> Published {
    let mut published = Published::default();
    let gate = Arc::new(Semaphore::new(schedule.concurrency.max(1)));
    let mut in_flight = JoinSet::new();
    let start = Instant::now();
    let end = start + schedule.duration;
    let mut seq = first_seq;
    let stopped = || stop.is_some_and(|stop| stop.load(Ordering::Relaxed));
    loop {
        let index = seq - first_seq;
        if schedule.max_messages.is_some_and(|max| index >= max) || stopped() {
            break;
        }
        if let Some(rate) = schedule.rate {
            let due = start + Duration::from_secs_f64(index as f64 / rate);
            if due >= end {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = gate.clone().acquire_owned().await.expect("the gate is never closed");
        // A hub slower than the rate holds the gate shut: stop on time all
        // the same, rather than publish every scheduled message late.
        if Instant::now() >= end || stopped() {
            break;
        }
        let requests = posts(seq);
        let publisher = publisher.clone();
        in_flight.spawn(async move {
            let sent = publisher.send(seq, &requests).await;
            drop(permit);
            sent
        });
        while let Some(done) = in_flight.try_join_next() {
            published.absorb(done.expect("publish tasks do not panic"));
        }
        seq += 1;
    }
    while let Some(done) = in_flight.join_next().await {
        published.absorb(done.expect("publish tasks do not panic"));
    }
    published.messages = seq - first_seq;
    published.elapsed = start.elapsed();
    if published.expected.len() < seq as usize {
        published.expected.resize(seq as usize, 0);
    }
    published
}
