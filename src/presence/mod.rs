//! Presence: who is online, away, busy or offline, and since when.
//!
//! A user with an open stream is `online` unless they chose `away`, `busy`
//! or `offline` (invisible). When their last stream closes they turn
//! `offline` after a grace period (default 10 s) with `last_seen_at` set; a
//! reconnect within it changes nothing, so a flaky network does not flap.
//! Changes go as `presence` events to the users allowed to see them, and
//! `GET /v1/presence` answers for the same users: by default everyone who
//! shares a conversation; with [`Visibility::Contacts`], only users who have
//! both written in a conversation they share (creating a conversation with
//! someone is not enough to watch them).
//!
//! [`Presence`] is the seam: [`LocalPresence`] keeps the state in this
//! process (one node); [`redis::RedisPresence`] keeps it in Redis with
//! expiring leases renewed by heartbeats, so a user online on any node is
//! online, and turns offline when their last stream on any node closes, or
//! when the node holding it dies and its lease runs out.

pub mod redis;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};

use crate::{
    coalesce::Coalescer,
    domain::{Topic, UserId, events, notification::{rfc3339, truncate_to_millis}},
    hub::{Event, Hub},
    store::chat,
};

/// Who sees a user's presence (`TIDINGS_PRESENCE_VISIBILITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Visibility {
    /// Everyone who shares a conversation with the user.
    #[default]
    Conversations,
    /// Only users who share a conversation in which both have sent a
    /// message: anyone can start a conversation with anyone, so sharing one
    /// proves no acquaintance; an exchange does.
    Contacts,
}

/// The users who may see `user`'s presence (not `user`).
pub async fn watchers(db: &DatabaseConnection, user: &UserId, visibility: Visibility) -> Result<Vec<String>, sea_orm::DbErr> {
    match visibility {
        Visibility::Conversations => chat::contacts(db, user).await,
        Visibility::Contacts => chat::correspondents(db, user).await,
    }
}

/// A presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Online,
    Away,
    Busy,
    Offline,
}

/// A user's presence as others see it: the `presence` event's data and an
/// item of `GET /v1/presence`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PresenceView {
    pub user_id: String,
    pub status: Status,
    #[serde(with = "rfc3339::option")]
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// The seam between presence and where its state lives.
pub trait Presence: Send + Sync + 'static {
    /// A stream of `user` opened; dropping the returned guard closes it.
    fn connected(&self, user: &UserId) -> Box<dyn Send>;
    /// The user chose a status.
    fn set_status(&self, user: &UserId, status: Status);
    /// The presence of `users` now.
    fn get<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, Vec<PresenceView>>;
    /// Whether `user` has a stream open now, whatever the status they
    /// chose: Web Push skips users the page reaches already.
    fn has_open_stream<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, bool>;
}

/// Presence kept in this process.
pub struct LocalPresence {
    inner: Arc<Inner>,
}

struct Inner {
    /// Tells the users who may see them of changes.
    announcer: Announcer,
    grace: Duration,
    /// A std mutex: held for map operations only.
    users: Mutex<HashMap<UserId, UserState>>,
    /// When offline users were last forgotten (see [`forget_offline`]).
    last_sweep: Mutex<std::time::Instant>,
}

/// How long an offline user's `last_seen_at` is remembered on a single
/// node. Without a bound the map would hold every user ever seen; after
/// this a read says `offline` with `last_seen_at` null.
pub const REMEMBER_OFFLINE: Duration = Duration::from_secs(3600);

/// How often the map is swept for users to forget.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Drops users who are offline (no stream, not lingering) and were last
/// seen before `cutoff`: the map then holds the connected and the recently
/// seen, not everyone ever seen. Returns how many were dropped.
fn forget_offline(users: &mut HashMap<UserId, UserState>, cutoff: DateTime<Utc>) -> usize {
    let before = users.len();
    users.retain(|_, state| state.streams > 0 || state.lingering || state.last_seen_at.is_none_or(|seen| seen > cutoff));
    before - users.len()
}

#[derive(Default)]
struct UserState {
    streams: usize,
    /// What the user chose; `None` is the default (online while connected).
    chosen: Option<Status>,
    last_seen_at: Option<DateTime<Utc>>,
    /// What the user's contacts were last told.
    announced: Option<Status>,
    /// The last stream closed and the grace period has not yet passed: the
    /// user still counts as connected, so that a read agrees with the
    /// events (none is sent until the grace period ends) and with
    /// [`redis::RedisPresence`], whose lease lives on as long.
    lingering: bool,
    /// Bumped on every connect, so a pending "offline after grace" can see
    /// that the user came back.
    generation: u64,
}

impl UserState {
    fn effective(&self) -> Status {
        if self.streams == 0 && !self.lingering {
            Status::Offline
        } else {
            self.chosen.unwrap_or(Status::Online)
        }
    }
}

impl LocalPresence {
    /// Presence publishing to `hub`, finding who may see it in `db`.
    pub fn new(db: DatabaseConnection, visibility: Visibility, hub: Arc<Hub>, grace: Duration) -> Self {
        LocalPresence {
            inner: Arc::new(Inner { announcer: Announcer::spawn(db, visibility, hub), grace, users: Mutex::new(HashMap::new()), last_sweep: Mutex::new(std::time::Instant::now()) }),
        }
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
            let mut users = self.inner.users.lock().unwrap_or_else(|p| p.into_inner());
            let state = users.entry(self.user.clone()).or_default();
            state.streams = state.streams.saturating_sub(1);
            if state.streams > 0 {
                return;
            }
            state.lingering = true;
            state.generation
        };
        let inner = self.inner.clone();
        let user = self.user.clone();
        // The task needs a runtime; at process exit there may be none left.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(inner.grace).await;
                let view = {
                    let mut users = inner.users.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(state) = users.get_mut(&user) else { return };
                    if state.streams > 0 || state.generation != generation {
                        return;
                    }
                    state.lingering = false;
                    state.last_seen_at = Some(truncate_to_millis(Utc::now()));
                    let view = inner.change(&user, state);
                    inner.sweep(&mut users);
                    view
                };
                if let Some(view) = view {
                    inner.announce(view).await;
                }
            });
        }
    }
}

impl Inner {
    /// Forgets long-offline users, at most once a [`SWEEP_EVERY`].
    fn sweep(&self, users: &mut HashMap<UserId, UserState>) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() < SWEEP_EVERY {
            return;
        }
        *last = std::time::Instant::now();
        let cutoff = Utc::now() - chrono::Duration::from_std(REMEMBER_OFFLINE).unwrap_or(chrono::Duration::MAX);
        forget_offline(users, cutoff);
    }

    /// Records what contacts are told; `Some` when it differs from before.
    fn change(&self, user: &UserId, state: &mut UserState) -> Option<PresenceView> {
        let now = state.effective();
        if state.announced == Some(now) {
            return None;
        }
        state.announced = Some(now);
        Some(PresenceView { user_id: user.to_string(), status: now, last_seen_at: state.last_seen_at })
    }

    async fn announce(&self, view: PresenceView) {
        self.announcer.announce(view).await;
    }
}

/// Sends `presence` events to the users who may see each change, in the
/// order the changes were made. Changes made together (a surge of streams
/// opening or closing) read their audiences together: a statement or two
/// per batch, not per change (see `crate::coalesce`). One batch runs at a
/// time, so a user's `online` and `offline` go out in the order they
/// happened.
pub struct Announcer {
    changes: Coalescer<PresenceView, ()>,
}

impl Announcer {
    /// Starts the announcer on the current runtime.
    pub fn spawn(db: DatabaseConnection, visibility: Visibility, hub: Arc<Hub>) -> Self {
        let changes = Coalescer::spawn(ANNOUNCED_TOGETHER, 1, move |views: Vec<PresenceView>| {
            let (db, hub) = (db.clone(), hub.clone());
            async move {
                let count = views.len();
                announce(&db, visibility, &hub, views).await;
                vec![(); count]
            }
        });
        Announcer { changes }
    }

    /// Announces `view` and waits until it has been handed to the hub.
    pub async fn announce(&self, view: PresenceView) {
        self.changes.call(view).await;
    }
}

/// Presence changes announced in one batch, at most.
const ANNOUNCED_TOGETHER: usize = 256;

/// Sends each of `views` as a `presence` event to every user who may see it.
async fn announce(db: &DatabaseConnection, visibility: Visibility, hub: &Hub, views: Vec<PresenceView>) {
    let subjects: Vec<&str> = views.iter().map(|view| view.user_id.as_str()).collect();
    let watchers = match watchers_of_many(db, &subjects, visibility).await {
        Ok(watchers) => watchers,
        Err(e) => {
            tracing::warn!(error = %e, changes = views.len(), "presence not announced: contacts unavailable");
            return;
        }
    };
    let mut events = Vec::new();
    for view in &views {
        let data = serde_json::to_string(view).expect("presence payloads encode");
        events.extend(
            watchers
                .get(&view.user_id)
                .into_iter()
                .flatten()
                .filter_map(|contact| UserId::parse(contact.clone()).ok())
                .map(|contact| Arc::new(Event::ephemeral(Topic::user(&contact), events::PRESENCE, &data))),
        );
    }
    if !events.is_empty() {
        hub.publish(events);
    }
}

/// [`watchers`] of each of `users`.
async fn watchers_of_many(db: &DatabaseConnection, users: &[&str], visibility: Visibility) -> Result<HashMap<String, Vec<String>>, sea_orm::DbErr> {
    match visibility {
        Visibility::Conversations => chat::contacts_of_many(db, users).await,
        Visibility::Contacts => {
            let mut found = HashMap::with_capacity(users.len());
            for user in users {
                let Ok(id) = UserId::parse((*user).to_owned()) else { continue };
                found.insert((*user).to_owned(), chat::correspondents(db, &id).await?);
            }
            Ok(found)
        }
    }
}

impl Presence for LocalPresence {
    fn connected(&self, user: &UserId) -> Box<dyn Send> {
        let view = {
            let mut users = self.inner.users.lock().unwrap_or_else(|p| p.into_inner());
            let state = users.entry(user.clone()).or_default();
            state.streams += 1;
            state.generation += 1;
            self.inner.change(user, state)
        };
        if let Some(view) = view {
            let inner = self.inner.clone();
            tokio::spawn(async move { inner.announce(view).await });
        }
        Box::new(Connection { inner: self.inner.clone(), user: user.clone() })
    }

    fn set_status(&self, user: &UserId, status: Status) {
        let view = {
            let mut users = self.inner.users.lock().unwrap_or_else(|p| p.into_inner());
            let state = users.entry(user.clone()).or_default();
            state.chosen = (status != Status::Online).then_some(status);
            self.inner.change(user, state)
        };
        if let Some(view) = view {
            let inner = self.inner.clone();
            tokio::spawn(async move { inner.announce(view).await });
        }
    }

    fn get<'a>(&'a self, users: &'a [UserId]) -> BoxFuture<'a, Vec<PresenceView>> {
        let known = self.inner.users.lock().unwrap_or_else(|p| p.into_inner());
        let views = users
            .iter()
            .map(|user| match known.get(user) {
                Some(state) => PresenceView { user_id: user.to_string(), status: state.effective(), last_seen_at: state.last_seen_at },
                None => PresenceView { user_id: user.to_string(), status: Status::Offline, last_seen_at: None },
            })
            .collect();
        Box::pin(std::future::ready(views))
    }

    fn has_open_stream<'a>(&'a self, user: &'a UserId) -> BoxFuture<'a, bool> {
        let open = self.inner.users.lock().unwrap_or_else(|p| p.into_inner()).get(user).is_some_and(|state| state.streams > 0);
        Box::pin(std::future::ready(open))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_forgets_long_offline_users_and_keeps_the_connected_and_recently_seen() {
        let now = Utc::now();
        let mut users = HashMap::new();
        let user = |name: &str| UserId::parse(name.to_owned()).unwrap();
        users.insert(user("connected"), UserState { streams: 1, last_seen_at: Some(now - chrono::Duration::hours(5)), ..Default::default() });
        users.insert(user("lingering"), UserState { lingering: true, ..Default::default() });
        users.insert(user("recent"), UserState { last_seen_at: Some(now - chrono::Duration::minutes(5)), ..Default::default() });
        users.insert(user("gone"), UserState { last_seen_at: Some(now - chrono::Duration::hours(2)), ..Default::default() });
        let dropped = forget_offline(&mut users, now - chrono::Duration::hours(1));
        assert_eq!(dropped, 1);
        assert!(!users.contains_key(&user("gone")));
        assert_eq!(users.len(), 3);
    }
}
