//! One connection's bounded queue.

use std::{collections::VecDeque, sync::Arc, sync::Mutex};

use tokio::sync::Notify;

use super::Event;
use crate::domain::Topic;

/// The queue between the fan-out and one stream. Bounded: when a stream
/// falls `capacity` events behind, the mailbox drops what it holds, refuses
/// more and flags the lag. The stream then reads what it missed from the
/// event log (from its last delivered id) and carries on live. A slow client
/// therefore costs a bounded amount of memory and loses nothing.
pub struct Mailbox {
    /// A std mutex: it is held for a push or a drain, never across an await.
    state: Mutex<State>,
    /// The topics this mailbox is registered on, so that leaving the
    /// registry removes it everywhere, including conversations joined while
    /// the stream was open.
    topics: Mutex<Vec<Topic>>,
    /// Wakes the stream; a notification sent while it is busy is kept as a
    /// permit, so a wake-up is never lost between a check and a wait.
    wake: Notify,
    capacity: usize,
}

struct State {
    queue: VecDeque<Arc<Event>>,
    lagged: bool,
}

/// What a stream finds in its mailbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Events arrived; they were appended to the caller's batch.
    Events,
    /// Events were dropped: catch up from the log before anything else.
    Lagged,
}

impl Mailbox {
    /// An empty mailbox; it allocates nothing until the first event.
    pub fn new(capacity: usize) -> Self {
        Mailbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                lagged: false,
            }),
            wake: Notify::new(),
            capacity,
            topics: Mutex::new(Vec::new()),
        }
    }

    /// Records a topic this mailbox is registered on; false if it already was.
    pub fn add_topic(&self, topic: &Topic) -> bool {
        let mut topics = self.topics.lock().unwrap_or_else(|poison| poison.into_inner());
        if topics.contains(topic) {
            return false;
        }
        topics.push(topic.clone());
        true
    }

    /// Forgets a topic; false if it was not recorded.
    pub fn remove_topic(&self, topic: &Topic) -> bool {
        let mut topics = self.topics.lock().unwrap_or_else(|poison| poison.into_inner());
        let before = topics.len();
        topics.retain(|t| t != topic);
        topics.len() != before
    }

    /// The topics this mailbox is registered on.
    pub fn topics(&self) -> Vec<Topic> {
        self.topics.lock().unwrap_or_else(|poison| poison.into_inner()).clone()
    }

    /// Queues an event without ever blocking the publisher. Returns true
    /// when this push is the one that overflowed the queue.
    pub fn push(&self, event: &Arc<Event>) -> bool {
        let overflowed = {
            let mut state = self.state.lock().unwrap_or_else(|poison| poison.into_inner());
            if state.lagged {
                // The stream will read the log; queueing more only costs memory.
                return false;
            }
            if state.queue.len() >= self.capacity {
                state.lagged = true;
                state.queue = VecDeque::new();
                true
            } else {
                state.queue.push_back(event.clone());
                false
            }
        };
        self.wake.notify_one();
        overflowed
    }

    /// Makes the stream catch up from the log, as after an overflow: for
    /// when the bus may have lost events on their way here.
    pub fn force_lag(&self) {
        {
            let mut state = self.state.lock().unwrap_or_else(|poison| poison.into_inner());
            state.lagged = true;
            state.queue = VecDeque::new();
        }
        self.wake.notify_one();
    }

    /// Waits until there is something to do. Taking the lag flag and
    /// re-opening the queue happen under one lock: every event pushed after
    /// this returns `Lagged` is queued, and every event committed before the
    /// stream's catch-up query is in the log, so between the two nothing is
    /// missed (duplicates are skipped by id).
    pub async fn recv(&self, batch: &mut Vec<Arc<Event>>) -> Delivery {
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|poison| poison.into_inner());
                if state.lagged {
                    state.lagged = false;
                    return Delivery::Lagged;
                }
                if !state.queue.is_empty() {
                    batch.extend(state.queue.drain(..));
                    if state.queue.capacity() > 64 {
                        state.queue.shrink_to(16);
                    }
                    return Delivery::Events;
                }
            }
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EventId, UserId};

    fn event(id: i64) -> Arc<Event> {
        let topic = Topic::user(&UserId::parse("u").unwrap());
        Arc::new(Event::persisted(EventId::new(id), topic, "x", "{}"))
    }

    #[tokio::test]
    async fn events_come_out_in_order() {
        let mailbox = Mailbox::new(8);
        mailbox.push(&event(1));
        mailbox.push(&event(2));
        let mut batch = Vec::new();
        assert_eq!(mailbox.recv(&mut batch).await, Delivery::Events);
        let ids: Vec<_> = batch.iter().map(|e| e.id.unwrap().get()).collect();
        assert_eq!(ids, [1, 2]);
    }

    #[tokio::test]
    async fn overflow_is_reported_once_then_the_queue_reopens() {
        let mailbox = Mailbox::new(2);
        for id in 1..=5 {
            mailbox.push(&event(id));
        }
        let mut batch = Vec::new();
        assert_eq!(mailbox.recv(&mut batch).await, Delivery::Lagged);
        assert!(batch.is_empty());
        mailbox.push(&event(6));
        assert_eq!(mailbox.recv(&mut batch).await, Delivery::Events);
        assert_eq!(batch[0].id.unwrap().get(), 6);
    }
}
