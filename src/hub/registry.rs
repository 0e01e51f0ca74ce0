//! Which connections on this node listen to which topic.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use indexmap::IndexMap;

use super::{Event, Mailbox};
use crate::domain::{EventId, Topic};

const SHARDS: usize = 32;

/// One shard: topic → the mailboxes listening to it.
type Shard = Mutex<HashMap<Topic, Listeners>>;

/// A topic's mailboxes, by address: iterated in a dense array like a `Vec`,
/// but one leaves in O(1). Every stream listens to the announcements'
/// topic, so with a `Vec` each close scanned every open stream under the
/// shard's lock: a storm of 10,000 reconnects cost 50 million comparisons
/// and held that lock against every open and delivery meanwhile.
type Listeners = IndexMap<usize, Arc<Mailbox>>;

/// A mailbox's key among a topic's listeners.
fn key(mailbox: &Arc<Mailbox>) -> usize {
    Arc::as_ptr(mailbox) as usize
}

/// Topic → mailboxes of this node. Delivering an event is one hash lookup
/// and one push per listening connection; nobody else is woken. Sharded so
/// that publishers and connecting streams rarely contend on one lock.
pub struct Registry {
    hasher: RandomState,
    /// std mutexes: every critical section is a few map operations, no await.
    shards: Box<[Shard]>,
    /// Mailboxes that overflowed (each then catches up from the log).
    overflows: AtomicU64,
    /// The newest logged event handed to every listener: events arrive in
    /// id order, so a stream that subscribes after reading this gets every
    /// later event in its mailbox. Its fresh start reads from here (an
    /// in-memory floor instead of a query).
    delivered_upto: AtomicI64,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            overflows: AtomicU64::new(0),
            delivered_upto: AtomicI64::new(0),
        }
    }

    fn shard(&self, topic: &Topic) -> std::sync::MutexGuard<'_, HashMap<Topic, Listeners>> {
        let index = (self.hasher.hash_one(topic) as usize) % SHARDS;
        self.shards[index].lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Adds a mailbox to a topic's audience (once, however often asked).
    pub fn register(&self, topic: &Topic, mailbox: &Arc<Mailbox>) {
        if mailbox.add_topic(topic) {
            self.shard(topic).entry(topic.clone()).or_default().insert(key(mailbox), mailbox.clone());
        }
    }

    /// Adds a mailbox to a topic's audience unless it already has `cap`
    /// listeners; check and insert happen under one lock.
    pub fn register_capped(&self, topic: &Topic, mailbox: &Arc<Mailbox>, cap: usize) -> bool {
        let mut shard = self.shard(topic);
        let listeners = shard.entry(topic.clone()).or_default();
        if listeners.len() >= cap {
            return false;
        }
        listeners.insert(key(mailbox), mailbox.clone());
        mailbox.add_topic(topic);
        true
    }

    /// Removes a mailbox from every topic it is registered on.
    pub fn unregister_all(&self, mailbox: &Arc<Mailbox>) {
        for topic in mailbox.topics() {
            self.unregister(&topic, mailbox);
        }
    }

    /// Removes a mailbox; the topic's entry goes when its last listener does.
    pub fn unregister(&self, topic: &Topic, mailbox: &Arc<Mailbox>) {
        mailbox.remove_topic(topic);
        let mut shard = self.shard(topic);
        if let Some(listeners) = shard.get_mut(topic) {
            listeners.swap_remove(&key(mailbox));
            if listeners.is_empty() {
                shard.remove(topic);
            }
        }
    }

    /// Hands each event to the mailboxes of its topic, in the given order.
    /// A membership change is applied first, so the events after it in the
    /// log are routed by the new membership.
    pub fn deliver(&self, events: &[Arc<Event>]) {
        for event in events {
            if let Some(route) = &event.route {
                let listeners: Vec<Arc<Mailbox>> = self.shard(&event.topic).get(&event.topic).map(|l| l.values().cloned().collect()).unwrap_or_default();
                for mailbox in &listeners {
                    if route.joined {
                        self.register(&route.conversation, mailbox);
                    } else {
                        self.unregister(&route.conversation, mailbox);
                    }
                }
            }
            if let Some(listeners) = self.shard(&event.topic).get(&event.topic) {
                for mailbox in listeners.values() {
                    if mailbox.push(event) {
                        self.overflows.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let Some(id) = event.id {
                self.mark_delivered(id);
            }
        }
    }

    /// Records that every logged event up to `id` has been handed out.
    pub fn mark_delivered(&self, id: EventId) {
        self.delivered_upto.fetch_max(id.get(), Ordering::Release);
    }

    /// The newest logged event handed to every listener (see the field).
    pub fn delivered_upto(&self) -> EventId {
        EventId::new(self.delivered_upto.load(Ordering::Acquire))
    }

    /// Makes every stream on this node catch up from the log.
    pub fn lag_all(&self) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|poison| poison.into_inner());
            for listeners in shard.values() {
                for mailbox in listeners.values() {
                    mailbox.force_lag();
                }
            }
        }
    }

    /// Calls `visit` once for every stream's mailbox on this node: each
    /// stream is registered on its user's topic exactly once.
    pub fn for_each_stream(&self, mut visit: impl FnMut(&Arc<Mailbox>)) {
        for part in 0..SHARDS {
            self.for_each_stream_in(part, &mut visit);
        }
    }

    /// How many parts [`Registry::for_each_stream_in`] divides the streams
    /// into.
    pub const PARTS: usize = SHARDS;

    /// Calls `visit` once for every stream's mailbox in one part (of
    /// [`Registry::PARTS`]) of this node's streams; every stream is in
    /// exactly one part. So a periodic visit (the heartbeat) can wake a
    /// slice of the streams at a time instead of all at once.
    pub fn for_each_stream_in(&self, part: usize, mut visit: impl FnMut(&Arc<Mailbox>)) {
        let shard = self.shards[part % SHARDS].lock().unwrap_or_else(|poison| poison.into_inner());
        for (topic, listeners) in shard.iter() {
            if topic.as_str().starts_with("u:") {
                listeners.values().for_each(&mut visit);
            }
        }
    }

    /// How many times a connection's mailbox overflowed since start.
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Relaxed)
    }

    /// How many connections on this node listen to `topic`.
    pub fn listeners(&self, topic: &Topic) -> usize {
        self.shard(topic).get(topic).map_or(0, IndexMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    #[test]
    fn the_parts_of_the_streams_hold_every_stream_exactly_once() {
        let registry = Registry::new();
        let mailboxes: Vec<Arc<Mailbox>> = (0..200).map(|_| Arc::new(Mailbox::new(8))).collect();
        for (i, mailbox) in mailboxes.iter().enumerate() {
            let user = UserId::parse(format!("user-{i}")).unwrap();
            registry.register(&Topic::user(&user), mailbox);
            // A conversation topic is not a stream of its own.
            registry.register(&Topic::conversation((i % 7) as i64), mailbox);
        }
        let mut visits: HashMap<*const Mailbox, usize> = HashMap::new();
        for part in 0..Registry::PARTS {
            registry.for_each_stream_in(part, |mailbox| *visits.entry(Arc::as_ptr(mailbox)).or_default() += 1);
        }
        assert_eq!(visits.len(), mailboxes.len());
        assert!(visits.values().all(|&n| n == 1), "a stream was visited twice: {visits:?}");
        let mut all = 0;
        registry.for_each_stream(|_| all += 1);
        assert_eq!(all, mailboxes.len());
    }
}
