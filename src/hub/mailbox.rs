//! One connection's bounded queue.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use futures_util::task::AtomicWaker;

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
    /// Wakes the stream. It registers before it looks at the queue, so a
    /// push between the look and the wait still wakes it.
    waker: AtomicWaker,
    capacity: usize,
}

struct State {
    queue: VecDeque<Arc<Event>>,
    lagged: bool,
    /// The node's shared heartbeat came by: the stream sends `: ping`.
    ping: bool,
    /// The node is shutting down: the stream says goodbye and ends.
    closed: bool,
}

/// What a stream finds in its mailbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Events arrived; they were appended to the caller's batch.
    Events,
    /// Events were dropped: catch up from the log before anything else.
    Lagged,
    /// A heartbeat: time to show the connection is alive (and to look at
    /// the clock). One shared tick for every stream of the node, instead of
    /// a timer per stream.
    Ping,
    /// The node is shutting down.
    Closed,
}

impl Mailbox {
    /// An empty mailbox; it allocates nothing until the first event.
    pub fn new(capacity: usize) -> Self {
        Mailbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                lagged: false,
                ping: false,
                closed: false,
            }),
            waker: AtomicWaker::new(),
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
        self.waker.wake();
        overflowed
    }

    /// The heartbeat's knock: the stream sends a ping when next idle.
    pub fn ping(&self) {
        self.state.lock().unwrap_or_else(|poison| poison.into_inner()).ping = true;
        self.waker.wake();
    }

    /// Tells the stream the node is shutting down.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|poison| poison.into_inner()).closed = true;
        self.waker.wake();
    }

    /// Makes the stream catch up from the log, as after an overflow: for
    /// when the bus may have lost events on their way here.
    pub fn force_lag(&self) {
        {
            let mut state = self.state.lock().unwrap_or_else(|poison| poison.into_inner());
            state.lagged = true;
            state.queue = VecDeque::new();
        }
        self.waker.wake();
    }

    /// What there is to do, or `Pending` (the task is woken when there is
    /// something). Taking the lag flag and re-opening the queue happen under
    /// one lock: every event pushed after this returns `Lagged` is queued,
    /// and every event committed before the stream's catch-up query is in
    /// the log, so between the two nothing is missed (duplicates are skipped
    /// by id). Shutdown comes first, then lag, then events, then a ping.
    pub fn poll_recv(&self, cx: &mut Context<'_>, batch: &mut Vec<Arc<Event>>) -> Poll<Delivery> {
        self.waker.register(cx.waker());
        let mut state = self.state.lock().unwrap_or_else(|poison| poison.into_inner());
        if state.closed {
            return Poll::Ready(Delivery::Closed);
        }
        if state.lagged {
            state.lagged = false;
            return Poll::Ready(Delivery::Lagged);
        }
        if !state.queue.is_empty() {
            batch.extend(state.queue.drain(..));
            if state.queue.capacity() > 64 {
                state.queue.shrink_to(16);
            }
            return Poll::Ready(Delivery::Events);
        }
        if state.ping {
            state.ping = false;
            return Poll::Ready(Delivery::Ping);
        }
        Poll::Pending
    }

    /// Waits until there is something to do (see [`Mailbox::poll_recv`]).
    pub async fn recv(&self, batch: &mut Vec<Arc<Event>>) -> Delivery {
        std::future::poll_fn(|cx| self.poll_recv(cx, batch)).await
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

    #[tokio::test]
    async fn a_ping_waits_for_the_events_and_shutdown_comes_before_all() {
        let mailbox = Mailbox::new(8);
        mailbox.ping();
        mailbox.push(&event(1));
        let mut batch = Vec::new();
        assert_eq!(mailbox.recv(&mut batch).await, Delivery::Events);
        assert_eq!(mailbox.recv(&mut batch).await, Delivery::Ping);
        mailbox.push(&event(2));
        mailbox.close();
        assert_eq!(mailbox.recv(&mut batch).await, Delivery::Closed);
    }

    #[tokio::test]
    async fn a_waiting_stream_is_woken_by_a_push_from_another_task() {
        let mailbox = Arc::new(Mailbox::new(8));
        let pusher = mailbox.clone();
        let waiting = tokio::spawn(async move {
            let mut batch = Vec::new();
            (mailbox.recv(&mut batch).await, batch.len())
        });
        tokio::task::yield_now().await;
        pusher.push(&event(1));
        assert_eq!(tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap(), (Delivery::Events, 1));
    }
}
