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

use crate::{coalesce::padded, domain::UserId};
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
        .expr_as(Func::coalesce([sub(head), Expr::val(0i64)]), Alias::new("head"))
        .expr_as(Func::coalesce([sub(stored), Expr::val(0i64)]), Alias::new("stored"))
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
        FromQueryResult, QueryTrait,
        sea_query::{Alias, Asterisk, JoinType, Query},
    };
    let (state, page) = (Alias::new("state"), Alias::new("page"));
    let unread = crate::store::notifications::newest_unread_query(user, now, limit).into_query();
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

/// One stream's part of [`states_with_newest_unread`]: its user and the
/// topics its log head is taken over.
#[derive(Debug, Clone, Copy)]
pub struct FreshPart<'a> {
    /// Whose counter and unread page.
    pub user: &'a UserId,
    /// The stream's topics (its own, its conversations', its broadcast
    /// topics'): the head is the newest event of any of them.
    pub topics: &'a [&'a str],
}

/// [`state_with_newest_unread`] for many streams at once, in one snapshot
/// (`conn` must be a read transaction that sees one instant, see
/// `stream::reads::snapshot`): a statement per kind of row for all the
/// streams (counters, expired, hidden types, live announcements, heads,
/// unread pages), not a statement per stream. A surge of opens then costs
/// eight round trips per batch (see `crate::coalesce`). Returns one result
/// per part, in order.
///
/// Lists are padded to a few lengths ([`crate::coalesce::padded_len`]) with
/// a repeated user or topic, which changes no answer, so that the
/// statements have a few shapes only.
pub async fn states_with_newest_unread(conn: &impl ConnectionTrait, parts: &[FreshPart<'_>], now: DateTime<Utc>, limit: u64) -> Result<Vec<(StreamState, Vec<notification::Model>)>, DbErr> {
    let states = states_of(conn, parts, now).await?;
    let user_ids = padded(parts.iter().map(|part| part.user).collect());
    let pages = newest_unread_of(conn, &user_ids, now, limit).await?;
    Ok(parts
        .iter()
        .zip(states)
        .map(|(part, state)| {
            // A user with two streams in the batch gets the page twice.
            let page = pages.get(part.user.as_str()).cloned().unwrap_or_default();
            (state, page)
        })
        .collect())
}

/// [`StreamState`] for many streams at once, in one snapshot (as for
/// [`states_with_newest_unread`]): five statements for a batch, whatever
/// its size, and the one statement of [`stream_state`] for a stream alone.
/// Returns one state per part, in order.
pub async fn states_of(conn: &impl ConnectionTrait, parts: &[FreshPart<'_>], now: DateTime<Utc>) -> Result<Vec<StreamState>, DbErr> {
    if let [part] = parts {
        return Ok(vec![stream_state(conn, part.user, part.topics, now).await?]);
    }
    let user_ids = padded(parts.iter().map(|part| part.user).collect());
    let users: Vec<&str> = user_ids.iter().map(|user| user.as_str()).collect();
    let topics = padded(parts.iter().flat_map(|part| part.topics.iter().copied()).collect());
    let stored = stored(conn, &users).await?;
    let expired = expired(conn, &users, now).await?;
    let hiding = hiding_preferences(conn, &users).await?;
    let live = live_announcements(conn, now).await?;
    let heads = heads_of(conn, &topics).await?;
    Ok(parts
        .iter()
        .map(|part| {
            let user = part.user.as_str();
            StreamState {
                head: part.topics.iter().filter_map(|topic| heads.get(*topic).copied()).max().unwrap_or(0),
                stored: stored.get(user).copied().unwrap_or(0),
                expired: expired.get(user).copied().unwrap_or(0),
                live_announcements: live,
                hiding_preferences: hiding.get(user).copied().unwrap_or(0),
            }
        })
        .collect())
}

/// How many preference rows of each of `users` hide a type.
async fn hiding_preferences(conn: &impl ConnectionTrait, users: &[&str]) -> Result<HashMap<String, i64>, DbErr> {
    use entity::preference;
    preference::Entity::find()
        .select_only()
        .column(preference::Column::UserId)
        .column_as(preference::Column::Kind.count(), "hiding")
        .filter(preference::Column::UserId.is_in(users.iter().copied()))
        .filter(sea_orm::Condition::any().add(preference::Column::Enabled.eq(false)).add(preference::Column::Web.eq(false)))
        .group_by(preference::Column::UserId)
        .into_tuple::<(String, i64)>()
        .all(conn)
        .await
        .map(|rows| rows.into_iter().collect())
}

/// How many announcements are live at `now`.
async fn live_announcements(conn: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<i64, DbErr> {
    use entity::announcement;
    let count: Option<i64> = announcement::Entity::find()
        .select_only()
        .column_as(announcement::Column::Id.count(), "live")
        .filter(sea_orm::Condition::any().add(announcement::Column::ExpiresAt.is_null()).add(announcement::Column::ExpiresAt.gt(now)))
        .into_tuple()
        .one(conn)
        .await?;
    Ok(count.unwrap_or(0))
}

/// The newest event id of each of `topics` (absent: none): one indexed
/// look-up per topic, `UNION ALL`-ed into one statement. (`GROUP BY topic`
/// would read every event of each topic to find its maximum.)
async fn heads_of(conn: &impl ConnectionTrait, topics: &[&str]) -> Result<HashMap<String, i64>, DbErr> {
    use entity::event;
    use sea_orm::sea_query::{Alias, Func, Query, UnionType};
    let one = |topic: &str| {
        Query::select()
            .expr_as(Expr::val(topic.to_owned()), Alias::new("topic"))
            .expr_as(Func::max(Expr::col(event::Column::Id)), Alias::new("head"))
            .from(event::Entity)
            .and_where(Expr::col(event::Column::Topic).eq(topic))
            .to_owned()
    };
    let Some((first, rest)) = topics.split_first() else { return Ok(HashMap::new()) };
    let mut statement = one(first);
    for topic in rest {
        statement.union(UnionType::All, one(topic));
    }
    let mut heads = HashMap::with_capacity(topics.len());
    for row in conn.query_all(&statement).await? {
        if let Some(head) = row.try_get::<Option<i64>>("", "head")? {
            heads.insert(row.try_get::<String>("", "topic")?, head);
        }
    }
    Ok(heads)
}

/// The newest `limit` unread notifications of each of `users`, oldest
/// first: each user's page is its own indexed, limited read, and the pages
/// are `UNION ALL`-ed into one statement.
async fn newest_unread_of(conn: &impl ConnectionTrait, users: &[&UserId], now: DateTime<Utc>, limit: u64) -> Result<HashMap<String, Vec<notification::Model>>, DbErr> {
    use sea_orm::{
        FromQueryResult, QueryTrait,
        sea_query::{Alias, Asterisk, Query, UnionType},
    };
    let one = |user: &UserId| {
        let page = crate::store::notifications::newest_unread_query(user, now, limit).into_query();
        Query::select().column(Asterisk).from_subquery(page, Alias::new("page")).to_owned()
    };
    let mut pages: HashMap<String, Vec<notification::Model>> = HashMap::new();
    let Some((first, rest)) = users.split_first() else { return Ok(pages) };
    let mut statement = one(first);
    for user in rest {
        statement.union(UnionType::All, one(user));
    }
    let mut seen = std::collections::HashSet::new();
    for row in conn.query_all(&statement).await? {
        let row = notification::Model::from_query_result(&row, "")?;
        // A padding repeat of a user brings its page twice.
        if seen.insert(row.id) {
            pages.entry(row.user_id.clone()).or_default().push(row);
        }
    }
    for page in pages.values_mut() {
        page.sort_by_key(|row| row.event_id);
    }
    Ok(pages)
}
