//! Fan-out: from a committed event to the connections of its audience.
//!
//! - [`event`]: an event with its SSE frame encoded once, shared by every recipient;
//! - [`mailbox`]: one connection's bounded queue, which flags lag instead of growing;
//! - [`registry`]: topic → mailboxes on this node, so an event wakes only its audience;
//! - [`bus`]: the seam between nodes. Everything that crosses it goes through the
//!   [`Bus`] trait; the in-process [`LocalBus`] is one implementation, a
//!   Redis one plugs in behind the same trait.

pub mod bus;
pub mod event;
pub mod mailbox;
pub mod registry;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

pub use bus::{Bus, LocalBus};
pub use event::Event;
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
    stats: HubStats,
}

/// Counters the hub keeps about itself, read by tests and metrics.
#[derive(Default)]
pub struct HubStats {
    /// Streams that fell behind and caught up from the event log.
    pub catch_ups: AtomicU64,
    /// Streams open now.
    pub open_streams: AtomicU64,
}

impl Hub {
    /// A hub whose events travel over `bus` and land in `registry`.
    pub fn new(registry: Arc<Registry>, bus: Arc<dyn Bus>, mailbox_capacity: usize) -> Self {
        Hub {
            registry,
            bus,
            mailbox_capacity: mailbox_capacity.max(1),
            stats: HubStats::default(),
        }
    }

    /// A single-node hub: the bus is the registry itself.
    pub fn in_process(mailbox_capacity: usize) -> Self {
        let registry = Arc::new(Registry::new());
        let bus = Arc::new(LocalBus::new(registry.clone()));
        Hub::new(registry, bus, mailbox_capacity)
    }

    /// Hands committed events, in log order, to every node.
    pub fn publish(&self, events: Vec<Arc<Event>>) {
        if !events.is_empty() {
            self.bus.publish(events);
        }
    }

    /// Registers a new connection on `topics`. Done before the stream reads
    /// its replay, so nothing committed meanwhile can fall between the two.
    pub fn subscribe(self: &Arc<Self>, topics: Vec<Topic>) -> Subscription {
        let mailbox = Arc::new(Mailbox::new(self.mailbox_capacity));
        for topic in &topics {
            self.registry.register(topic, &mailbox);
        }
        self.stats.open_streams.fetch_add(1, Ordering::Relaxed);
        Subscription {
            hub: self.clone(),
            topics,
            mailbox,
        }
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
    topics: Vec<Topic>,
    mailbox: Arc<Mailbox>,
}

impl Subscription {
    /// The topics this connection listens to.
    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }

    /// Waits for what arrived since the last call.
    pub async fn next(&self, batch: &mut Vec<Arc<Event>>) -> Delivery {
        self.mailbox.recv(batch).await
    }

    /// Records that this connection caught up from the log after lagging.
    pub fn count_catch_up(&self) {
        self.hub.stats.catch_ups.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for topic in &self.topics {
            self.hub.registry.unregister(topic, &self.mailbox);
        }
        self.hub.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}
