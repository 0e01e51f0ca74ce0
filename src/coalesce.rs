//! Many callers' reads of the same kind served by one statement.
//!
//! A surge of stream opens is a surge of identical reads that differ only
//! in the user. Each read costs a statement: building it, a round trip to a
//! pooled connection (on SQLite, a hand-off to that connection's worker
//! thread and back), and SQLite's per-statement work. Taken one by one,
//! those per-statement costs were most of what opening a stream cost
//! (`perf record` during `tidings-bench idle`, BENCHMARKS.md).
//!
//! A [`Coalescer`] queues requests; a batch starts as soon as one of a few
//! slots is free, and takes every request queued by then. An open that
//! arrives alone is read alone, at once (no timer, no added latency); a
//! surge is read in batches that grow with the surge, the way group commit
//! gives a busy writer bigger transactions. Each caller gets its own result.

use std::{future::Future, sync::Arc};

use tokio::sync::{Semaphore, mpsc, oneshot};

/// A queue of requests served in batches by `run` (see the module doc).
pub struct Coalescer<Req, Out> {
    queue: mpsc::UnboundedSender<(Req, oneshot::Sender<Out>)>,
}

impl<Req: Send + 'static, Out: Send + 'static> Coalescer<Req, Out> {
    /// Starts the batcher on the current runtime. `run` gets up to
    /// `max_batch` requests and returns one output per request, in order;
    /// at most `in_flight` batches run at once. The batcher stops when the
    /// coalescer is dropped.
    pub fn spawn<F, Fut>(max_batch: usize, in_flight: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Out>> + Send + 'static,
    {
        let (queue, mut requests) = mpsc::unbounded_channel::<(Req, oneshot::Sender<Out>)>();
        let run = Arc::new(run);
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        tokio::spawn(async move {
            while let Some(first) = requests.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                // Everything that queued while the slots were busy joins.
                let mut batch = vec![first];
                while batch.len() < max_batch.max(1) {
                    match requests.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                let run = run.clone();
                tokio::spawn(async move {
                    let (inputs, replies): (Vec<Req>, Vec<oneshot::Sender<Out>>) = batch.into_iter().unzip();
                    let outputs = run(inputs).await;
                    debug_assert_eq!(outputs.len(), replies.len(), "one output per request");
                    for (reply, output) in replies.into_iter().zip(outputs) {
                        // A caller that went away (its client hung up) is skipped.
                        let _ = reply.send(output);
                    }
                    drop(slot);
                });
            }
        });
        Coalescer { queue }
    }

    /// Queues `request` and waits for its output. `None` only if the batch
    /// serving it failed to answer (it panicked) or the batcher is gone.
    pub async fn call(&self, request: Req) -> Option<Out> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((request, reply)).ok()?;
        answer.await.ok()
    }
}

/// The batch sizes statements are padded to: a statement's text depends on
/// how many requests it serves, and every pooled connection keeps each
/// text it ran prepared (SQLite memory, measured with heaptrack: about
/// 2 KiB to 60 KiB a shape per connection), so a batch is one of very few
/// shapes. Padding an `IN` list with a repeated value costs nothing.
pub fn padded_len(len: usize) -> usize {
    match len {
        0..=1 => 1,
        2..=16 => 16,
        17..=32 => 32,
        n => n.div_ceil(64) * 64,
    }
}

/// `list` without repeats, padded with its last item to one of the lengths
/// of [`padded_len`]: the `IN` list of a batch's statement.
pub fn padded<T: Ord + Copy>(mut list: Vec<T>) -> Vec<T> {
    list.sort_unstable();
    list.dedup();
    if let Some(last) = list.last().copied() {
        list.resize(padded_len(list.len()), last);
    }
    list
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn each_caller_gets_its_own_answer_and_a_surge_is_served_in_fewer_batches() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let doubler = Arc::new(Coalescer::spawn(64, 1, move |inputs: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                inputs.into_iter().map(|n| n * 2).collect::<Vec<_>>()
            }
        }));
        let calls: Vec<_> = (0..200u32)
            .map(|n| {
                let doubler = doubler.clone();
                tokio::spawn(async move { (n, doubler.call(n).await) })
            })
            .collect();
        for call in calls {
            let (n, answer) = call.await.unwrap();
            assert_eq!(answer, Some(n * 2));
        }
        let served_in = batches.load(Ordering::SeqCst);
        assert!(served_in < 200, "200 concurrent calls took {served_in} batches");
        assert!(served_in >= 200 / 64, "a batch never exceeds its maximum");
    }

    #[tokio::test]
    async fn a_lone_call_is_served_at_once() {
        let echo = Coalescer::spawn(64, 2, |inputs: Vec<&'static str>| async move { inputs });
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), echo.call("alone")).await;
        assert_eq!(answer.unwrap(), Some("alone"));
    }

    #[test]
    fn batches_are_padded_to_a_few_shapes() {
        assert_eq!((1..=200).map(padded_len).collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>(), vec![1, 16, 32, 64, 128, 192, 256]);
    }
}
