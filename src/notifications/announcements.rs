//! Announcements: one notification for a whole audience (`all`, or the
//! readers of a topic), stored once.
//!
//! Whether an announcement is a given user's depends on the token they
//! present (a topic's readers are judged by their token's patterns), so it
//! is decided when it is shown, by a [`Viewer`]: in lists, counts and on
//! the stream. A user's read, click and delete are marks written only when
//! they act (`store::announcements`). The unread count a user sees is their
//! own counter plus the announcements they have not read, which is why a
//! stream adds its own unread announcements to every shared count it sends.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr};

use crate::{
    auth::{PUBLISH_SCOPE, Principal},
    domain::{
        UserId,
        notification::{Audience, Notification},
    },
    hub::Announced,
    store::{announcements::{self as rows, Seen}, preferences},
    topics::TopicAccess,
};

/// Who is looking at announcements: a user with the topics their token
/// may read. Cheap to clone; a stream keeps one for its life.
#[derive(Debug, Clone)]
pub struct Viewer {
    user: UserId,
    /// Publishers may read every topic, and so are in every audience.
    publisher: bool,
    /// The token's `topics` patterns.
    patterns: Arc<[String]>,
    /// The operator's public topics.
    public: Arc<[String]>,
}

impl Viewer {
    /// The viewer a verified token makes.
    pub fn new(principal: &Principal, access: &TopicAccess) -> Self {
        Viewer {
            user: principal.user.clone(),
            publisher: principal.has_scope(PUBLISH_SCOPE),
            patterns: principal.topics.clone().into(),
            public: access.public.clone().into(),
        }
    }

    /// The user alone, with no token to judge topics by: a signed link in
    /// a mail acts on the user's own notifications only.
    pub fn of_user(user: UserId) -> Self {
        Viewer { user, publisher: false, patterns: Arc::from(Vec::new()), public: Arc::from(Vec::new()) }
    }

    /// The user.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// Whether this viewer is in `audience`.
    pub fn covers(&self, audience: &Audience) -> bool {
        match audience {
            Audience::All => true,
            Audience::Topic(name) => {
                self.publisher || self.patterns.iter().chain(self.public.iter()).any(|p| crate::domain::topic::pattern_matches(p, name.as_str()))
            }
        }
    }

    /// Whether a live announcement reaches this viewer, given the types
    /// their preferences turn off.
    pub fn shows(&self, announced: &Announced, hidden: &[String]) -> bool {
        self.covers(&announced.audience) && (announced.critical || !hidden.iter().any(|k| *k == announced.kind))
    }
}

/// The announcement facts of a stored row, as streams judge them.
pub fn announced(row: &entity::announcement::Model) -> Announced {
    Announced {
        id: row.id,
        audience: Audience::from_stored(row.audience_topic.as_deref()),
        kind: row.kind.clone(),
        critical: row.critical,
        expires_at: row.expires_at,
    }
}

/// The notification object of an announcement, with this user's `read_at`.
pub fn notification(row: &entity::announcement::Model, read_at: Option<DateTime<Utc>>) -> Notification {
    Notification {
        id: row.id,
        user_id: None,
        kind: row.kind.clone(),
        title: row.title.clone(),
        body: row.body.clone(),
        data: row.data.as_deref().and_then(|json| serde_json::from_str(json).ok()),
        action_url: row.action_url.clone(),
        group_key: row.group_key.clone(),
        count: row.count,
        created_at: row.created_at,
        updated_at: row.updated_at,
        expires_at: row.expires_at,
        read_at,
        audience: Some(Audience::from_stored(row.audience_topic.as_deref()).view()),
        critical: row.critical,
        email_due_at: None,
    }
}

/// The announcements `viewer` sees at `now` (live, in their audience, not
/// hidden by their preferences, not deleted by them), newest first, and
/// the types their preferences hide (read only when some are live).
pub async fn visible(conn: &impl ConnectionTrait, viewer: &Viewer, now: DateTime<Utc>) -> Result<(Vec<Seen>, Vec<String>), DbErr> {
    let live = rows::live_for(conn, viewer.user(), now).await?;
    if live.is_empty() {
        return Ok((live, Vec::new()));
    }
    let hidden = preferences::hidden_types(conn, viewer.user()).await?;
    let shown = live.into_iter().filter(|seen| !seen.deleted() && viewer.shows(&announced(&seen.row), &hidden)).collect();
    Ok((shown, hidden))
}

/// The announcements `viewer` sees and has not read, given the types their
/// preferences hide, newest first: what a stream, which keeps those types
/// for its life, reads.
pub async fn unread_given(conn: &impl ConnectionTrait, viewer: &Viewer, hidden: &[String], now: DateTime<Utc>) -> Result<Vec<Seen>, DbErr> {
    let live = rows::live_for(conn, viewer.user(), now).await?;
    Ok(live
        .into_iter()
        .filter(|seen| !seen.deleted() && seen.read_at().is_none() && viewer.shows(&announced(&seen.row), hidden))
        .collect())
}

/// The announcements `viewer` sees and has not read, newest first.
pub async fn unread(conn: &impl ConnectionTrait, viewer: &Viewer, now: DateTime<Utc>) -> Result<(Vec<Seen>, Vec<String>), DbErr> {
    let (shown, hidden) = visible(conn, viewer, now).await?;
    Ok((shown.into_iter().filter(|seen| seen.read_at().is_none()).collect(), hidden))
}

/// One announcement as `viewer` may act on it: `None` when it is not theirs
/// to see (another audience, expired, hidden, deleted), exactly as if it
/// did not exist.
pub async fn find(conn: &impl ConnectionTrait, viewer: &Viewer, id: i64, now: DateTime<Utc>) -> Result<Option<Seen>, DbErr> {
    let Some(seen) = rows::find_for(conn, viewer.user(), id).await? else {
        return Ok(None);
    };
    if seen.deleted() || seen.row.expires_at.is_some_and(|at| at <= now) {
        return Ok(None);
    }
    let hidden = preferences::hidden_types(conn, viewer.user()).await?;
    Ok(viewer.shows(&announced(&seen.row), &hidden).then_some(seen))
}

/// Deliveries of announcements to streams, counted in memory and added to
/// the rows every few seconds: the statistics' `sent` for an announcement
/// (what its audience was shown), without a write per delivery. A user
/// with two tabs counts twice, as two deliveries; a node that crashes
/// loses its last few seconds of counts, never a notification.
#[derive(Default)]
pub struct SeenTally {
    /// std mutex: one map increment per delivery, never held across await.
    counts: Mutex<HashMap<i64, i64>>,
}

impl SeenTally {
    /// Counts one delivery of announcement `id`.
    pub fn count(&self, id: i64) {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default() += 1;
    }

    fn take(&self) -> HashMap<i64, i64> {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds the counts to the rows every `every` through the writer, and
    /// once more at shutdown.
    pub fn spawn_flusher(self: Arc<Self>, writer: Arc<crate::writer::Writer>, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
        tokio::spawn(async move {
            loop {
                let stopping = tokio::select! {
                    _ = shutdown.cancelled() => true,
                    _ = tokio::time::sleep(every) => false,
                };
                let counts = self.take();
                if !counts.is_empty() {
                    let flushed = writer
                        .run(move |write| {
                            Box::pin(async move {
                                for (id, deliveries) in counts {
                                    rows::add_seen(write.conn(), id, deliveries).await?;
                                }
                                Ok(())
                            })
                        })
                        .await;
                    if let Err(e) = flushed {
                        tracing::warn!(error = %e, "announcement delivery counts not stored");
                    }
                }
                if stopping {
                    return;
                }
            }
        });
    }
}
