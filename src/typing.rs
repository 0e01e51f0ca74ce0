//! Typing indicators: ephemeral, never stored, no event id.
//!
//! `is_typing: true` starts an indicator (one `typing` event) or renews it
//! (no event); without renewal it ends by itself after the expiry (default
//! 5 s) with an `is_typing: false` event. The state is in this process; with
//! several nodes it moves behind the same seam as presence.

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

/// Who is typing where, and until when.
pub struct TypingTracker {
    hub: Arc<Hub>,
    expiry: Duration,
    /// (conversation, user) → (deadline, generation). A std mutex: held for
    /// map operations only.
    active: Mutex<HashMap<(i64, UserId), (Instant, u64)>>,
    generations: std::sync::atomic::AtomicU64,
}

impl TypingTracker {
    /// A tracker publishing to `hub`, ending indicators after `expiry`.
    pub fn new(hub: Arc<Hub>, expiry: Duration) -> Self {
        TypingTracker { hub, expiry, active: Mutex::new(HashMap::new()), generations: Default::default() }
    }

    /// Applies a `typing` request.
    pub fn update(self: &Arc<Self>, conversation: i64, user: &UserId, is_typing: bool) {
        let key = (conversation, user.clone());
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if is_typing {
            let deadline = Instant::now() + self.expiry;
            if let Some(entry) = active.get_mut(&key) {
                entry.0 = deadline;
                return;
            }
            let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            active.insert(key, (deadline, generation));
            drop(active);
            self.announce(conversation, user, true);
            let tracker = self.clone();
            let user = user.clone();
            tokio::spawn(async move { tracker.expire(conversation, user, generation, deadline).await });
        } else if active.remove(&key).is_some() {
            drop(active);
            self.announce(conversation, user, false);
        }
    }

    /// Ends the indicator at its deadline unless it was renewed or replaced.
    async fn expire(self: Arc<Self>, conversation: i64, user: UserId, generation: u64, mut deadline: Instant) {
        let key = (conversation, user);
        loop {
            tokio::time::sleep_until(deadline).await;
            let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
            match active.get(&key) {
                Some(&(current, entry_generation)) if entry_generation == generation => {
                    if current > Instant::now() {
                        deadline = current;
                        continue;
                    }
                    active.remove(&key);
                    drop(active);
                    self.announce(conversation, &key.1, false);
                    return;
                }
                _ => return,
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
