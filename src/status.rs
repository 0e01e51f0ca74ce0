//! The hub's own figures on a public broadcast topic, `tidings:status`: the
//! live demo of topics, and a status panel any signed-in user may watch.
//!
//! When `TIDINGS_STATUS_TOPIC_SECS` is above zero (the zero-configuration
//! first run turns it on every 5 s), one task per node publishes every
//! period an event of type `hub.status` whose `data` is [`HubFigures`], with
//! the conflation key `hub`: a page that reconnects after a gap gets only
//! the newest figures, not every one it missed. The topic is then public
//! (added to the operator's public topics), so a plain user token may add it
//! to its stream. The task ends when the server stops.

use std::{future::Future, sync::Arc, sync::atomic::Ordering, time::Duration};

use serde::Serialize;
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    domain::TopicName,
    hub::Hub,
    topics::{TopicEventRequest, Topics},
    writer::Writer,
};

/// The topic the figures go to; public while the status task runs.
pub const STATUS_TOPIC: &str = "tidings:status";

/// The `type` of every status event.
pub const STATUS_EVENT_TYPE: &str = "hub.status";

/// The conflation key of every status event: catching up yields only the newest.
pub const STATUS_KEY: &str = "hub";

/// The period on a zero-configuration first run, so that a newcomer's page
/// shows live figures without any setting; other runs are off unless set.
pub const DEMO_PERIOD: Duration = Duration::from_secs(5);

/// The status period from `TIDINGS_STATUS_TOPIC_SECS` (`None`: unset) and
/// whether this is the zero-configuration first run: `None` means off.
/// Unset is off except on that first run, because every deployment would
/// otherwise write an event every few seconds that nobody asked for.
pub fn period(secs: Option<u64>, zero_configuration: bool) -> Option<Duration> {
    match secs {
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
        None if zero_configuration => Some(DEMO_PERIOD),
        None => None,
    }
}

/// What one status event carries: this node's counters since it started,
/// the same ones `/metrics` exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HubFigures {
    /// Streams open on this node now.
    pub open_streams: u64,
    /// Events appended to the log and handed to the fan-out.
    pub events_appended: u64,
    /// Frames of persisted events written to streams, live or replayed.
    pub frames_delivered: u64,
    /// Transactions the writer committed.
    pub writer_batches: u64,
    /// Writes the writer answered (several per batch under load).
    pub writer_jobs: u64,
    /// Whole seconds since this node started.
    pub uptime_secs: u64,
}

impl HubFigures {
    /// Reads the counters of `hub` and `writer` now; `started` is when the node started.
    pub fn read(hub: &Hub, writer: &Writer, started: Instant) -> Self {
        let (hub, writer) = (hub.stats(), writer.stats());
        HubFigures {
            open_streams: hub.open_streams.load(Ordering::Relaxed),
            events_appended: hub.events_published.load(Ordering::Relaxed),
            frames_delivered: hub.frames_delivered.load(Ordering::Relaxed),
            writer_batches: writer.batches.load(Ordering::Relaxed),
            writer_jobs: writer.jobs.load(Ordering::Relaxed),
            uptime_secs: started.elapsed().as_secs(),
        }
    }
}

/// Starts the task that publishes this node's figures to [`STATUS_TOPIC`]
/// every `every`, the first at once, until `shutdown` is cancelled. A failed
/// publish (the write queue full, the database away) is logged and the next
/// period tries again: status figures are never worth back-pressure.
pub fn spawn(topics: Arc<Topics>, hub: Arc<Hub>, writer: Arc<Writer>, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
    let started = Instant::now();
    let topic = TopicName::parse(STATUS_TOPIC).expect("the status topic is a valid topic name");
    tokio::spawn(every_period(every, shutdown, move || {
        let (topics, topic) = (topics.clone(), topic.clone());
        let figures = HubFigures::read(&hub, &writer, started);
        async move {
            let request = TopicEventRequest {
                kind: STATUS_EVENT_TYPE.to_owned(),
                data: serde_json::to_value(&figures).expect("figures serialize"),
                key: Some(STATUS_KEY.to_owned()),
            };
            let published = match request.validate() {
                Ok(new) => topics.publish(topic, new).await.map(drop),
                Err(invalid) => Err(invalid),
            };
            if let Err(error) = published {
                tracing::warn!(%error, topic = STATUS_TOPIC, "could not publish the hub's status; trying again next period");
            }
        }
    }))
}

/// Runs `tick` at once and then every `every` (a slow tick delays the next
/// rather than bunching them up), until `shutdown` is cancelled, also in the
/// middle of a tick.
async fn every_period<F, Fut>(every: Duration, shutdown: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(every.max(Duration::from_millis(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = tick() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn unset_is_off_except_on_the_zero_configuration_first_run_and_zero_is_always_off() {
        assert_eq!(period(None, false), None);
        assert_eq!(period(None, true), Some(DEMO_PERIOD));
        assert_eq!(period(Some(0), true), None);
        assert_eq!(period(Some(0), false), None);
        assert_eq!(period(Some(2), false), Some(Duration::from_secs(2)));
        assert_eq!(period(Some(30), true), Some(Duration::from_secs(30)));
    }

    /// Waits (real time, at most 5 s) until `ticks` reaches `n`.
    async fn until_ticks(ticks: &AtomicU64, n: u64) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while ticks.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} ticks in time, saw {}", ticks.load(Ordering::SeqCst)));
    }

    #[tokio::test]
    async fn the_first_tick_is_at_once_and_then_one_every_period_until_the_server_stops() {
        // An hour's period: only the first tick can happen during the test.
        let (slow, shutdown) = (Arc::new(AtomicU64::new(0)), CancellationToken::new());
        let counted = slow.clone();
        let task = tokio::spawn(every_period(Duration::from_secs(3600), shutdown.clone(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        }));
        until_ticks(&slow, 1).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task).await.expect("the task ends on shutdown").unwrap();
        assert_eq!(slow.load(Ordering::SeqCst), 1);

        let (fast, shutdown) = (Arc::new(AtomicU64::new(0)), CancellationToken::new());
        let counted = fast.clone();
        let task = tokio::spawn(every_period(Duration::from_millis(10), shutdown.clone(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        }));
        until_ticks(&fast, 3).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task).await.expect("the task ends on shutdown").unwrap();
        let stopped_at = fast.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fast.load(Ordering::SeqCst), stopped_at, "no tick after shutdown");
    }

    #[tokio::test]
    async fn a_tick_stuck_at_shutdown_does_not_hold_the_task() {
        let (entered, shutdown) = (Arc::new(AtomicU64::new(0)), CancellationToken::new());
        let counted = entered.clone();
        let task = tokio::spawn(every_period(Duration::from_secs(5), shutdown.clone(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>()
        }));
        until_ticks(&entered, 1).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(1), task).await.expect("the task ends on shutdown").unwrap();
    }
}
