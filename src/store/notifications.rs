//! Notification rows.
//!
//! "Visible" means: the user's own, not deleted, not expired. Every read
//! goes through [`visible`], so another user's notification and an expired
//! one are equally absent.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Select, Set, sea_query::Expr,
};

use crate::domain::{UserId, notification::NewNotification};
use entity::notification::{self, Column, Entity as Notifications, Model};

/// The notifications `user` can see at `now`.
pub fn visible(user: &UserId, now: DateTime<Utc>) -> Select<Notifications> {
    Notifications::find()
        .filter(Column::UserId.eq(user.as_str()))
        .filter(Column::DeletedAt.is_null())
        .filter(Condition::any().add(Column::ExpiresAt.is_null()).add(Column::ExpiresAt.gt(now)))
}

/// Stores one recipient's copy with the ids the writer allocated for it and
/// for the event that carries it.
pub async fn insert(conn: &impl ConnectionTrait, id: i64, event_id: i64, user: &UserId, new: &NewNotification, now: DateTime<Utc>) -> Result<Model, DbErr> {
    notification::ActiveModel {
        id: Set(id),
        user_id: Set(user.as_str().to_owned()),
        kind: Set(new.kind.as_str().to_owned()),
        title: Set(new.text_for(user.as_str()).0.to_owned()),
        body: Set(new.text_for(user.as_str()).1.to_owned()),
        data: Set(new.data.clone()),
        action_url: Set(new.action_url.clone()),
        group_key: Set(new.group_key.clone()),
        count: Set(1),
        created_at: Set(now),
        updated_at: Set(now),
        expires_at: Set(new.expires_at),
        read_at: Set(None),
        clicked_at: Set(None),
        deleted_at: Set(None),
        event_id: Set(event_id),
        critical: Set(new.critical),
    }
    .insert(conn)
    .await
}

/// The user's unread notification with `group_key`, expired or not: at most
/// one exists (a unique index guarantees it).
pub async fn unread_group(conn: &impl ConnectionTrait, user: &UserId, group_key: &str) -> Result<Option<Model>, DbErr> {
    Notifications::find()
        .filter(Column::UserId.eq(user.as_str()))
        .filter(Column::GroupKey.eq(group_key))
        .filter(Column::ReadAt.is_null())
        .filter(Column::DeletedAt.is_null())
        .one(conn)
        .await
}

/// Folds a new notification into its group: one more in `count`, the newest
/// content, a fresh `updated_at` and expiry, and the event that carries it.
pub async fn fold_into(conn: &impl ConnectionTrait, group: Model, new: &NewNotification, event_id: i64, now: DateTime<Utc>) -> Result<Model, DbErr> {
    let count = group.count + 1;
    let (title, body) = new.text_for(&group.user_id);
    let (title, body) = (title.to_owned(), body.to_owned());
    let mut row: notification::ActiveModel = group.into();
    row.count = Set(count);
    row.title = Set(title);
    row.body = Set(body);
    row.data = Set(new.data.clone());
    row.action_url = Set(new.action_url.clone());
    row.expires_at = Set(new.expires_at);
    row.updated_at = Set(now);
    row.event_id = Set(event_id);
    row.critical = Set(new.critical);
    row.update(conn).await
}

/// One visible notification of `user`.
pub async fn find(conn: &impl ConnectionTrait, user: &UserId, id: i64, now: DateTime<Utc>) -> Result<Option<Model>, DbErr> {
    visible(user, now).filter(Column::Id.eq(id)).one(conn).await
}

/// The newest `limit` unread ones, returned oldest first: what a stream
/// without a resume point starts with.
pub async fn newest_unread(conn: &impl ConnectionTrait, user: &UserId, now: DateTime<Utc>, limit: u64) -> Result<Vec<Model>, DbErr> {
    let mut rows = newest_unread_query(user, now, limit).all(conn).await?;
    rows.reverse();
    Ok(rows)
}

/// The query of [`newest_unread`], newest first: also each user's page in
/// the pages of a batch of opening streams (`store::unread::newest_unread_of`).
pub fn newest_unread_query(user: &UserId, now: DateTime<Utc>, limit: u64) -> Select<Notifications> {
    visible(user, now).filter(Column::ReadAt.is_null()).order_by_desc(Column::EventId).limit(limit)
}

/// Ids of unread visible notifications, optionally of one type, oldest first.
pub async fn unread_ids(conn: &impl ConnectionTrait, user: &UserId, kind: Option<&str>, now: DateTime<Utc>) -> Result<Vec<i64>, DbErr> {
    let mut query = visible(user, now).filter(Column::ReadAt.is_null());
    if let Some(kind) = kind {
        query = query.filter(Column::Kind.eq(kind));
    }
    query
        .select_only()
        .column(Column::Id)
        .order_by_asc(Column::Id)
        .into_tuple()
        .all(conn)
        .await
}

/// Marks notifications read; returns how many changed.
pub async fn mark_read(conn: &impl ConnectionTrait, ids: &[i64], now: DateTime<Utc>) -> Result<u64, DbErr> {
    if ids.is_empty() {
        return Ok(0);
    }
    let result = Notifications::update_many()
        .col_expr(Column::ReadAt, Expr::value(now))
        .filter(Column::Id.is_in(ids.iter().copied()))
        .filter(Column::ReadAt.is_null())
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}

/// Records the first click.
pub async fn mark_clicked(conn: &impl ConnectionTrait, id: i64, now: DateTime<Utc>) -> Result<(), DbErr> {
    Notifications::update_many()
        .col_expr(Column::ClickedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .filter(Column::ClickedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}

/// Deletes softly: the row stays for statistics, invisible to everyone.
pub async fn mark_deleted(conn: &impl ConnectionTrait, id: i64, now: DateTime<Utc>) -> Result<(), DbErr> {
    Notifications::update_many()
        .col_expr(Column::DeletedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Which notifications a list shows.
pub struct ListFilter<'a> {
    pub unread_only: bool,
    pub kind: Option<&'a str>,
    /// Only ids below this one: the cursor of the previous page.
    pub before_id: Option<i64>,
    pub limit: u64,
}

/// A page of visible notifications, newest first.
pub async fn list(conn: &impl ConnectionTrait, user: &UserId, filter: ListFilter<'_>, now: DateTime<Utc>) -> Result<Vec<Model>, DbErr> {
    let mut query = visible(user, now);
    if filter.unread_only {
        query = query.filter(Column::ReadAt.is_null());
    }
    if let Some(kind) = filter.kind {
        query = query.filter(Column::Kind.eq(kind));
    }
    if let Some(before) = filter.before_id {
        query = query.filter(Column::Id.lt(before));
    }
    query.order_by_desc(Column::Id).limit(filter.limit).all(conn).await
}

/// Per-type totals over notifications created since `since`: each counts
/// `count` times, so a group updated four times was sent four times.
pub async fn stats(conn: &impl ConnectionTrait, kind: Option<&str>, since: Option<DateTime<Utc>>) -> Result<Vec<(String, i64, i64, i64)>, DbErr> {
    let mut query = Notifications::find()
        .select_only()
        .column(Column::Kind)
        .column_as(Expr::cust(r#"SUM("count")"#), "sent")
        .column_as(Expr::cust(r#"SUM(CASE WHEN "read_at" IS NOT NULL THEN "count" ELSE 0 END)"#), "read")
        .column_as(Expr::cust(r#"SUM(CASE WHEN "clicked_at" IS NOT NULL THEN "count" ELSE 0 END)"#), "clicked");
    if let Some(kind) = kind {
        query = query.filter(Column::Kind.eq(kind));
    }
    if let Some(since) = since {
        query = query.filter(Column::CreatedAt.gte(since));
    }
    query.group_by(Column::Kind).order_by_asc(Column::Kind).into_tuple().all(conn).await
}
