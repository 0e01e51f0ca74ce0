//! Unread counters: the count a user sees, without counting rows.
//!
//! The writer keeps `unread_counters.count` equal to the user's notifications
//! that are neither read nor deleted, in the same transaction as each change.
//! Expiry needs no write, so the count shown is the counter minus the user's
//! expired unread notifications, which a partial index finds directly (it
//! holds only unread notifications that have an expiry).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, ExprTrait, OnConflict},
};

use crate::domain::UserId;
use entity::{notification, unread_counter};

/// Rows per multi-row statement: well under SQLite's bound-variable limit.
const CHUNK: usize = 1000;

/// Adds `delta` to each user's counter (creating it), once per user, and
/// returns the counters afterwards.
pub async fn adjust(conn: &impl ConnectionTrait, deltas: &HashMap<String, i64>) -> Result<HashMap<String, i64>, DbErr> {
    let mut after = HashMap::with_capacity(deltas.len());
    let deltas: Vec<(&String, &i64)> = deltas.iter().collect();
    for chunk in deltas.chunks(CHUNK) {
        let rows = chunk.iter().map(|(user, delta)| unread_counter::ActiveModel {
            user_id: sea_orm::Set((*user).clone()),
            count: sea_orm::Set(**delta),
        });
        let on_conflict = OnConflict::column(unread_counter::Column::UserId)
            .value(
                unread_counter::Column::Count,
                Expr::col((unread_counter::Entity, unread_counter::Column::Count))
                    .add(Expr::col((sea_orm::sea_query::Alias::new("excluded"), unread_counter::Column::Count))),
            )
            .to_owned();
        let stored = unread_counter::Entity::insert_many(rows)
            .on_conflict(on_conflict)
            .exec_with_returning(conn)
            .await?;
        after.extend(stored.into_iter().map(|row| (row.user_id, row.count)));
    }
    Ok(after)
}

/// Adds `delta` to one user's counter and returns it afterwards.
pub async fn adjust_one(conn: &impl ConnectionTrait, user: &UserId, delta: i64) -> Result<i64, DbErr> {
    let deltas = HashMap::from([(user.as_str().to_owned(), delta)]);
    Ok(adjust(conn, &deltas).await?.remove(user.as_str()).unwrap_or(0))
}

/// The stored counters of `users` (zero where none is stored).
pub async fn stored(conn: &impl ConnectionTrait, users: &[&str]) -> Result<HashMap<String, i64>, DbErr> {
    let mut found = HashMap::with_capacity(users.len());
    for chunk in users.chunks(CHUNK) {
        let rows: Vec<(String, i64)> = unread_counter::Entity::find()
            .select_only()
            .column(unread_counter::Column::UserId)
            .column(unread_counter::Column::Count)
            .filter(unread_counter::Column::UserId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(conn)
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

/// How many unread notifications of each of `users` have expired by `now`:
/// what the counters hold that the users no longer see.
pub async fn expired(conn: &impl ConnectionTrait, users: &[&str], now: DateTime<Utc>) -> Result<HashMap<String, i64>, DbErr> {
    let mut found = HashMap::new();
    for chunk in users.chunks(CHUNK) {
        let rows: Vec<(String, i64)> = notification::Entity::find()
            .select_only()
            .column(notification::Column::UserId)
            .column_as(notification::Column::Id.count(), "expired")
            .filter(notification::Column::UserId.is_in(chunk.iter().copied()))
            .filter(notification::Column::ExpiresAt.is_not_null())
            .filter(notification::Column::ExpiresAt.lte(now))
            .filter(notification::Column::ReadAt.is_null())
            .filter(notification::Column::DeletedAt.is_null())
            .group_by(notification::Column::UserId)
            .into_tuple()
            .all(conn)
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

/// The unread count `user` sees at `now`: two key lookups.
pub async fn count(conn: &impl ConnectionTrait, user: &UserId, now: DateTime<Utc>) -> Result<u64, DbErr> {
    let users = [user.as_str()];
    let stored = stored(conn, &users).await?.get(user.as_str()).copied().unwrap_or(0);
    let expired = expired(conn, &users, now).await?.get(user.as_str()).copied().unwrap_or(0);
    Ok(visible(stored, expired))
}

/// The count shown from a counter and its expired part; never negative.
pub fn visible(stored: i64, expired: i64) -> u64 {
    u64::try_from(stored - expired).unwrap_or(0)
}

/// What a stream's state report needs, in one statement: the log head of
/// the stream's topics, the user's counter and its expired part, how many
/// announcements are live and how many preference rows hide a type. The
/// last two say whether the (rarer) reads of announcements and hidden types
/// are needed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    pub head: i64,
    pub stored: i64,
    pub expired: i64,
    pub live_announcements: i64,
    pub hiding_preferences: i64,
}

/// The one-row statement of [`StreamState`]: indexed scalar subqueries.
fn state_statement(user: &UserId, topics: &[&str], now: DateTime<Utc>) -> sea_orm::sea_query::SelectStatement {
    use entity::{announcement, event, preference};
    use sea_orm::sea_query::{Alias, Condition, Func, Query, SimpleExpr, SubQueryStatement};
    let sub = |select: sea_orm::sea_query::SelectStatement| SimpleExpr::SubQuery(None, Box::new(SubQueryStatement::SelectStatement(select)));
    let head = Query::select()
        .expr(Func::max(Expr::col(event::Column::Id)))
        .from(event::Entity)
        .and_where(Expr::col(event::Column::Topic).is_in(topics.iter().copied()))
        .to_owned();
    let stored = Query::select()
        .column(unread_counter::Column::Count)
        .from(unread_counter::Entity)
        .and_where(Expr::col(unread_counter::Column::UserId).eq(user.as_str()))
        .to_owned();
    let expired = Query::select()
        .expr(Func::count(Expr::col(notification::Column::Id)))
        .from(notification::Entity)
        .and_where(Expr::col(notification::Column::UserId).eq(user.as_str()))
        .and_where(Expr::col(notification::Column::ExpiresAt).is_not_null())
        .and_where(Expr::col(notification::Column::ExpiresAt).lte(now))
        .and_where(Expr::col(notification::Column::ReadAt).is_null())
        .and_where(Expr::col(notification::Column::DeletedAt).is_null())
        .to_owned();
    let live = Query::select()
        .expr(Func::count(Expr::col(announcement::Column::Id)))
        .from(announcement::Entity)
        .cond_where(Condition::any().add(Expr::col(announcement::Column::ExpiresAt).is_null()).add(Expr::col(announcement::Column::ExpiresAt).gt(now)))
        .to_owned();
    let hiding = Query::select()
        .expr(Func::count(Expr::col(preference::Column::Kind)))
        .from(preference::Entity)
        .and_where(Expr::col(preference::Column::UserId).eq(user.as_str()))
        .cond_where(Condition::any().add(Expr::col(preference::Column::Enabled).eq(false)).add(Expr::col(preference::Column::Web).eq(false)))
        .to_owned();
    Query::select()
        .expr_as(Func::coalesce([sub(head), Expr::val(0i64).into()]), Alias::new("head"))
        .expr_as(Func::coalesce([sub(stored), Expr::val(0i64).into()]), Alias::new("stored"))
        .expr_as(sub(expired), Alias::new("expired"))
        .expr_as(sub(live), Alias::new("live_announcements"))
        .expr_as(sub(hiding), Alias::new("hiding_preferences"))
        .to_owned()
}

/// Reads [`StreamState`] for `user` over `topics` at `now`: one round trip
/// of indexed subqueries.
pub async fn stream_state(conn: &impl ConnectionTrait, user: &UserId, topics: &[&str], now: DateTime<Utc>) -> Result<StreamState, DbErr> {
    let statement = state_statement(user, topics, now);
    let row = conn.query_one(&statement).await?.ok_or_else(|| DbErr::RecordNotFound("the stream state row".into()))?;
    StreamState::from_row(&row)
}

impl StreamState {
    fn from_row(row: &sea_orm::QueryResult) -> Result<Self, DbErr> {
        Ok(StreamState {
            head: row.try_get("", "head")?,
            stored: row.try_get("", "stored")?,
            expired: row.try_get("", "expired")?,
            live_announcements: row.try_get("", "live_announcements")?,
            hiding_preferences: row.try_get("", "hiding_preferences")?,
        })
    }
}

/// [`StreamState`] and the newest `limit` unread notifications of `user`
/// (oldest first), in **one statement**, so one snapshot without a
/// transaction: the state's row left-joined with the page of unread rows.
///
/// Why: this is what a stream without a resume point starts from, and a
/// surge of reconnections is a surge of exactly this read. On SQLite every
/// statement, and a transaction's `BEGIN` and `COMMIT` each, is a round
/// trip to the connection's worker thread; the same two reads in a
/// transaction took four (`perf` of `tidings-bench idle`: thread hand-offs
/// to those workers were a third of the server's CPU while streams opened).
pub async fn state_with_newest_unread(conn: &impl ConnectionTrait, user: &UserId, topics: &[&str], now: DateTime<Utc>, limit: u64) -> Result<(StreamState, Vec<notification::Model>), DbErr> {
    use sea_orm::{
        FromQueryResult, QueryOrder, QueryTrait,
        sea_query::{Alias, Asterisk, JoinType, Query},
    };
    let (state, page) = (Alias::new("state"), Alias::new("page"));
    let unread = crate::store::notifications::visible(user, now)
        .filter(notification::Column::ReadAt.is_null())
        .order_by_desc(notification::Column::EventId)
        .limit(limit)
        .into_query();
    let statement = Query::select()
        .column((state.clone(), Asterisk))
        .column((page.clone(), Asterisk))
        .from_subquery(state_statement(user, topics, now), state)
        .join_subquery(JoinType::LeftJoin, unread, page, Expr::cust("1 = 1"))
        .to_owned();
    let rows = conn.query_all(&statement).await?;
    let first = rows.first().ok_or_else(|| DbErr::RecordNotFound("the stream state row".into()))?;
    let stream_state = StreamState::from_row(first)?;
    let mut unread = Vec::with_capacity(rows.len());
    for row in &rows {
        // Without unread notifications, the one row's page columns are null.
        if row.try_get::<Option<i64>>("", "id")?.is_some() {
            unread.push(notification::Model::from_query_result(row, "")?);
        }
    }
    // A joined derived table keeps no order of its own.
    unread.sort_by_key(|row| row.event_id);
    Ok((stream_state, unread))
}
