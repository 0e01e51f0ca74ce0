//! The Redis bus: several nodes on one database.
//!
//! PostgreSQL is the truth, Redis only the doorbell. Every node runs a
//! [`TailReader`] that reads the event log in id order from the last id it
//! delivered and hands events to its registry. Because appends are
//! serialized (see `store::event_log`), the committed ids always form a
//! prefix of the sequence, so a tail read never skips an event that commits
//! later with a smaller id: every node delivers every event exactly in log
//! order, its own included.
//!
//! Redis carries what the log does not: a doorbell after each commit (so tail
//! readers wake at once rather than at their next poll), and ephemeral events
//! (typing, presence, unread counts). Redis pub/sub is at-most-once: when the
//! subscription breaks (a killed connection, a Redis restart), doorbells and
//! ephemeral events are lost while it is down. Persisted events are not: the
//! tail reader polls the log on its own every `poll` interval. When the
//! subscription comes back, every local stream catches up from the log from
//! its last delivered id and re-reads its state, so nothing is lost and
//! stale counts are refreshed. While it is down, `/readyz` says so.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::StreamExt;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Bus, Event, Registry};
use crate::{
    domain::{EventId, Topic, UserId},
    store::event_log,
};

/// How often the subscription checks that Redis still answers.
const PING_EVERY: Duration = Duration::from_secs(1);

/// Events read from the log per query.
const TAIL_PAGE: u64 = 1000;

/// The bus of a node in a cluster.
pub struct RedisBus {
    registry: Arc<Registry>,
    tail: Arc<TailReader>,
    node: String,
    outbox: mpsc::Sender<String>,
    healthy: Arc<AtomicBool>,
}

/// What crosses Redis: the newest log id of a commit, and the events that
/// are not in the log.
#[derive(Serialize, Deserialize)]
struct Envelope {
    node: String,
    head: Option<i64>,
    events: Vec<WireEvent>,
}

#[derive(Serialize, Deserialize)]
struct WireEvent {
    topic: String,
    frame: String,
    as_of: Option<i64>,
    exclude: Option<String>,
    /// The user's own unread count, for an `unread_count` event: each
    /// stream adds its unread announcements to it (see `Notice::Count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
}

impl RedisBus {
    /// Connects the bus in the background: the node starts even while Redis
    /// is down (and says so on `/readyz`).
    pub fn start(
        redis_url: &str,
        namespace: &str,
        db: DatabaseConnection,
        registry: Arc<Registry>,
        poll: Duration,
        start_after: EventId,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(redis_url)?;
        let channel = format!("{namespace}:events");
        let node = format!("{:016x}", rand::random::<u64>());
        let healthy = Arc::new(AtomicBool::new(false));
        let tail = Arc::new(TailReader {
            db,
            registry: registry.clone(),
            delivered: AtomicI64::new(start_after.get()),
            wake: Notify::new(),
            held: Mutex::new(Vec::new()),
        });
        tokio::spawn(tail.clone().run(poll, shutdown.clone()));
        let (outbox, pending) = mpsc::channel(10_000);
        tokio::spawn(publish_loop(crate::shared_redis::connect(redis_url)?, channel.clone(), pending, shutdown.clone()));
        let bus = Arc::new(RedisBus { registry, tail, node, outbox, healthy });
        tokio::spawn(bus.clone().subscribe_loop(client, channel, shutdown));
        Ok(bus)
    }

    /// Keeps one subscription open, reconnecting with backoff.
    ///
    /// Hand-written, unlike the other Redis connections (see
    /// `shared_redis`): redis-rs's `ConnectionManager` does not carry
    /// RESP2 subscriptions. Every wait is bounded, and the subscription is
    /// pinged every [`PING_EVERY`]: a Redis behind a partition closes
    /// nothing and sends nothing, and without the ping the bus would go on
    /// calling itself healthy while hearing no one.
    async fn subscribe_loop(self: Arc<Self>, client: redis::Client, channel: String, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let connected = tokio::time::timeout(crate::shared_redis::TIMEOUT, async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "Redis did not answer in time"))));
            match connected {
                    Ok(pubsub) => {
                        backoff = Duration::from_millis(100);
                        self.healthy.store(true, Ordering::Release);
                        // Whatever was missed while disconnected: every
                        // stream re-reads the log from its last id.
                        self.registry.lag_all();
                        self.tail.wake.notify_one();
                        tracing::info!("event bus connected");
                        let (mut sink, mut messages) = pubsub.split();
                        let mut ping = tokio::time::interval(PING_EVERY);
                        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        loop {
                            tokio::select! {
                                _ = shutdown.cancelled() => return,
                                message = messages.next() => match message {
                                    Some(message) => self.receive(message.get_payload_bytes()),
                                    None => break,
                                },
                                _ = ping.tick() => {
                                    let answered = tokio::time::timeout(crate::shared_redis::TIMEOUT, sink.ping::<redis::Value>()).await;
                                    if !matches!(answered, Ok(Ok(_))) {
                                        tracing::warn!("event bus: Redis stopped answering pings");
                                        break;
                                    }
                                }
                            }
                        }
                        tracing::warn!("event bus subscription lost; reconnecting");
                    }
                    Err(e) => tracing::warn!(error = %e, "event bus: Redis unreachable"),
            }
            self.healthy.store(false, Ordering::Release);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Handles another node's envelope.
    fn receive(&self, payload: &[u8]) {
        let Ok(envelope) = serde_json::from_slice::<Envelope>(payload) else {
            tracing::warn!("event bus: unreadable message ignored");
            return;
        };
        if envelope.node == self.node {
            return;
        }
        if envelope.head.is_some() {
            self.tail.wake.notify_one();
        }
        let mut now = Vec::new();
        let mut later = Vec::new();
        for wire in envelope.events {
            let mut event = Event::ephemeral(Topic::from_stored(&wire.topic), "", "");
            event.frame = Bytes::from(wire.frame);
            event.as_of = wire.as_of.map(EventId::new);
            event.exclude = wire.exclude.and_then(|user| UserId::parse(user).ok());
            event.notice = wire.count.map(super::event::Notice::Count);
            if event.as_of.is_some() { later.push(Arc::new(event)) } else { now.push(Arc::new(event)) }
        }
        self.registry.deliver(&now);
        self.tail.hold(later);
    }
}

impl Bus for RedisBus {
    fn publish(&self, events: Vec<Arc<Event>>) {
        let head = events.iter().filter_map(|e| e.id).max();
        let mut ephemeral_now = Vec::new();
        let mut states = Vec::new();
        let mut wire = Vec::new();
        for event in &events {
            if event.id.is_some() {
                continue;
            }
            wire.push(WireEvent {
                topic: event.topic.to_string(),
                frame: String::from_utf8_lossy(&event.frame).into_owned(),
                as_of: event.as_of.map(EventId::get),
                exclude: event.exclude.as_ref().map(ToString::to_string),
                count: match event.notice {
                    Some(super::event::Notice::Count(count)) => Some(count),
                    _ => None,
                },
            });
            if event.as_of.is_some() { states.push(event.clone()) } else { ephemeral_now.push(event.clone()) }
        }
        // Persisted events reach this node's streams through its tail
        // reader, like everyone else's, so that all arrive in log order.
        if head.is_some() {
            self.tail.wake.notify_one();
        }
        self.registry.deliver(&ephemeral_now);
        self.tail.hold(states);
        let envelope = Envelope { node: self.node.clone(), head: head.map(EventId::get), events: wire };
        if let Ok(message) = serde_json::to_string(&envelope)
            && self.outbox.try_send(message).is_err()
        {
            tracing::warn!("event bus: outbox full, a doorbell was dropped (the tail readers' polling covers it)");
        }
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}

/// Publishes queued envelopes in order through a connection manager (which
/// reconnects by itself). A message that cannot be sent is dropped:
/// doorbells are covered by polling, ephemeral events are allowed to be lost.
async fn publish_loop(mut connection: redis::aio::ConnectionManager, channel: String, mut pending: mpsc::Receiver<String>, shutdown: CancellationToken) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return,
            message = pending.recv() => match message { Some(m) => m, None => return },
        };
        let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH").arg(&channel).arg(message).query_async(&mut connection).await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "event bus: a message was not published");
        }
    }
}

/// Reads the log in id order and delivers it to this node's registry.
pub struct TailReader {
    db: DatabaseConnection,
    registry: Arc<Registry>,
    /// The last log id delivered.
    delivered: AtomicI64,
    wake: Notify,
    /// State reports waiting for the log position they describe.
    held: Mutex<Vec<Arc<Event>>>,
}

impl TailReader {
    async fn run(self: Arc<Self>, poll: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            loop {
                let after = EventId::new(self.delivered.load(Ordering::Acquire));
                let page = match event_log::read_all_after(&self.db, after, TAIL_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error = %e, "tail reader: the log is unreadable; retrying");
                        break;
                    }
                };
                let Some(last) = page.last().and_then(|e| e.id) else { break };
                let full = page.len() as u64 == TAIL_PAGE;
                let events: Vec<Arc<Event>> = page.into_iter().map(Arc::new).collect();
                self.registry.deliver(&events);
                self.delivered.store(last.get(), Ordering::Release);
                self.release();
                if !full {
                    break;
                }
            }
            self.release();
        }
    }

    /// Queues state reports until the log they describe has been delivered.
    fn hold(&self, states: Vec<Arc<Event>>) {
        if states.is_empty() {
            return;
        }
        self.held.lock().unwrap_or_else(|p| p.into_inner()).extend(states);
        self.release();
    }

    fn release(&self) {
        let delivered = EventId::new(self.delivered.load(Ordering::Acquire));
        let ready: Vec<Arc<Event>> = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let (ready, waiting): (Vec<_>, Vec<_>) = held.drain(..).partition(|e| e.as_of.is_none_or(|at| at <= delivered));
            *held = waiting;
            ready
        };
        self.registry.deliver(&ready);
    }
}
