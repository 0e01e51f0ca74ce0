//! Token revocation: `POST /v1/revocations` refuses every token of a user
//! issued before a given instant, on every node, and ends the user's open
//! streams that use such a token.
//!
//! - **Stored** in `revocations` (one row per user, only ever raised),
//!   written through the node's writer, so a restart keeps it.
//! - **Cached** in memory: authentication looks up a map, never the
//!   database. The node that revokes updates its map before it answers 204.
//!   Other nodes learn it through the bus: an ephemeral event on the
//!   internal topic [`Topic`] `sys:revocations`, which every node's watcher
//!   listens to. As a safety net for what the bus may lose (Redis pub/sub is
//!   at-most-once), a cluster node also reloads the table every
//!   [`CLUSTER_RELOAD`], and whenever its watcher's mailbox lagged.
//! - **Streams** end at once: the watcher that learns a revocation hands a
//!   signal event to the user's topic on its own node; each of the user's
//!   streams compares its token's `iat` with the cache and ends if covered.
//! - **Expiry**: a revocation is kept until `before` plus the longest token
//!   lifetime (`TIDINGS_MAX_TOKEN_LIFETIME_SECS`); by then every token it
//!   covers has expired, as long as tokens live no longer than that.
//!
//! Times are whole seconds since the epoch, the unit of JWT claims. A token
//! is covered when its `iat` is strictly before the revocation's time, so
//! a token issued in the same second as `before` is not.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use entity::revocation;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter, Set,
    sea_query::{Expr, OnConflict},
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{
    domain::{DomainError, Topic, UserId},
    hub::{Delivery, Event, Hub, Mailbox},
    writer::Writer,
};

/// How often a cluster node re-reads the table, in case the bus lost a
/// revocation: the longest a lost message can leave a revoked token valid
/// on another node.
pub const CLUSTER_RELOAD: Duration = Duration::from_secs(2);

/// The name of the internal event that carries a revocation between nodes;
/// it never reaches a client.
const EVENT: &str = "revoked";

/// A revocation as it is cached and as it crosses the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Revoked {
    /// Tokens issued (`iat`) before this are refused.
    before: u64,
    /// After this the revocation is dropped: no token it covers is alive.
    expires_at: u64,
}

/// What crosses the bus: one user's revocation.
#[derive(Serialize, Deserialize)]
struct Wire {
    user_id: String,
    #[serde(flatten)]
    revoked: Revoked,
}

/// The node's view of every revocation in force.
pub struct Revocations {
    /// user → revocation. A std `RwLock`: read by every authenticated
    /// request, written only when a revocation arrives, never held across
    /// an await.
    revoked: RwLock<HashMap<UserId, Revoked>>,
    db: DatabaseConnection,
    writer: Arc<Writer>,
    hub: Arc<Hub>,
    /// The longest lifetime of a token: how long a revocation is kept.
    max_token_lifetime: Duration,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

impl Revocations {
    /// Loads the revocations in force from the database.
    pub async fn load(db: DatabaseConnection, writer: Arc<Writer>, hub: Arc<Hub>, max_token_lifetime: Duration) -> Result<Arc<Self>, DbErr> {
        let revocations = Arc::new(Revocations { revoked: RwLock::default(), db, writer, hub, max_token_lifetime });
        revocations.reload().await?;
        Ok(revocations)
    }

    /// Whether a token of `user` issued at `issued_at` (seconds since the
    /// epoch; 0 for a token without `iat`) has been revoked.
    pub fn is_revoked(&self, user: &UserId, issued_at: u64) -> bool {
        let revoked = self.revoked.read().unwrap_or_else(|p| p.into_inner());
        revoked.get(user).is_some_and(|r| issued_at < r.before && now_secs() < r.expires_at)
    }

    /// Revokes every token of `user` issued before `before` (seconds since
    /// the epoch): stored, in force on this node when this returns, and sent
    /// to the other nodes.
    pub async fn revoke(&self, user: UserId, before: u64) -> Result<(), DomainError> {
        let expires_at = before.saturating_add(self.max_token_lifetime.as_secs());
        let revoked = Revoked { before, expires_at };
        let (stored_user, now) = (user.to_string(), now_secs());
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    store(write.conn(), &stored_user, revoked, now).await?;
                    Ok(())
                })
            })
            .await?;
        self.apply(&user, revoked);
        let wire = Wire { user_id: user.to_string(), revoked };
        let data = serde_json::to_string(&wire).expect("revocations encode");
        self.hub.publish(vec![Arc::new(Event::ephemeral(Topic::revocations(), EVENT, &data))]);
        Ok(())
    }

    /// Puts a revocation in force on this node, keeping the later of two for
    /// one user, and signals the user's streams here when it changed.
    fn apply(&self, user: &UserId, revoked: Revoked) {
        let changed = {
            let mut map = self.revoked.write().unwrap_or_else(|p| p.into_inner());
            let entry = map.entry(user.clone()).or_insert(Revoked { before: 0, expires_at: 0 });
            let raised = revoked.before > entry.before;
            entry.before = entry.before.max(revoked.before);
            entry.expires_at = entry.expires_at.max(revoked.expires_at);
            raised
        };
        if changed {
            self.hub.registry().deliver(&[Arc::new(Event::revocation(Topic::user(user)))]);
        }
    }

    /// Re-reads the table: what is in force replaces the cache (expired
    /// entries leave it), and users whose revocation is new here get their
    /// streams signalled.
    async fn reload(&self) -> Result<(), DbErr> {
        let now = now_secs() as i64;
        let rows = revocation::Entity::find().filter(revocation::Column::ExpiresAt.gt(now)).all(&self.db).await?;
        let mut fresh = HashMap::with_capacity(rows.len());
        for row in rows {
            if let Ok(user) = UserId::parse(row.user_id) {
                fresh.insert(user, Revoked { before: row.revoked_before.max(0) as u64, expires_at: row.expires_at.max(0) as u64 });
            }
        }
        let raised: Vec<(UserId, Revoked)> = {
            let cached = self.revoked.read().unwrap_or_else(|p| p.into_inner());
            fresh.iter().filter(|(user, r)| cached.get(*user).is_none_or(|c| r.before > c.before)).map(|(u, r)| (u.clone(), *r)).collect()
        };
        for (user, revoked) in raised {
            self.apply(&user, revoked);
        }
        let mut cached = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        cached.retain(|user, r| fresh.contains_key(user) || now_secs() < r.expires_at);
        Ok(())
    }

    /// Listens for revocations made on other nodes (and, harmlessly, on this
    /// one), and in a cluster (`reload` set) re-reads the table now and then.
    pub fn spawn_watcher(self: Arc<Self>, reload: Option<Duration>, shutdown: CancellationToken) {
        let mailbox = Arc::new(Mailbox::new(1024));
        self.hub.registry().register(&Topic::revocations(), &mailbox);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            let mut every = tokio::time::interval(reload.unwrap_or(Duration::from_secs(3600)));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let reload_now = tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = every.tick(), if reload.is_some() => true,
                    delivery = mailbox.recv(&mut batch) => delivery == Delivery::Lagged,
                };
                for event in batch.drain(..) {
                    match parse(&event.frame) {
                        Some((user, revoked)) => self.apply(&user, revoked),
                        None => tracing::warn!("an unreadable revocation event was ignored"),
                    }
                }
                if reload_now && let Err(e) = self.reload().await {
                    tracing::warn!(error = %e, "could not re-read revocations; keeping the cached ones");
                }
            }
            self.hub.registry().unregister(&Topic::revocations(), &mailbox);
        });
    }
}

/// Reads a revocation back from its frame (`event: revoked\ndata: {...}`).
fn parse(frame: &[u8]) -> Option<(UserId, Revoked)> {
    let text = std::str::from_utf8(frame).ok()?;
    let data = text.lines().find_map(|line| line.strip_prefix("data: "))?;
    let wire: Wire = serde_json::from_str(data).ok()?;
    Some((UserId::parse(wire.user_id).ok()?, wire.revoked))
}

/// Stores a revocation, keeping the later instant when the user already has
/// one (in one statement, so two nodes revoking at once cannot lower it),
/// and drops revocations that have expired.
async fn store(conn: &impl ConnectionTrait, user: &str, revoked: Revoked, now: u64) -> Result<(), DbErr> {
    let later = match conn.get_database_backend() {
        DbBackend::Postgres => "GREATEST",
        _ => "MAX",
    };
    revocation::Entity::insert(revocation::ActiveModel {
        user_id: Set(user.to_owned()),
        revoked_before: Set(revoked.before.min(i64::MAX as u64) as i64),
        expires_at: Set(revoked.expires_at.min(i64::MAX as u64) as i64),
    })
    .on_conflict(
        OnConflict::column(revocation::Column::UserId)
            .value(revocation::Column::RevokedBefore, Expr::cust(format!("{later}(revocations.revoked_before, excluded.revoked_before)")))
            .value(revocation::Column::ExpiresAt, Expr::cust(format!("{later}(revocations.expires_at, excluded.expires_at)")))
            .to_owned(),
    )
    .exec(conn)
    .await?;
    revocation::Entity::delete_many().filter(revocation::Column::ExpiresAt.lte(now as i64)).exec(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_survives_the_trip_through_its_frame() {
        let wire = Wire { user_id: "alice".into(), revoked: Revoked { before: 10, expires_at: 20 } };
        let frame = crate::hub::event::encode_frame(None, EVENT, &serde_json::to_string(&wire).unwrap());
        let (user, revoked) = parse(&frame).unwrap();
        assert_eq!(user.as_str(), "alice");
        assert_eq!(revoked, Revoked { before: 10, expires_at: 20 });
        assert!(parse(b"event: revoked\ndata: [1]\n\n").is_none());
    }
}
