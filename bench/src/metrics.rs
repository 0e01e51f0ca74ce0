//! What is counted while a scenario runs: latency histograms and the
//! delivery tally from which loss and duplication are computed. Both merge,
//! because each worker process keeps its own and the coordinator adds them.

use std::collections::HashSet;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stamp::ReceivedStamp;

/// Highest latency recorded, in µs (longer ones are clamped to it).
const MAX_MICROS: u64 = 600_000_000;

/// A latency histogram in microseconds (3 significant digits).
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"))
    }
}

impl Latency {
    /// Records one latency.
    pub fn record_micros(&mut self, micros: u64) {
        self.0.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Latency) {
        self.0.add(&other.0).expect("same bounds");
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `q` quantile (0..=1) in milliseconds; `None` without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (self.count() > 0).then(|| self.0.value_at_quantile(q) as f64 / 1000.0)
    }

    /// The largest sample in milliseconds.
    pub fn max_ms(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.0.max() as f64 / 1000.0)
    }

    /// (value, count) pairs: how a worker sends its histogram over a pipe.
    pub fn to_pairs(&self) -> Vec<(u64, u64)> {
        self.0.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect()
    }

    /// The inverse of [`to_pairs`](Self::to_pairs).
    pub fn from_pairs(pairs: &[(u64, u64)]) -> Self {
        let mut latency = Latency::default();
        for &(value, count) in pairs {
            latency.0.saturating_record_n(value.clamp(1, MAX_MICROS), count);
        }
        latency
    }
}

/// Deliveries as seen by the receiving side.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Tally {
    /// First deliveries of a message to a connection.
    pub delivered: u64,
    /// The same message again on the same connection.
    pub duplicates: u64,
    /// Messages addressed to someone else.
    pub misrouted: u64,
    /// Connections whose stream ended before the run did.
    pub disconnects: u64,
    /// Per message (indexed by seq): connections that received it.
    pub per_seq: Vec<u32>,
    /// Publish-to-receive latency, as (µs, count) pairs.
    pub latency: Vec<(u64, u64)>,
    /// Wall-clock ns of the first and the last first-delivery.
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    /// What resuming streams went through (workers with `resume` only).
    #[serde(default)]
    pub resume: Resumes,
}

/// Reconnections of resuming streams (see `protocol::Setup::resume`).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Resumes {
    /// Opens refused with 503/429 and retried after `Retry-After`.
    pub refused: u64,
    /// Opens that got no answer (connection refused or reset, timeout),
    /// retried after 1 s.
    pub connect_errors: u64,
    /// Opens answered with another status: not retried, the stream is gone.
    pub failed: u64,
    /// `reset` events (the server no longer had the history asked for).
    pub resets: u64,
    /// Wall-clock ns at which each stream dropped on command got its first
    /// `unread_count` after reconnecting.
    pub live_again_ns: Vec<u64>,
    /// (send ns, latency µs) of every first delivery, to split latency by
    /// send time around the storm.
    pub samples: Vec<(u64, u64)>,
}

/// One connection's memory of what it has received, for duplicate detection.
#[derive(Default)]
pub struct Seen(HashSet<u32>);

/// A worker's running tally, with its latency histogram kept live.
#[derive(Default)]
pub struct LiveTally {
    pub tally: Tally,
    pub latency: Latency,
}

impl LiveTally {
    /// Accounts for one received stamp on a connection that expects `expect`;
    /// true if it was a first delivery.
    pub fn record(&mut self, seen: &mut Seen, expect: &str, stamp: &ReceivedStamp<'_>, now_ns: u64) -> bool {
        let t = &mut self.tally;
        if stamp.to != expect {
            t.misrouted += 1;
            return false;
        }
        if !seen.0.insert(stamp.seq) {
            t.duplicates += 1;
            return false;
        }
        t.delivered += 1;
        let index = stamp.seq as usize;
        if t.per_seq.len() <= index {
            t.per_seq.resize(index + 1, 0);
        }
        t.per_seq[index] += 1;
        self.latency.record_micros(now_ns.saturating_sub(stamp.sent_ns) / 1000);
        t.first_ns = Some(t.first_ns.map_or(now_ns, |f| f.min(now_ns)));
        t.last_ns = Some(t.last_ns.map_or(now_ns, |l| l.max(now_ns)));
        true
    }

    /// The tally with its histogram folded in, ready to send.
    pub fn snapshot(&self) -> Tally {
        let mut tally = self.tally.clone();
        tally.latency = self.latency.to_pairs();
        tally
    }
}

impl Tally {
    /// Adds another worker's tally.
    pub fn merge(&mut self, other: &Tally) {
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.misrouted += other.misrouted;
        self.disconnects += other.disconnects;
        if self.per_seq.len() < other.per_seq.len() {
            self.per_seq.resize(other.per_seq.len(), 0);
        }
        for (mine, theirs) in self.per_seq.iter_mut().zip(&other.per_seq) {
            *mine += theirs;
        }
        let mut latency = Latency::from_pairs(&self.latency);
        latency.merge(&Latency::from_pairs(&other.latency));
        self.latency = latency.to_pairs();
        self.first_ns = min_opt(self.first_ns, other.first_ns);
        self.last_ns = match (self.last_ns, other.last_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let (mine, theirs) = (&mut self.resume, &other.resume);
        mine.refused += theirs.refused;
        mine.connect_errors += theirs.connect_errors;
        mine.failed += theirs.failed;
        mine.resets += theirs.resets;
        mine.live_again_ns.extend_from_slice(&theirs.live_again_ns);
        mine.samples.extend_from_slice(&theirs.samples);
    }

    /// Deliveries missing, and deliveries of messages whose publish was not
    /// confirmed: compares what arrived with what the publisher was told
    /// succeeded (`expected[seq]` connections per message).
    pub fn reconcile(&self, expected: &[u32]) -> Reconciled {
        let mut out = Reconciled::default();
        for seq in 0..expected.len().max(self.per_seq.len()) {
            let want = expected.get(seq).copied().unwrap_or(0) as u64;
            let got = self.per_seq.get(seq).copied().unwrap_or(0) as u64;
            out.lost += want.saturating_sub(got);
            out.unconfirmed += got.saturating_sub(want);
        }
        out
    }
}

/// The verdict of [`Tally::reconcile`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Reconciled {
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Deliveries of messages whose publish request failed or timed out.
    pub unconfirmed: u64,
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(seq: u32, to: &str) -> ReceivedStamp<'_> {
        ReceivedStamp { seq, to, sent_ns: 1_000_000 }
    }

    #[test]
    fn counts_duplicates_misroutes_and_loss() {
        let mut live = LiveTally::default();
        let mut seen = Seen::default();
        live.record(&mut seen, "a", &stamp(0, "a"), 3_000_000);
        live.record(&mut seen, "a", &stamp(0, "a"), 3_000_000);
        live.record(&mut seen, "a", &stamp(2, "b"), 3_000_000);
        let mut total = Tally::default();
        total.merge(&live.snapshot());
        assert_eq!((total.delivered, total.duplicates, total.misrouted), (1, 1, 1));
        let verdict = total.reconcile(&[1, 1]);
        assert_eq!((verdict.lost, verdict.unconfirmed), (1, 0));
        assert_eq!(Latency::from_pairs(&total.latency).quantile_ms(0.5), Some(2.0));
    }
}
