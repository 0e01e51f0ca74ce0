//! Typing indicators: ephemeral, never stored, no event id.
//!
//! `is_typing: true` starts an indicator (one `typing` event) or renews it
//! (no event); without renewal it ends by itself after the expiry (default
//! 5 s) with an `is_typing: false` event. The state lives in this process
//! for one node, or in Redis for a cluster ([`TypingState`]), so that a
//! renewal arriving at another node renews the same indicator. The node that
//! started an indicator keeps the timer that ends it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    domain::{Topic, UserId, chat::Typing, events},
    hub::{Event, Hub},
};

/// Where indicator state lives.
pub enum TypingState {
    /// (conversation, user) → deadline, in this process. A std mutex: map
    /// operations only.
    Local(Mutex<HashMap<(i64, UserId), Instant>>),
    /// A key per indicator in Redis that expires by itself.
    Redis { redis: redis::aio::ConnectionManager, namespace: String },
}

/// What a request did to an indicator.
enum Change {
    /// A new indicator, with its identity (in Redis) for the timer that ends it.
    Started(u64),
    Renewed,
    Stopped,
    Unchanged,
}

/// Who is typing where.
pub struct TypingTracker {
    hub: Arc<Hub>,
    expiry: Duration,
    state: TypingState,
}

impl TypingTracker {
    /// A tracker publishing to `hub`, ending indicators after `expiry`.
    pub fn new(hub: Arc<Hub>, expiry: Duration, state: TypingState) -> Self {
        TypingTracker { hub, expiry, state }
    }

    /// Applies a `typing` request.
    pub async fn update(self: &Arc<Self>, conversation: i64, user: &UserId, is_typing: bool) {
        let change = match self.apply(conversation, user, is_typing).await {
            Ok(change) => change,
            Err(e) => {
                tracing::warn!(error = %e, "typing: state unavailable, indicator not sent");
                return;
            }
        };
        match change {
            Change::Started(token) => {
                self.announce(conversation, user, true);
                let tracker = self.clone();
                let user = user.clone();
                tokio::spawn(async move { tracker.expire(conversation, user, token).await });
            }
            Change::Stopped => self.announce(conversation, user, false),
            Change::Renewed | Change::Unchanged => {}
        }
    }

    async fn apply(&self, conversation: i64, user: &UserId, is_typing: bool) -> redis::RedisResult<Change> {
        match &self.state {
            TypingState::Local(active) => {
                let mut active = active.lock().unwrap_or_else(|p| p.into_inner());
                let key = (conversation, user.clone());
                Ok(match (is_typing, active.contains_key(&key)) {
                    (true, exists) => {
                        active.insert(key, Instant::now() + self.expiry);
                        if exists { Change::Renewed } else { Change::Started(0) }
                    }
                    (false, true) => {
                        active.remove(&key);
                        Change::Stopped
                    }
                    (false, false) => Change::Unchanged,
                })
            }
            TypingState::Redis { redis, namespace } => {
                // The key holds the indicator's identity (a random token).
                // Whoever ends an indicator first, the starting node's timer
                // or an explicit stop, claims `<key>:ended:<token>`; only the
                // claimant announces the end, so it is said exactly once.
                let mut conn = redis.clone();
                let key = redis_key(namespace, conversation, user);
                let ttl = self.expiry.as_millis() as u64;
                if is_typing {
                    let token = rand::random::<u64>();
                    let started: Option<String> = redis::cmd("SET").arg(&key).arg(token).arg("PX").arg(ttl).arg("NX").query_async(&mut conn).await?;
                    if started.is_some() {
                        return Ok(Change::Started(token));
                    }
                    let renewed: i64 = redis::cmd("PEXPIRE").arg(&key).arg(ttl).query_async(&mut conn).await?;
                    Ok(if renewed == 1 { Change::Renewed } else { Change::Unchanged })
                } else {
                    let token: Option<u64> = redis::cmd("GETDEL").arg(&key).query_async(&mut conn).await?;
                    let Some(token) = token else { return Ok(Change::Unchanged) };
                    Ok(if claim_end(&mut conn, &key, token).await? { Change::Stopped } else { Change::Unchanged })
                }
            }
        }
    }

    /// Ends the indicator at its deadline unless renewed (then waits again)
    /// or ended by an explicit stop (then says nothing more).
    async fn expire(self: Arc<Self>, conversation: i64, user: UserId, token: u64) {
        let mut wait = self.expiry;
        loop {
            tokio::time::sleep(wait).await;
            let remaining = match &self.state {
                TypingState::Local(active) => {
                    let mut active = active.lock().unwrap_or_else(|p| p.into_inner());
                    let key = (conversation, user.clone());
                    match active.get(&key).copied() {
                        None => return,
                        Some(deadline) if deadline > Instant::now() => Some(deadline - Instant::now()),
                        Some(_) => {
                            active.remove(&key);
                            None
                        }
                    }
                }
                TypingState::Redis { redis, namespace } => {
                    let key = redis_key(namespace, conversation, &user);
                    let mut conn = redis.clone();
                    let Ok((current, ttl)): redis::RedisResult<(Option<u64>, i64)> = redis::pipe().get(&key).pttl(&key).query_async(&mut conn).await else {
                        return;
                    };
                    match current {
                        Some(current) if current == token && ttl > 0 => Some(Duration::from_millis(ttl as u64)),
                        _ => match claim_end(&mut conn, &key, token).await {
                            Ok(true) => None,
                            _ => return,
                        },
                    }
                }
            };
            match remaining {
                Some(more) => wait = more,
                None => {
                    self.announce(conversation, &user, false);
                    return;
                }
            }
        }
    }

    fn announce(&self, conversation: i64, user: &UserId, is_typing: bool) {
        let data = serde_json::to_string(&Typing { conversation_id: conversation, user_id: user.to_string(), is_typing })
            .expect("typing payloads encode");
        let event = Event::ephemeral(Topic::conversation(conversation), events::TYPING, &data).excluding(user.clone());
        self.hub.publish(vec![Arc::new(event)]);
    }
}

/// Claims the right to announce the end of indicator `token`; true once.
async fn claim_end(conn: &mut redis::aio::ConnectionManager, key: &str, token: u64) -> redis::RedisResult<bool> {
    let claimed: Option<String> = redis::cmd("SET").arg(format!("{key}:ended:{token}")).arg(1).arg("NX").arg("PX").arg(60_000).query_async(conn).await?;
    Ok(claimed.is_some())
}

fn redis_key(namespace: &str, conversation: i64, user: &UserId) -> String {
    format!("{namespace}:typing:{conversation}:{user}")
}
