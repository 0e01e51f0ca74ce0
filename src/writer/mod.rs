//! The writer: one task per node owns the write connection and commits
//! whatever is waiting together (group commit).
//!
//! Every change goes through [`Writer`] as a job. The task takes the first
//! waiting job and everything queued behind it (capped by count and rows,
//! with no timer, so a lone request is never delayed), and runs them in one
//! transaction:
//!
//! - a **plain publish** (no idempotency key, no group) is set-based: the
//!   publishes waiting together become one multi-row insert of
//!   notifications, one of events and one upsert of unread counters
//!   ([`publish`]);
//! - **any other job** is a closure over a [`LogWrite`], run inside its own
//!   SAVEPOINT: a job that fails rolls back alone, and its caller gets its
//!   error while the others commit.
//!
//! After COMMIT the batch's events go to the hub in commit order, then each
//! caller gets its answer: nothing is answered before it is durable, and
//! nothing is sent that did not commit.
//!
//! **Ids in commit order.** Resume means "every event after id N", which is
//! exact only if ids grow in commit order. On SQLite this task is the only
//! writer of the file, so it allocates ids in memory from the table's
//! sequence, read once per batch inside `BEGIN IMMEDIATE`, and writes them
//! explicitly: no UPDATE after INSERT to patch an id in. On PostgreSQL
//! several nodes write; each batch first takes one transaction-scoped
//! advisory lock, which every node's writer takes too, and draws its ids
//! from the sequences while holding it, so a batch with larger ids commits
//! after every batch with smaller ones (`docs/scaling.md` says why a lock
//! per batch rather than a transaction-id horizon).
//!
//! **Back-pressure.** The queue is bounded: when it is full a write is
//! refused at once with 503 and `Retry-After`, so memory never grows
//! without bound and no request waits without bound.

pub mod ids;
pub mod publish;
pub mod send;

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::Utc;
use futures_util::{FutureExt, future::BoxFuture};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait, Set,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::{
    domain::{
        DomainError,EventId, Topic},
    hub::{Event, Hub, RouteChange},
};
use entity::event;
use ids::Ids;
pub use publish::{PlainPublish, Recipients};
pub use send::{PlainSend, SendOutcome};

/// The advisory lock that serializes batches across nodes on PostgreSQL
/// ("tidings" in ASCII, truncated): any constant works if every node uses it.
const LOG_LOCK: i64 = 0x7469_6469_6e67;

/// How batches form.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Jobs that may wait; beyond it a write is refused with 503.
    pub queue_capacity: usize,
    /// Most jobs in one transaction: bounds how long one commit holds the
    /// database and how much one failure can delay.
    pub max_batch_jobs: usize,
    /// Most notification rows in one transaction.
    pub max_batch_rows: usize,
    /// PostgreSQL: how long one batch may take, from BEGIN to COMMIT. Past
    /// it the batch is abandoned (its connection dropped, so the server
    /// rolls it back) and every write in it answers 503: a database behind
    /// a partition never answers, and the writer must not wait for it
    /// forever. Not applied to SQLite, a local file whose long batches
    /// (a large retention sweep) are slow, not lost.
    pub batch_timeout: std::time::Duration,
}

impl Default for WriterSettings {
    fn default() -> Self {
        WriterSettings { queue_capacity: 8192, max_batch_jobs: 512, max_batch_rows: 8192, batch_timeout: crate::store::DEFAULT_TIMEOUT }
    }
}

/// Counters of the writer, read by `/metrics`.
#[derive(Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Jobs answered (committed or failed alone).
    pub jobs: AtomicU64,
    /// Writes refused because the queue was full.
    pub refused: AtomicU64,
    /// Jobs waiting now.
    pub queued: AtomicU64,
}

/// The handle every use case writes through. Cheap to share.
pub struct Writer {
    queue: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
}

/// A closure that changes rows and appends events inside the writer's
/// transaction. It gets the write through a `LogWrite` and must own what it
/// captures: it runs on the writer task.
pub trait WriteFn<T>: for<'w> FnOnce(&'w mut LogWrite) -> BoxFuture<'w, Result<T, DomainError>> + Send + 'static {}
impl<T, F> WriteFn<T> for F where F: for<'w> FnOnce(&'w mut LogWrite) -> BoxFuture<'w, Result<T, DomainError>> + Send + 'static {}

impl Writer {
    /// Starts the writer task on `db`, a connection used for nothing else
    /// (so the writer never waits behind readers for a pooled connection),
    /// publishing committed events to `hub`.
    pub fn start(db: DatabaseConnection, hub: Arc<Hub>, settings: WriterSettings) -> Arc<Writer> {
        let (queue, jobs) = mpsc::channel(settings.queue_capacity.max(1));
        let stats = Arc::new(WriterStats::default());
        let task = WriterTask { db, hub, settings, stats: stats.clone(), ids: tokio::sync::Mutex::new(None) };
        tokio::spawn(task.run(jobs));
        Arc::new(Writer { queue, stats })
    }

    /// Runs `job` in the next batch and returns its answer once the batch
    /// committed (or the job's own error, having changed nothing).
    pub async fn run<T: Send + 'static>(&self, job: impl WriteFn<T>) -> Result<T, DomainError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::Run(Box::new(Task { job: Some(job), result: None, reply: Some(reply) })))?;
        answer.await.unwrap_or_else(|_| Err(DomainError::Unavailable("the writer stopped".into())))
    }

    /// Stores plain publishes set-based in the next batch: for each item,
    /// the notifications created, in recipient order.
    pub async fn publish(&self, items: Vec<PlainPublish>) -> Result<Vec<Vec<crate::domain::notification::Notification>>, DomainError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::Publish(publish::PublishJob { items, reply }))?;
        answer.await.unwrap_or_else(|_| Err(DomainError::Unavailable("the writer stopped".into())))
    }

    /// Stores a chat message without `reply_to` set-based in the next
    /// batch: the message, and whether it is new.
    pub async fn send(&self, send: PlainSend) -> SendOutcome {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Job::Send(send::SendJob { send, reply }))?;
        answer.await.unwrap_or_else(|_| Err(DomainError::Unavailable("the writer stopped".into())))
    }

    fn enqueue(&self, job: Job) -> Result<(), DomainError> {
        // Counted before it is sent, so the writer's decrement never runs first.
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Err(DomainError::Busy { retry_after_secs: 1 })
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                Err(DomainError::Unavailable("the writer stopped".into()))
            }
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}

/// One queued write.
enum Job {
    Run(Box<dyn Work>),
    Publish(publish::PublishJob),
    Send(send::SendJob),
}

impl Job {
    /// Notification rows the job may write, for the batch cap.
    fn rows(&self) -> usize {
        match self {
            Job::Run(_) | Job::Send(_) => 1,
            Job::Publish(job) => job.rows(),
        }
    }
}

/// A type-erased closure job that keeps its own result until the batch ends.
trait Work: Send {
    /// Runs the job; true if it succeeded (its savepoint is then released).
    fn run<'a>(&'a mut self, write: &'a mut LogWrite) -> BoxFuture<'a, bool>;
    /// Answers the caller: its result if the batch committed, else `failed`.
    fn answer(self: Box<Self>, failed: Option<&DomainError>);
}

struct Task<T, F> {
    job: Option<F>,
    result: Option<Result<T, DomainError>>,
    reply: Option<oneshot::Sender<Result<T, DomainError>>>,
}

impl<T: Send + 'static, F: WriteFn<T>> Work for Task<T, F> {
    fn run<'a>(&'a mut self, write: &'a mut LogWrite) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(job) = self.job.take() else { return false };
            let result = job(write).await;
            let ok = result.is_ok();
            self.result = Some(result);
            ok
        })
    }

    fn answer(mut self: Box<Self>, failed: Option<&DomainError>) {
        let result = match (self.result.take(), failed) {
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(_)), Some(batch)) => Err(batch.clone()),
            (Some(Ok(value)), None) => Ok(value),
            (None, failed) => Err(failed.map_or_else(|| DomainError::internal(anyhow::anyhow!("a write job did not finish")), DomainError::clone)),
        };
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(result);
        }
    }
}

/// What one job writes with: its savepoint, the events it appended (sent
/// only if the batch commits) and the batch's id allocation.
pub struct LogWrite {
    txn: DatabaseTransaction,
    outbox: Vec<Arc<Event>>,
    last_appended: Option<EventId>,
    ids: Ids,
    /// Open inner savepoints: where the outbox stood when each began.
    marks: Vec<(usize, Option<EventId>)>,
}

impl LogWrite {
    /// The job's transaction (a savepoint inside the batch), for its own changes.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Appends an event for `topic`; it is published after the commit.
    pub async fn append(&mut self, topic: &Topic, name: &str, data: &impl Serialize) -> Result<EventId, DbErr> {
        let data = serde_json::to_string(data).map_err(|e| DbErr::Custom(format!("event payload: {e}")))?;
        self.append_encoded(topic, name, data, None).await
    }

    /// Appends an already encoded event that also moves the connections of
    /// the user whose topic it is onto or off a conversation's topic.
    pub async fn append_routed(&mut self, topic: &Topic, name: &str, data: &str, route: RouteChange) -> Result<EventId, DbErr> {
        self.append_encoded(topic, name, data.to_owned(), Some(route)).await
    }

    /// Appends an event whose id the caller allocated with [`Self::event_id`]
    /// (when a row must name its event before the event is written).
    pub async fn append_with_id(&mut self, id: EventId, topic: &Topic, name: &str, data: &impl Serialize) -> Result<(), DbErr> {
        let data = serde_json::to_string(data).map_err(|e| DbErr::Custom(format!("event payload: {e}")))?;
        self.insert_event(id, topic, name, data, None, None).await
    }

    /// Appends a broadcast topic's event with its conflation `key`, under an
    /// id the caller allocated (its payload names the id).
    pub async fn append_keyed(&mut self, id: EventId, topic: &Topic, name: &str, data: &impl Serialize, key: Option<String>) -> Result<(), DbErr> {
        let data = serde_json::to_string(data).map_err(|e| DbErr::Custom(format!("event payload: {e}")))?;
        self.insert_event(id, topic, name, data, None, key).await
    }

    async fn append_encoded(&mut self, topic: &Topic, name: &str, data: String, route: Option<RouteChange>) -> Result<EventId, DbErr> {
        let id = self.event_id().await?;
        self.insert_event(id, topic, name, data, route, None).await?;
        Ok(id)
    }

    async fn insert_event(&mut self, id: EventId, topic: &Topic, name: &str, data: String, route: Option<RouteChange>, key: Option<String>) -> Result<(), DbErr> {
        let mut event = Event::persisted(id, topic.clone(), name, &data);
        let row = event::ActiveModel {
            id: Set(id.get()),
            topic: Set(topic.as_str().to_owned()),
            event: Set(name.to_owned()),
            data: Set(data),
            created_at: Set(Utc::now()),
            route: Set(route.as_ref().map(RouteChange::encode)),
            key: Set(key),
        };
        event::Entity::insert(row).exec_without_returning(&self.txn).await?;
        event.route = route;
        self.last_appended = Some(id);
        self.outbox.push(Arc::new(event));
        Ok(())
    }

    /// Allocates the next event id (in commit order).
    pub async fn event_id(&mut self) -> Result<EventId, DbErr> {
        Ok(EventId::new(self.ids.events(&self.txn, 1).await?[0]))
    }

    /// Allocates a message id: every message row takes its id from the
    /// writer, so set-based sends and single ones never collide.
    pub async fn message_id(&mut self) -> Result<i64, DbErr> {
        Ok(self.ids.messages(&self.txn, 1).await?[0])
    }

    /// Allocates a notification id, so its row can be inserted whole.
    pub async fn notification_id(&mut self) -> Result<i64, DbErr> {
        Ok(self.ids.notifications(&self.txn, 1).await?[0])
    }

    /// Opens an inner savepoint, for a job made of parts that fail alone
    /// (the items of a batch publish). Close it with [`Self::end_savepoint`].
    pub async fn savepoint(&mut self) -> Result<(), DbErr> {
        self.txn.execute_unprepared("SAVEPOINT tidings_part").await?;
        self.marks.push((self.outbox.len(), self.last_appended));
        Ok(())
    }

    /// Closes the innermost savepoint: keeps its changes and events, or
    /// rolls them back and forgets its events.
    pub async fn end_savepoint(&mut self, keep: bool) -> Result<(), DbErr> {
        let (outbox_len, last_appended) = self.marks.pop().ok_or_else(|| DbErr::Custom("no savepoint is open".into()))?;
        if keep {
            self.txn.execute_unprepared("RELEASE SAVEPOINT tidings_part").await?;
        } else {
            self.txn.execute_unprepared("ROLLBACK TO SAVEPOINT tidings_part").await?;
            self.txn.execute_unprepared("RELEASE SAVEPOINT tidings_part").await?;
            self.outbox.truncate(outbox_len);
            self.last_appended = last_appended;
        }
        Ok(())
    }

    /// Queues a state report (such as `unread_count`) that is published after
    /// the events appended so far, tagged with the log position it reflects.
    pub fn announce(&mut self, topic: &Topic, name: &str, data: &impl Serialize) {
        let data = serde_json::to_string(data).expect("state payloads are plain JSON values");
        self.outbox.push(Arc::new(Event::state(topic.clone(), name, &data, self.last_appended)));
    }
}

/// A job whose fate is known, waiting for the batch's commit to be answered.
enum Finished {
    Work(Box<dyn Work>),
    Publish(publish::PublishJob, Result<Vec<Vec<crate::domain::notification::Notification>>, DomainError>),
    Send(send::SendJob, SendOutcome),
}

struct WriterTask {
    db: DatabaseConnection,
    hub: Arc<Hub>,
    settings: WriterSettings,
    stats: Arc<WriterStats>,
    /// Where the id sequences stand, kept across batches on SQLite (this
    /// task is the file's only writer); dropped after a failed batch so the
    /// next one reads them again.
    ids: tokio::sync::Mutex<Option<Ids>>,
}

impl WriterTask {
    async fn run(self, mut queue: mpsc::Receiver<Job>) {
        while let Some(first) = queue.recv().await {
            let mut rows = first.rows();
            let mut jobs = vec![first];
            while jobs.len() < self.settings.max_batch_jobs && rows < self.settings.max_batch_rows {
                match queue.try_recv() {
                    Ok(job) => {
                        rows += job.rows();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.stats.queued.fetch_sub(jobs.len() as u64, Ordering::Relaxed);
            self.stats.jobs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
            self.batch(jobs).await;
        }
    }

    /// One transaction for `jobs`, then publication, then the answers.
    async fn batch(&self, jobs: Vec<Job>) {
        let mut finished = Vec::with_capacity(jobs.len());
        let mut queued = jobs.into_iter();
        let outcome = if self.db.get_database_backend() == DbBackend::Postgres {
            // Dropping the unfinished batch drops its connection's
            // transaction: the server rolls it back, and the pool opens a
            // fresh connection for the next batch.
            tokio::time::timeout(self.settings.batch_timeout, self.write(&mut queued, &mut finished))
                .await
                .unwrap_or_else(|_| Err(DbErr::Custom(format!("the batch did not commit within {:?}", self.settings.batch_timeout))))
        } else {
            self.write(&mut queued, &mut finished).await
        };
        match outcome {
            Ok(outbox) => {
                self.stats.batches.fetch_add(1, Ordering::Relaxed);
                self.hub.publish(outbox);
                answer(finished, None);
            }
            Err(e) => {
                tracing::error!(error = %e, "a write batch failed; every write in it is refused");
                let failure = DomainError::Unavailable("the database did not accept the write; retry".into());
                // Jobs never reached get the same answer as the ones rolled back.
                finished.extend(queued.map(|job| match job {
                    Job::Run(work) => Finished::Work(work),
                    Job::Publish(job) => Finished::Publish(job, Err(failure.clone())),
                    Job::Send(job) => Finished::Send(job, Err(failure.clone())),
                }));
                answer(finished, Some(&failure));
            }
        }
    }

    /// Runs the jobs in one transaction and commits; returns the events to
    /// publish. Any error of the transaction itself fails the whole batch.
    async fn write(&self, queued: &mut std::vec::IntoIter<Job>, finished: &mut Vec<Finished>) -> Result<Vec<Arc<Event>>, DbErr> {
        let options = TransactionOptions { sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate), ..Default::default() };
        let txn = self.db.begin_with_options(options).await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({LOG_LOCK})")).await?;
        }
        let mut kept = self.ids.lock().await;
        // Taken out for the batch: if the batch fails, it is not put back.
        let mut ids = match kept.take() {
            Some(ids) => ids,
            None => Ids::start(&txn).await?,
        };
        let mut outbox = Vec::new();
        let mut plain: Vec<publish::PublishJob> = Vec::new();
        let mut sends: Vec<send::SendJob> = Vec::new();
        // Set-based writes need a savepoint of their own only when closure
        // jobs share the batch; alone, if they fail, the batch fails with them.
        let shared = queued.as_slice().iter().any(|job| matches!(job, Job::Run(_)));
        for job in queued.by_ref() {
            match job {
                Job::Publish(job) => plain.push(job),
                Job::Send(job) => sends.push(job),
                Job::Run(mut work) => {
                    publish::flush(&txn, &mut ids, std::mem::take(&mut plain), &mut outbox, finished, false).await?;
                    send::flush(&txn, &mut ids, std::mem::take(&mut sends), &mut outbox, finished, true).await?;
                    let savepoint = txn.begin().await?;
                    let mut write = LogWrite { txn: savepoint, outbox: Vec::new(), last_appended: None, ids, marks: Vec::new() };
                    let ok = AssertUnwindSafe(work.run(&mut write)).catch_unwind().await.unwrap_or_else(|_| {
                        tracing::error!("a write job panicked; it is rolled back alone");
                        false
                    });
                    let LogWrite { txn: savepoint, outbox: events, ids: returned, .. } = write;
                    ids = returned;
                    if ok {
                        savepoint.commit().await?;
                        outbox.extend(events);
                    } else {
                        savepoint.rollback().await?;
                    }
                    finished.push(Finished::Work(work));
                }
            }
        }
        publish::flush(&txn, &mut ids, plain, &mut outbox, finished, !shared).await?;
        send::flush(&txn, &mut ids, sends, &mut outbox, finished, shared).await?;
        txn.commit().await?;
        if matches!(ids, Ids::Local { .. }) {
            *kept = Some(ids);
        }
        Ok(outbox)
    }
}

/// Answers every finished job: its own result, or `failed` for the batch.
fn answer(finished: Vec<Finished>, failed: Option<&DomainError>) {
    for job in finished {
        match job {
            Finished::Work(work) => work.answer(failed),
            Finished::Publish(job, result) => {
                let _ = job.reply.send(settle(result, failed));
            }
            Finished::Send(job, result) => {
                let _ = job.reply.send(settle(result, failed));
            }
        }
    }
}

/// A set-based job's answer: its own error stands; a success stands only
/// if the batch committed.
fn settle<T>(result: Result<T, DomainError>, failed: Option<&DomainError>) -> Result<T, DomainError> {
    match (result, failed) {
        (Ok(_), Some(batch)) => Err(batch.clone()),
        (result, _) => result,
    }
}
