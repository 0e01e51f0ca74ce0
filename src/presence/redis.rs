//! Presence shared by every node through Redis.
//!
//! Each node holds a lease per user with open streams on it (a sorted set of
//! nodes per user, scored by lease expiry), renewed by a heartbeat. A user is
//! online while any lease is live. When a user's last stream on a node
//! closes, that node drops its lease after the grace period; when a node
//! dies, its leases run out and whichever node's sweeper removes them first
//! re-evaluates the user. Announcements are deduplicated cluster-wide with an
//! atomic `SET ... GET` of the last announced status, so contacts hear each
//! change once, whichever node noticed it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use super::{Announcer, Presence, PresenceView, Status, Visibility};
use crate::{
    domain::{UserId, notification::truncate_to_millis},
    hub::Hub,
    shared_redis,
};

/// How long a lease lives without renewal; heartbeats come at a third of it.
const LEASE: Duration = Duration::from_secs(30);

/// Leases renewed per round trip to Redis (see [`Inner::renew`]).
const RENEWED_TOGETHER: usize = 500;

/// Presence in Redis.
pub struct RedisPresence {
    inner: Arc<Inner>,
}

struct Inner {
    redis: ConnectionManager,
    namespace: String,
    node: String,
    /// Tells the users who may see them of changes.
    announcer: Announcer,
    grace: Duration,
    /// Streams per user on this node, and a generation bumped on connect so
    /// a pending "gone after grace" sees a reconnect. A std mutex: map
    /// operations only.
    local: Mutex<HashMap<UserId, (usize, u64)>>,
}

impl RedisPresence {
    /// Presence through the Redis at `url`; starts the heartbeat and sweeper.
    pub fn start(
        url: &str,
        namespace: &str,
        db: DatabaseConnection,
        visibility: Visibility,
        hub: Arc<Hub>,
        grace: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let inner = Arc::new(Inner {
            redis: shared_redis::connect(url)?,
            namespace: namespace.to_owned(),
            node: format!("{:016x}", rand::random::<u64>()),
            announcer: Announcer::spawn(db, visibility, hub),
            grace,
            local: Mutex::new(HashMap::new()),
        });
        tokio::spawn(inner.clone().heartbeat(shutdown));
        Ok(RedisPresence { inner })
    }
}

/// Marks a stream closed when dropped.
struct Connection {
    inner: Arc<Inner>,
    user: UserId,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let generation = {
            let mut local = self.inner.local.lock().unwrap_or_else(|p| p.into_inner());
            let Some(entry) = local.get_mut(&self.user) else { return };
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 > 0 {
                return;
            }
            entry.1
        };
        let (inner, user) = (self.inner.clone(), self.user.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(inner.grace).await;
                {
                    let mut local = inner.local.lock().unwrap_or_else(|p| p.into_inner());
                    match local.get(&user) {
                        Some(&(0, current)) if current == generation => {
                            local.remove(&user);
                        }
                        _ => return,
                    }
                }
                if let Err(e) = inner.release(&user).await {
                    tracing::warn!(error = %e, "presence: could not release a lease");
                }
                inner.evaluate(&user).await;
            });
        }
    }
}

impl Inner {
    fn key(&self, user: &UserId, part: &str) -> String {
        format!("{}:presence:{}:{}", self.namespace, part, user)
    }

    fn leases_key(&self) -> String {
        format!("{}:presence:leases", self.namespace)
    }

    /// A handle on the shared connection (it reconnects by itself).
    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        Ok(self.redis.clone())
    }

    fn now_ms() -> i64 {
        Utc::now().timestamp_millis()
    }

    /// The member of the leases' set that says "this node holds `user`":
    /// `sweep` splits it back at the first `|` (node names hold none).
    fn lease_member(&self, user: &UserId) -> String {
        format!("{}|{}", self.node, user)
    }

    /// Takes or renews this node's lease on `user`.
    async fn lease(&self, user: &UserId) -> redis::RedisResult<()> {
        self.renew(std::slice::from_ref(user)).await
    }

    /// Renews this node's leases on `users` in one round trip: a node with
    /// 17,000 users online would otherwise send 17,000 pipelines every
    /// heartbeat, a burst of wakeups on the node and of commands on Redis
    /// that delays whatever else waits on either (the cross-node doorbell
    /// among them).
    async fn renew(&self, users: &[UserId]) -> redis::RedisResult<()> {
        let mut conn = self.connection().await?;
        let expiry = Self::now_ms() + LEASE.as_millis() as i64;
        let mut pipe = redis::pipe();
        let leases: Vec<(i64, String)> = users.iter().map(|user| (expiry, self.lease_member(user))).collect();
        pipe.zadd_multiple(self.leases_key(), &leases).ignore();
        for user in users {
            pipe.zadd(self.key(user, "nodes"), &self.node, expiry).ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    }

    /// Drops this node's lease on `user`.
    async fn release(&self, user: &UserId) -> redis::RedisResult<()> {
        let mut conn = self.connection().await?;
        redis::pipe()
            .zrem(self.key(user, "nodes"), &self.node)
            .ignore()
            .zrem(self.leases_key(), self.lease_member(user))
            .ignore()
            .query_async::<()>(&mut conn)
            .await
    }

    /// The user's presence as the cluster sees it.
    async fn view(&self, user: &UserId) -> redis::RedisResult<PresenceView> {
        let mut conn = self.connection().await?;
        let (live, chosen, last_seen): (i64, Option<String>, Option<String>) = redis::pipe()
            .zcount(self.key(user, "nodes"), Self::now_ms(), "+inf")
            .hget(self.key(user, "state"), "status")
            .hget(self.key(user, "state"), "last_seen_at")
            .query_async(&mut conn)
            .await?;
        let chosen = chosen.and_then(|s| serde_json::from_str::<Status>(&format!("\"{s}\"")).ok());
        let status = if live > 0 { chosen.unwrap_or(Status::Online) } else { Status::Offline };
        let last_seen_at = last_seen.and_then(|s| DateTime::parse_from_rfc3339(&s).ok()).map(|t| t.with_timezone(&Utc));
        Ok(PresenceView { user_id: user.to_string(), status, last_seen_at })
    }

    /// Announces the user's presence if it differs from the last announced.
    async fn evaluate(&self, user: &UserId) {
        if let Err(e) = self.try_evaluate(user).await {
            tracing::warn!(error = %e, "presence: Redis unavailable, change not announced");
        }
    }

    async fn try_evaluate(&self, user: &UserId) -> redis::RedisResult<()> {
        let mut view = self.view(user).await?;
        let status = serde_json::to_value(view.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let mut conn = self.connection().await?;
        let previous: Option<String> = redis::cmd("SET").arg(self.key(user, "announced")).arg(&status).arg("GET").query_async(&mut conn).await?;
        if previous.as_deref() == Some(status.as_str()) {
            return Ok(());
        }
        if view.status == Status::Offline {
            let now = truncate_to_millis(Utc::now());
            let stamp = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            redis::cmd("HSET").arg(self.key(user, "state")).arg("last_seen_at").arg(stamp).query_async::<()>(&mut conn).await?;
            view.last_seen_at = Some(now);
        }
        self.announcer.announce(view).await;
        Ok(())
    }

    /// Renews this node's leases and sweeps leases of dead nodes.
    async fn heartbeat(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(LEASE / 3);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let users: Vec<UserId> = {
                let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
                local.iter().filter(|(_, (streams, _))| *streams > 0).map(|(user, _)| user.clone()).collect()
            };
            for chunk in users.chunks(RENEWED_TOGETHER) {
                if let Err(e) = self.renew(chunk).await {
                    tracing::debug!(error = %e, "presence: leases not renewed");
                    break;
                }
            }
            if let Err(e) = self.sweep().await {
                tracing::debug!(error = %e, "presence: sweep skipped");
            }
        }
    }

    /// Removes expired leases; the node whose `ZREM` succeeds re-evaluates.
    async fn sweep(&self) -> redis::RedisResult<()> {
        let mut conn = self.connection().await?;
        let expired: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.leases_key())
            .arg("-inf")
            .arg(Self::now_ms())
            .arg("LIMIT")
            .arg(0)
            .arg(500)
            .query_async(&mut conn)
            .await?;
        for lease in expired {
            let removed: i64 = redis::cmd("ZREM").arg(self.leases_key()).arg(&lease).query_async(&mut conn).await?;
            let Some((node, user)) = lease.split_once('|') else { continue };
            let Ok(user) = UserId::parse(user) else { continue };
            if removed == 1 {
                redis::cmd("ZREM").arg(self.key(&user, "nodes")).arg(node).query_async::<()>(&mut conn).await?;
                self.evaluate(&user).await;
            }
        }
        Ok(())
    }
}

impl Presence for RedisPresence {
    fn connected(&self, user: &UserId) -> Box<dyn Send> {
        let first = {
            let mut local = self.inner.local.lock().unwrap_or_else(|p| p.into_inner());
            let entry = local.entry(user.clone()).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += 1;
            entry.0 == 1
        };
        if first {
            let (inner, user) = (self.inner.clone(), user.clone());
            tokio::spawn(async move {
                if let Err(e) = inner.lease(&user).await {
                    tracing::warn!(error = %e, "presence: could not take a lease");
                }
                inner.evaluate(&user).await;
            });
        }
        Box::new(Connection { inner: self.inner.clone(), user: user.clone() })
    }

    fn set_status(&self, user: &UserId, status: Status) {
        let (inner, user) = (self.inner.clone(), user.clone());
        tokio::spawn(async move {
            let stored = async {
                let mut conn = inner.connection().await?;
                let key = inner.key(&user, "state");
                match status {
                    Status::Online => redis::cmd("HDEL").arg(key).arg("status").query_async::<()>(&mut conn).await,
                    other => {
                        let name = serde_json::to_value(other).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                        redis::cmd("HSET").arg(key).arg("status").arg(name).query_async::<()>(&mut conn).await
                    }
                }
            };
            if let Err(e) = stored.await {
                tracing::warn!(error = %e, "presence: status not stored");
                return;
            }
            inner.evaluate(&user).await;
        });
    }

    /// A stream on this node, or a live lease of any node. A lease outlives
    /// its node's last stream by the grace period, so in a cluster a user
    /// counts as connected that much longer; if Redis cannot answer, the
    /// user counts as not connected (a push too many beats a lost one).
    fn has_open_stream<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let here = self.inner.local.lock().unwrap_or_else(|p| p.into_inner()).get(user).is_some_and(|(streams, _)| *streams > 0);
            if here {
                return true;
            }
            let live = async {
                let mut conn = self.inner.connection().await?;
                redis::cmd("ZCOUNT").arg(self.inner.key(user, "nodes")).arg(Inner::now_ms()).arg("+inf").query_async::<i64>(&mut conn).await
            };
            live.await.is_ok_and(|n| n > 0)
        })
    }

    fn get<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, Vec<PresenceView>> {
        Box::pin(async move {
            let mut views = Vec::with_capacity(users.len());
            for user in users {
                match self.inner.view(user).await {
                    Ok(view) => views.push(view),
                    Err(_) => {
                        views.push(PresenceView { user_id: user.to_string(), status: Status::Offline, last_seen_at: None });
                    }
                }
            }
            views
        })
    }
}
