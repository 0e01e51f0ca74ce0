//! The response body of a stream: a hand-written [`Stream`] that drives the
//! [`Machine`]. Each poll hands out a queued frame if there is one;
//! otherwise it works on the current state: a state that reads polls its
//! read (one boxed future at a time, freed when done), the live state polls
//! the mailbox, which also carries the node's shared heartbeat and its
//! shutdown. An idle stream therefore holds its machine, its mailbox entry
//! and, only while its token has less than a heartbeat left, one timer.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use futures_util::{Stream, future::BoxFuture};
use sea_orm::DbErr;
use tokio::time::{Instant, Sleep};

use super::{
    OpeningTurn, StreamContext, patiently,
    machine::{EXPIRED_FAREWELL, Machine, Page, Phase, Resume, Resumed, SHUTDOWN_FAREWELL},
    reads::{self, FreshRequest, FreshStart, ReplayError, ResumeRequest},
};
use crate::{
    domain::{EventId, UserId},
    hub::{Delivery, Event, Subscription},
    notifications::{UnreadState, unread_state},
    store::event_log::Window,
};

/// What a state's read produced.
enum Read {
    Opened(Result<(Vec<Window>, Resume), DbErr>),
    /// A start read before the memberships: `None` if there are some.
    Started(Result<Option<FreshStart>, DbErr>),
    Fresh(Result<FreshStart, DbErr>),
    Resumed(Result<Resumed, DbErr>),
    Page(Result<Page, ReplayError>),
    Counted(Result<UnreadState, DbErr>),
}

/// One user's open stream.
pub struct SseStream {
    ctx: Arc<StreamContext>,
    machine: Machine,
    subscription: Subscription,
    /// Keeps the user present while the stream is open.
    _online: Box<dyn Send>,
    /// The read the current state is waiting for.
    read: Option<BoxFuture<'static, Read>>,
    /// Events taken from the mailbox, reused between polls.
    batch: Vec<Arc<Event>>,
    /// Armed only when the token expires before the next heartbeat.
    expiry: Option<Pin<Box<Sleep>>>,
    /// The turn to read a starting state, given back after the first count.
    turn: Option<OpeningTurn>,
    /// True until the starting read (fresh or resume) is done: frames wait,
    /// so that the first write carries the `retry` line and the starting
    /// state together (see `server::direct`: the response head waits for
    /// the first frames too), one write and one wake-up of the client
    /// instead of two.
    holding: bool,
    /// Asked for at open: consumed by the opening read.
    resume_from: Option<String>,
    /// A stream without a resume point first asks for its start as if its
    /// user were a member of no conversation, the common case, and reads
    /// its memberships only if that was wrong (see `reads::fresh_states`).
    start_before_memberships: bool,
    /// The log head read before subscribing (see `reads::fresh_state`).
    floor: EventId,
    user: UserId,
    issued_at: u64,
    /// For the `stream closed` log line.
    opened_at: Instant,
}

impl SseStream {
    /// A stream that has subscribed and starts by opening.
    #[allow(clippy::too_many_arguments)]
    pub fn new(ctx: Arc<StreamContext>, machine: Machine, subscription: Subscription, online: Box<dyn Send>, turn: OpeningTurn, resume_from: Option<String>, floor: EventId, user: UserId, issued_at: u64) -> Self {
        let mut stream = SseStream {
            ctx,
            machine,
            subscription,
            _online: online,
            read: None,
            batch: Vec::new(),
            expiry: None,
            turn: Some(turn),
            holding: true,
            start_before_memberships: resume_from.is_none(),
            resume_from,
            floor,
            user,
            issued_at,
            opened_at: Instant::now(),
        };
        stream.arm_expiry();
        stream
    }

    /// Arms the expiry timer if the token expires before the next heartbeat
    /// could notice: until then the shared heartbeat checks the clock.
    fn arm_expiry(&mut self) {
        if self.expiry.is_none() && self.machine.expires <= Instant::now() + self.ctx.settings.heartbeat {
            self.expiry = Some(Box::pin(tokio::time::sleep_until(self.machine.expires)));
        }
    }

    /// The read the current state needs.
    fn start_read(&mut self) -> BoxFuture<'static, Read> {
        let db = self.ctx.db.clone();
        let user = self.user.clone();
        let user_topic = self.machine.windows.user.clone();
        let topics = self.machine.windows.topics.clone();
        match self.machine.phase.clone() {
            Phase::Opening if std::mem::take(&mut self.start_before_memberships) => {
                let starts = self.ctx.starts.clone();
                let request = FreshRequest { viewer: self.machine.announced.viewer.clone(), audience: self.machine.windows.audience(), floor: self.floor, unless_member: true };
                Box::pin(async move { Read::Started(patiently("initial state", || starts.fresh_unless_member(request.clone())).await) })
            }
            Phase::Opening => {
                let raw = self.resume_from.take();
                let starts = self.ctx.starts.clone();
                Box::pin(async move { Read::Opened(patiently("opening", || reads::opening(&starts, &user, raw.as_deref())).await) })
            }
            Phase::Fresh => {
                let starts = self.ctx.starts.clone();
                let request = FreshRequest { viewer: self.machine.announced.viewer.clone(), audience: self.machine.windows.audience(), floor: self.floor, unless_member: false };
                Box::pin(async move { Read::Fresh(patiently("initial state", || starts.fresh(request.clone())).await) })
            }
            Phase::Resuming => {
                let starts = self.ctx.starts.clone();
                let viewer = self.machine.announced.viewer.clone();
                let after = self.machine.cursor.last;
                Box::pin(async move {
                    let request = || ResumeRequest { viewer: viewer.clone(), user_topic: user_topic.clone(), topics: topics.clone(), after };
                    Read::Resumed(patiently("resume", || starts.resume(request())).await)
                })
            }
            Phase::Replay { conflate_upto, first_page } => {
                let after = self.machine.cursor.last;
                let page = self.ctx.settings.replay_page;
                Box::pin(async move {
                    Read::Page(patiently("replay", || reads::replay_page(&db, &user, &user_topic, &topics, after, page, conflate_upto, first_page)).await)
                })
            }
            Phase::Counting => {
                let viewer = self.machine.announced.viewer.clone();
                let topics = self.machine.windows.audience().topics();
                Box::pin(async move { Read::Counted(patiently("unread count", || unread_state(&db, &viewer, &topics)).await) })
            }
            Phase::Live | Phase::Ended => unreachable!("these states read nothing"),
        }
    }

    /// Feeds a finished read to the machine.
    fn finish_read(&mut self, read: Read) {
        if !matches!(read, Read::Opened(Ok(_)) | Read::Started(Ok(None))) {
            self.holding = false;
        }
        match read {
            Read::Opened(Ok((windows, resume))) => {
                for window in &windows {
                    self.subscription.listen(&window.topic);
                }
                self.machine.opened(windows, resume);
            }
            Read::Started(Ok(Some((frames, head, state)))) => {
                self.machine.opened(Vec::new(), Resume::None);
                self.machine.started(frames, head, &state);
                self.turn = None;
            }
            // Memberships after all: read them, listen, start (see above).
            Read::Started(Ok(None)) => {}
            Read::Fresh(Ok((frames, head, state))) => {
                self.machine.started(frames, head, &state);
                self.turn = None;
            }
            Read::Resumed(Ok(resumed)) => {
                self.machine.resumed(resumed);
                if self.machine.phase == Phase::Live {
                    // The stream has its starting state: the next may open.
                    self.turn = None;
                }
            }
            Read::Page(Ok(page)) => {
                // Conversations left during the replay are forgotten by the
                // page's windows; the registry keeps routing them until then.
                self.machine.replayed(page);
            }
            Read::Counted(Ok(state)) => {
                self.machine.counted(&state);
                // The stream has its starting state: the next may open.
                self.turn = None;
            }
            Read::Page(Err(e)) => {
                tracing::info!(error = %e, "stream ended during replay");
                self.machine.end(None);
            }
            Read::Opened(Err(e)) | Read::Started(Err(e)) | Read::Fresh(Err(e)) | Read::Resumed(Err(e)) | Read::Counted(Err(e)) => {
                tracing::warn!(error = %e, "stream ended: a read failed");
                self.machine.end(None);
            }
        }
    }

    /// Hands the machine's counters to the hub's metrics.
    fn flush_tally(&mut self) {
        let tally = std::mem::take(&mut self.machine.tally);
        if tally.delivered > 0 {
            self.subscription.count_delivered(tally.delivered);
        }
        if tally.replayed > 0 {
            self.subscription.count_replayed(tally.replayed);
        }
        for _ in 0..tally.catch_ups {
            self.subscription.count_catch_up();
        }
    }

    /// The live state: what the mailbox brings, or the token's end.
    fn poll_live(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.ctx.shutdown.is_cancelled() {
            self.machine.end(Some(SHUTDOWN_FAREWELL));
            return Poll::Ready(());
        }
        if let Some(expiry) = &mut self.expiry
            && expiry.as_mut().poll(cx).is_ready()
        {
            self.machine.end(Some(EXPIRED_FAREWELL));
            return Poll::Ready(());
        }
        let delivery = ready!(self.subscription.poll_next(cx, &mut self.batch));
        let (revocations, user, issued_at) = (&self.ctx.revocations, &self.user, self.issued_at);
        match delivery {
            Delivery::Events => {
                self.machine.delivered(&mut self.batch, || revocations.is_revoked(user, issued_at));
                for left in std::mem::take(&mut self.machine.left) {
                    self.subscription.forget(&left);
                }
            }
            Delivery::Lagged => self.machine.lagged(revocations.is_revoked(user, issued_at)),
            Delivery::Ping => {
                self.machine.heartbeat(Instant::now());
                self.arm_expiry();
            }
            Delivery::Closed => self.machine.end(Some(SHUTDOWN_FAREWELL)),
        }
        Poll::Ready(())
    }
}

/// A stream's end is logged as an event, not as the close of a span held
/// open for its life (see `http::request_log`); its opening is the
/// request's own log line.
impl Drop for SseStream {
    fn drop(&mut self) {
        tracing::info!(user = %self.user, open_secs = self.opened_at.elapsed().as_secs(), "stream closed");
    }
}

impl Stream for SseStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if !this.holding || this.machine.ended() {
                if let Some(frame) = this.machine.next_frame() {
                    return Poll::Ready(Some(Ok(frame)));
                }
            }
            if this.machine.ended() {
                return Poll::Ready(None);
            }
            if let Some(read) = &mut this.read {
                let done = ready!(read.as_mut().poll(cx));
                this.read = None;
                this.finish_read(done);
                this.flush_tally();
                continue;
            }
            if this.machine.phase == Phase::Live {
                ready!(this.poll_live(cx));
                this.flush_tally();
            } else {
                this.read = Some(this.start_read());
            }
        }
    }
}
