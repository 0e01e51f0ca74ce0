//! The seam between nodes.

use std::sync::Arc;

use super::{Event, Registry};

/// Carries committed events to every node's registry. Publishing happens
/// after the commit, in log order; an implementation may lose messages (Redis
/// pub/sub does) only if it tells streams to catch up from the log, which
/// remains the source of truth.
pub trait Bus: Send + Sync + 'static {
    /// Sends events, in log order, to all nodes (this one included).
    fn publish(&self, events: Vec<Arc<Event>>);

    /// Whether the bus currently reaches the other nodes; `/readyz` reports it.
    fn is_healthy(&self) -> bool {
        true
    }
}

/// The bus of a single node: delivery is a direct call into the registry.
pub struct LocalBus {
    registry: Arc<Registry>,
}

impl LocalBus {
    /// A bus that delivers to `registry` only.
    pub fn new(registry: Arc<Registry>) -> Self {
        LocalBus { registry }
    }
}

impl Bus for LocalBus {
    fn publish(&self, events: Vec<Arc<Event>>) {
        self.registry.deliver(&events);
    }
}
