//! Preferences, cached per user and type, so that a publish decides who
//! gets it without a query and without holding the writer.
//!
//! Entries are dropped by the writer's caller right after a preference
//! change commits. A lookup that raced with a change is not cached: each
//! load notes the cache's generation before it reads, and stores its result
//! only if no change happened meanwhile. In a cluster another node may
//! change a preference, so entries also expire after a short time there.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, DbErr};

use crate::{
    domain::{UserId, preference::Preference},
    store::preferences,
};

/// Beyond this many entries the cache starts over rather than grow.
const MAX_ENTRIES: usize = 200_000;

/// The cache. `None` in an entry means "never set": the operator's default.
pub struct PreferenceCache {
    inner: Mutex<Inner>,
    /// How long an entry is trusted; `None` when this node sees every change.
    ttl: Option<Duration>,
}

#[derive(Default)]
struct Inner {
    /// Bumped by every invalidation; see the module documentation.
    generation: u64,
    entries: HashMap<(String, String), (Option<Preference>, Instant)>,
}

impl PreferenceCache {
    /// A cache whose entries live `ttl` (forever with `None`).
    pub fn new(ttl: Option<Duration>) -> Self {
        PreferenceCache { inner: Mutex::new(Inner::default()), ttl }
    }

    /// The stored preference of each of `users` for `kind`, by user id
    /// (absent: never set).
    pub async fn for_type(&self, conn: &impl ConnectionTrait, users: &[UserId], kind: &str) -> Result<HashMap<String, Preference>, DbErr> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        let generation = {
            let inner = self.inner.lock().expect("preference cache lock");
            for user in users {
                match inner.entries.get(&(user.as_str().to_owned(), kind.to_owned())) {
                    Some((pref, at)) if self.ttl.is_none_or(|ttl| at.elapsed() < ttl) => {
                        if let Some(pref) = pref {
                            found.insert(user.as_str().to_owned(), pref.clone());
                        }
                    }
                    _ => missing.push(user.as_str()),
                }
            }
            inner.generation
        };
        if missing.is_empty() {
            return Ok(found);
        }
        let mut loaded: HashMap<String, Preference> = HashMap::new();
        for chunk in missing.chunks(500) {
            for row in preferences::for_type(conn, chunk, kind).await? {
                loaded.insert(row.user_id.clone(), Preference::from(row));
            }
        }
        let mut inner = self.inner.lock().expect("preference cache lock");
        if inner.generation == generation {
            if inner.entries.len() + missing.len() > MAX_ENTRIES {
                inner.entries.clear();
            }
            let now = Instant::now();
            for user in &missing {
                inner.entries.insert(((*user).to_owned(), kind.to_owned()), (loaded.get(*user).cloned(), now));
            }
        }
        found.extend(loaded);
        Ok(found)
    }

    /// Forgets `user`'s preference for `kind`: called after it changed.
    pub fn invalidate(&self, user: &UserId, kind: &str) {
        let mut inner = self.inner.lock().expect("preference cache lock");
        inner.generation += 1;
        inner.entries.remove(&(user.as_str().to_owned(), kind.to_owned()));
    }
}
