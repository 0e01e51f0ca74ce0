//! Announcement rows and users' marks on them.
//!
//! An announcement is one row for its whole audience. A user's read, click
//! and delete are a mark, written the first time they act; a mark counts
//! only if it is at least as recent as the announcement's `updated_at`, so
//! an update of the announcement's group is unread again for everyone
//! without touching anyone's mark.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{Expr, ExprTrait, OnConflict},
};

use crate::domain::{
    UserId,
    notification::{Audience, NewNotification},
};
use entity::{
    announcement::{self, Column, Entity as Announcements, Model},
    announcement_mark::{self, Entity as Marks},
};

/// Ids per `IN (...)` list: well under SQLite's bound-variable limit.
const CHUNK: usize = 1000;

/// An announcement as one user sees it: the row and their mark, if any.
#[derive(Debug, Clone)]
pub struct Seen {
    pub row: Model,
    pub mark: Option<announcement_mark::Model>,
}

impl Seen {
    /// When the user read it, if that was since its last update.
    pub fn read_at(&self) -> Option<DateTime<Utc>> {
        self.mark.as_ref()?.read_at.filter(|at| *at >= self.row.updated_at)
    }

    /// Whether the user deleted it since its last update.
    pub fn deleted(&self) -> bool {
        self.mark.as_ref().and_then(|m| m.deleted_at).is_some_and(|at| at >= self.row.updated_at)
    }
}

/// Stores a new announcement with the ids the writer allocated.
pub async fn insert(conn: &impl ConnectionTrait, id: i64, event_id: i64, audience: &Audience, new: &NewNotification, now: DateTime<Utc>) -> Result<Model, DbErr> {
    announcement::ActiveModel {
        id: Set(id),
        audience_topic: Set(audience.stored()),
        kind: Set(new.kind.as_str().to_owned()),
        title: Set(new.title.clone()),
        body: Set(new.body.clone()),
        data: Set(new.data.clone()),
        action_url: Set(new.action_url.clone()),
        group_key: Set(new.group_key.clone()),
        count: Set(1),
        critical: Set(new.critical),
        created_at: Set(now),
        updated_at: Set(now),
        expires_at: Set(new.expires_at),
        event_id: Set(event_id),
        seen: Set(0),
    }
    .insert(conn)
    .await
}

/// The live announcement of `audience` with `group_key`, if any: a new one
/// with the same key updates it instead of adding another.
pub async fn live_group(conn: &impl ConnectionTrait, audience: &Audience, group_key: &str, now: DateTime<Utc>) -> Result<Option<Model>, DbErr> {
    let audience_is = match audience.stored() {
        None => Column::AudienceTopic.is_null(),
        Some(topic) => Column::AudienceTopic.eq(topic),
    };
    live(now)
        .filter(audience_is)
        .filter(Column::GroupKey.eq(group_key))
        .order_by_desc(Column::Id)
        .one(conn)
        .await
}

/// Folds a new announcement into its group: `count` + 1, the newest
/// content, and a fresh `updated_at` that makes it unread for everyone.
pub async fn fold_into(conn: &impl ConnectionTrait, group: Model, new: &NewNotification, event_id: i64, now: DateTime<Utc>) -> Result<Model, DbErr> {
    let count = group.count + 1;
    let mut row: announcement::ActiveModel = group.into();
    row.count = Set(count);
    row.title = Set(new.title.clone());
    row.body = Set(new.body.clone());
    row.data = Set(new.data.clone());
    row.action_url = Set(new.action_url.clone());
    row.expires_at = Set(new.expires_at);
    row.critical = Set(new.critical);
    row.updated_at = Set(now);
    row.event_id = Set(event_id);
    row.update(conn).await
}

fn live(now: DateTime<Utc>) -> sea_orm::Select<Announcements> {
    Announcements::find().filter(Condition::any().add(Column::ExpiresAt.is_null()).add(Column::ExpiresAt.gt(now)))
}

/// Every announcement not expired at `now`, newest first, with `user`'s
/// marks: two indexed reads, the second only when there is something to
/// mark. Which of them are the user's is the caller's to decide (it
/// depends on the token they present).
pub async fn live_for(conn: &impl ConnectionTrait, user: &UserId, now: DateTime<Utc>) -> Result<Vec<Seen>, DbErr> {
    let rows = live(now).order_by_desc(Column::Id).all(conn).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut marks = marks_of(conn, user, &rows.iter().map(|r| r.id).collect::<Vec<_>>()).await?;
    Ok(rows.into_iter().map(|row| Seen { mark: marks.remove(&row.id), row }).collect())
}

/// One announcement with `user`'s mark, expired or not.
pub async fn find_for(conn: &impl ConnectionTrait, user: &UserId, id: i64) -> Result<Option<Seen>, DbErr> {
    let Some(row) = Announcements::find_by_id(id).one(conn).await? else {
        return Ok(None);
    };
    let mark = marks_of(conn, user, &[id]).await?.remove(&id);
    Ok(Some(Seen { row, mark }))
}

async fn marks_of(conn: &impl ConnectionTrait, user: &UserId, ids: &[i64]) -> Result<HashMap<i64, announcement_mark::Model>, DbErr> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(CHUNK) {
        let marks = Marks::find()
            .filter(announcement_mark::Column::UserId.eq(user.as_str()))
            .filter(announcement_mark::Column::AnnouncementId.is_in(chunk.iter().copied()))
            .all(conn)
            .await?;
        found.extend(marks.into_iter().map(|m| (m.announcement_id, m)));
    }
    Ok(found)
}

/// Which mark a user sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    Read,
    /// A click also reads.
    Click,
    Delete,
}

/// Sets `user`'s mark on each of `ids` at `now`, creating it if needed;
/// a click keeps its first time.
pub async fn mark(conn: &impl ConnectionTrait, user: &UserId, ids: &[i64], kind: MarkKind, now: DateTime<Utc>) -> Result<(), DbErr> {
    for chunk in ids.chunks(CHUNK) {
        let rows = chunk.iter().map(|id| announcement_mark::ActiveModel {
            announcement_id: Set(*id),
            user_id: Set(user.as_str().to_owned()),
            read_at: Set(matches!(kind, MarkKind::Read | MarkKind::Click).then_some(now)),
            clicked_at: Set((kind == MarkKind::Click).then_some(now)),
            deleted_at: Set((kind == MarkKind::Delete).then_some(now)),
        });
        let mut on_conflict = OnConflict::columns([announcement_mark::Column::AnnouncementId, announcement_mark::Column::UserId]);
        match kind {
            MarkKind::Read => on_conflict.update_column(announcement_mark::Column::ReadAt),
            MarkKind::Click => on_conflict.update_column(announcement_mark::Column::ReadAt).value(
                announcement_mark::Column::ClickedAt,
                Expr::cust("COALESCE(announcement_marks.clicked_at, excluded.clicked_at)"),
            ),
            MarkKind::Delete => on_conflict.update_column(announcement_mark::Column::DeletedAt),
        };
        Marks::insert_many(rows).on_conflict(on_conflict.to_owned()).exec_without_returning(conn).await?;
    }
    Ok(())
}

/// Adds deliveries counted by a node to announcements' `seen`.
pub async fn add_seen(conn: &impl ConnectionTrait, id: i64, deliveries: i64) -> Result<(), DbErr> {
    Announcements::update_many()
        .col_expr(Column::Seen, Expr::col(Column::Seen).add(deliveries))
        .filter(Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Per-type totals of announcements created since `since`: `sent` is the
/// deliveries the nodes counted, `read` and `clicked` the users' marks.
pub async fn stats(conn: &impl ConnectionTrait, kind: Option<&str>, since: Option<DateTime<Utc>>) -> Result<Vec<(String, i64, i64, i64)>, DbErr> {
    let mut query = Announcements::find()
        .select_only()
        .column(Column::Kind)
        .column_as(Expr::cust(r#"CAST(SUM("seen") AS BIGINT)"#), "sent")
        .column_as(
            Expr::cust(r#"CAST(SUM((SELECT COUNT(*) FROM announcement_marks m WHERE m.announcement_id = announcements.id AND m.read_at IS NOT NULL)) AS BIGINT)"#),
            "read",
        )
        .column_as(
            Expr::cust(r#"CAST(SUM((SELECT COUNT(*) FROM announcement_marks m WHERE m.announcement_id = announcements.id AND m.clicked_at IS NOT NULL)) AS BIGINT)"#),
            "clicked",
        );
    if let Some(kind) = kind {
        query = query.filter(Column::Kind.eq(kind));
    }
    if let Some(since) = since {
        query = query.filter(Column::CreatedAt.gte(since));
    }
    query.group_by(Column::Kind).order_by_asc(Column::Kind).into_tuple().all(conn).await
}
