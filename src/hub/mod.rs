//! Fan-out: from a committed event to the connections of its audience.
//!
//! - [`event`]: an event with its SSE frame encoded once, shared by every recipient;
//! - [`mailbox`]: one connection's bounded queue, which flags lag instead of growing;
//! - [`registry`]: topic → mailboxes on this node, so an event wakes only its audience;
//! - [`bus`]: the seam between nodes. Everything that crosses it goes through the
//!   [`Bus`] trait: the in-process [`LocalBus`] for one node, and
//!   [`redis_bus::RedisBus`] for a cluster on one database.

pub mod bus;
pub mod event;
pub mod mailbox;
pub mod redis_bus;
pub mod registry;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

pub use bus::{Bus, LocalBus};
pub use event::{Announced, Event, Notice, RouteChange};
pub use mailbox::{Delivery, Mailbox};
pub use registry::Registry;

use crate::domain::Topic;

/// The node's fan-out: where committed events are published and where
/// streams subscribe.
pub struct Hub {
    registry: Arc<Registry>,
    bus: Arc<dyn Bus>,
    /// Per-connection queue bound: large enough to absorb a burst, small
    /// enough that a stalled client costs little before it is switched to
    /// catching up from the log.
    mailbox_capacity: usize,
    limits: StreamLimits,
    stats: HubStats,
}

/// How many streams this node accepts.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Streams of one user on this node: enough for every tab and device,
    /// few enough that a reconnect loop cannot exhaust the node.
    pub per_user: usize,
    /// Streams on this node: kept below the process's open-file limit, so
    /// that the node refuses cleanly instead of failing to accept.
    pub total: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits { per_user: 16, total: 100_000 }
    }
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user already holds `per_user` streams here.
    TooManyForUser,
    /// The node holds `total` streams.
    NodeFull,
}

/// Counters the hub keeps about itself. Plain atomics on the hot path;
/// `/metrics` reads them at scrape time.
#[derive(Default)]
pub struct HubStats {
    /// Streams open now.
    pub open_streams: AtomicU64,
    /// Persisted events handed to the bus.
    pub events_published: AtomicU64,
    /// Frames of persisted events written to streams, live or replayed.
    pub frames_delivered: AtomicU64,
    /// Events streams read back from the log (resume and catch-up).
    pub replayed_events: AtomicU64,
    /// Streams that fell behind and caught up from the event log.
    pub catch_ups: AtomicU64,
    /// Streams refused by a limit.
    pub refused_streams: AtomicU64,
}

impl Hub {
    /// A hub whose events travel over `bus` and land in `registry`.
    pub fn new(registry: Arc<Registry>, bus: Arc<dyn Bus>, mailbox_capacity: usize, limits: StreamLimits) -> Self {
        Hub {
            registry,
            bus,
            mailbox_capacity: mailbox_capacity.max(1),
            limits,
            stats: HubStats::default(),
        }
    }

    /// The registry this hub delivers into (a cluster bus needs it too).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// A single-node hub: the bus is the registry itself.
    pub fn in_process(mailbox_capacity: usize, limits: StreamLimits) -> Self {
        let registry = Arc::new(Registry::new());
        let bus = Arc::new(LocalBus::new(registry.clone()));
        Hub::new(registry, bus, mailbox_capacity, limits)
    }

    /// Hands committed events, in log order, to every node.
    pub fn publish(&self, events: Vec<Arc<Event>>) {
        if !events.is_empty() {
            let persisted = events.iter().filter(|e| e.id.is_some()).count() as u64;
            self.stats.events_published.fetch_add(persisted, Ordering::Relaxed);
            self.bus.publish(events);
        }
    }

    /// Registers a new connection of the user whose private topic is
    /// `owner`, listening to `owner` and `others`. Done before the stream
    /// reads its replay, so nothing committed meanwhile can fall between the
    /// two. Refused when a limit is reached.
    pub fn subscribe(self: &Arc<Self>, owner: Topic, others: Vec<Topic>) -> Result<Subscription, Refusal> {
        let open = self.stats.open_streams.fetch_add(1, Ordering::Relaxed);
        if open as usize >= self.limits.total {
            self.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
            self.stats.refused_streams.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::NodeFull);
        }
        let mailbox = Arc::new(Mailbox::new(self.mailbox_capacity));
        if !self.registry.register_capped(&owner, &mailbox, self.limits.per_user) {
            self.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
            self.stats.refused_streams.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::TooManyForUser);
        }
        for topic in &others {
            self.registry.register(topic, &mailbox);
        }
        Ok(Subscription { hub: self.clone(), owner, mailbox })
    }

    /// The node's one heartbeat: every `every`, each stream is knocked on
    /// to send `: ping` (one task for all streams, no timer per stream); at
    /// shutdown, each is told to end. The knocks are spread over the
    /// interval, one part of the streams at a time (see
    /// [`Registry::for_each_stream_in`]): knocking 17,000 streams at once
    /// is 17,000 writes in one burst, which delays every delivery queued
    /// behind it.
    pub fn spawn_heartbeat(self: &Arc<Self>, every: std::time::Duration, shutdown: tokio_util::sync::CancellationToken) {
        let hub = self.clone();
        tokio::spawn(async move {
            let step = every / Registry::PARTS as u32;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + step, step);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut part = 0;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        hub.registry.for_each_stream(|mailbox| mailbox.close());
                        return;
                    }
                    _ = tick.tick() => {
                        hub.registry.for_each_stream_in(part, |mailbox| mailbox.ping());
                        part = (part + 1) % Registry::PARTS;
                    }
                }
            }
        });
    }

    /// Whether events published here reach the other nodes.
    pub fn is_healthy(&self) -> bool {
        self.bus.is_healthy()
    }

    /// The hub's counters.
    pub fn stats(&self) -> &HubStats {
        &self.stats
    }

    /// How many times a connection on this node fell behind its mailbox.
    pub fn overflows(&self) -> u64 {
        self.registry.overflows()
    }
}

/// One connection's place in the registry; leaving it (drop) unregisters.
pub struct Subscription {
    hub: Arc<Hub>,
    owner: Topic,
    mailbox: Arc<Mailbox>,
}

impl Subscription {
    /// The private topic of the connection's user.
    pub fn owner(&self) -> &Topic {
        &self.owner
    }

    /// Also listens to `topic` (a conversation the user is a member of).
    pub fn listen(&self, topic: &Topic) {
        self.hub.registry.register(topic, &self.mailbox);
    }

    /// Stops listening to `topic`.
    pub fn forget(&self, topic: &Topic) {
        self.hub.registry.unregister(topic, &self.mailbox);
    }

    /// Waits for what arrived since the last call.
    pub async fn next(&self, batch: &mut Vec<Arc<Event>>) -> Delivery {
        self.mailbox.recv(batch).await
    }

    /// What arrived since the last call, or `Pending` until something does.
    pub fn poll_next(&self, cx: &mut std::task::Context<'_>, batch: &mut Vec<Arc<Event>>) -> std::task::Poll<Delivery> {
        self.mailbox.poll_recv(cx, batch)
    }

    /// Records that this connection caught up from the log after lagging.
    pub fn count_catch_up(&self) {
        self.hub.stats.catch_ups.fetch_add(1, Ordering::Relaxed);
    }

    /// Records frames of persisted events written to this connection.
    pub fn count_delivered(&self, frames: u64) {
        self.hub.stats.frames_delivered.fetch_add(frames, Ordering::Relaxed);
    }

    /// Records events this connection read back from the log.
    pub fn count_replayed(&self, events: u64) {
        self.hub.stats.replayed_events.fetch_add(events, Ordering::Relaxed);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.registry.unregister_all(&self.mailbox);
        self.hub.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}
