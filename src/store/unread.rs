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

/// What a stream's state report needs, read in one statement
/// ([`states_of`]): the log head of the stream's topics, the user's counter
/// and its expired part, how many announcements are live and how many
/// preference rows hide a type. The last two say whether the (rarer) reads
/// of announcements and hidden types are needed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    pub head: i64,
    pub stored: i64,
    pub expired: i64,
    pub live_announcements: i64,
    pub hiding_preferences: i64,
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

/// [`StreamState`] and the newest `limit` unread notifications (oldest
/// first) of each part, in **one statement** whatever the number of parts,
/// so one snapshot without a transaction. Returns one result per part, in
/// order.
///
/// Why one: this is what a stream without a resume point starts from, and
/// a surge of reconnections is a surge of exactly this read. Each statement,
/// and a transaction's `BEGIN` and `COMMIT` each, is a round trip (on
/// SQLite, a hand-off to the pooled connection's worker thread and back);
/// a statement per kind of row in a transaction took eight for a batch.
/// The statement is [`summary_statement`]'s rows with the unread pages
/// joined to its one `live` row (see [`with_pages`]).
///
/// Lists are padded to a few lengths ([`crate::coalesce::padded_len`]) with
/// a repeated user or topic, which changes no answer, so that the
/// statement has a few shapes only.
pub async fn states_with_newest_unread(conn: &impl ConnectionTrait, parts: &[FreshPart<'_>], now: DateTime<Utc>, limit: u64) -> Result<Vec<(StreamState, Vec<notification::Model>)>, DbErr> {
    read_states(conn, parts, now, Some(limit)).await
}

/// [`StreamState`] for many streams at once, in one statement (see
/// [`states_with_newest_unread`], without the pages). Returns one state per
/// part, in order.
pub async fn states_of(conn: &impl ConnectionTrait, parts: &[FreshPart<'_>], now: DateTime<Utc>) -> Result<Vec<StreamState>, DbErr> {
    Ok(read_states(conn, parts, now, None).await?.into_iter().map(|(state, _)| state).collect())
}

/// The summary rows as read: what each [`StreamState`] is assembled from.
#[derive(Default)]
struct Summary {
    live_announcements: i64,
    stored: HashMap<String, i64>,
    expired: HashMap<String, i64>,
    hiding: HashMap<String, i64>,
    heads: HashMap<String, i64>,
}

impl Summary {
    /// Takes in one row of [`summary_statement`].
    fn add(&mut self, kind: &str, key: String, value: Option<i64>) {
        let Some(value) = value else { return };
        match kind {
            summary::LIVE => self.live_announcements = value,
            summary::STORED => drop(self.stored.insert(key, value)),
            summary::EXPIRED => drop(self.expired.insert(key, value)),
            summary::HIDING => drop(self.hiding.insert(key, value)),
            summary::HEAD => drop(self.heads.insert(key, value)),
            _ => {}
        }
    }

    fn state_of(&self, part: &FreshPart<'_>) -> StreamState {
        let user = part.user.as_str();
        StreamState {
            head: part.topics.iter().filter_map(|topic| self.heads.get(*topic).copied()).max().unwrap_or(0),
            stored: self.stored.get(user).copied().unwrap_or(0),
            expired: self.expired.get(user).copied().unwrap_or(0),
            live_announcements: self.live_announcements,
            hiding_preferences: self.hiding.get(user).copied().unwrap_or(0),
        }
    }
}

/// The kinds of summary rows, and the names of its columns.
mod summary {
    pub const LIVE: &str = "live";
    pub const STORED: &str = "stored";
    pub const EXPIRED: &str = "expired";
    pub const HIDING: &str = "hiding";
    pub const HEAD: &str = "head";
    pub const KIND: &str = "kind";
    pub const KEY: &str = "key";
    pub const VALUE: &str = "value";
    /// The column of a page row that joins it to the `live` row.
    pub const SLOT: &str = "slot";
}

/// [`states_with_newest_unread`] (with `limit`) or [`states_of`] (without).
async fn read_states(conn: &impl ConnectionTrait, parts: &[FreshPart<'_>], now: DateTime<Utc>, limit: Option<u64>) -> Result<Vec<(StreamState, Vec<notification::Model>)>, DbErr> {
    use sea_orm::FromQueryResult;
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let user_ids = padded(parts.iter().map(|part| part.user).collect());
    let users: Vec<&str> = user_ids.iter().map(|user| user.as_str()).collect();
    let topics = padded(parts.iter().flat_map(|part| part.topics.iter().copied()).collect());
    let mut statement = summary_statement(&users, &topics, now);
    if let Some(limit) = limit {
        statement = with_pages(statement, &user_ids, now, limit);
    }
    let mut found = Summary::default();
    let mut pages: HashMap<String, Vec<notification::Model>> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for row in conn.query_all(&statement).await? {
        let kind: String = row.try_get("", summary::KIND)?;
        found.add(&kind, row.try_get("", summary::KEY)?, row.try_get("", summary::VALUE)?);
        // Rows without a page row have its columns null.
        if limit.is_some() && row.try_get::<Option<i64>>("", "id")?.is_some() {
            let unread = notification::Model::from_query_result(&row, "")?;
            // A padding repeat of a user brings its page twice.
            if seen.insert(unread.id) {
                pages.entry(unread.user_id.clone()).or_default().push(unread);
            }
        }
    }
    for page in pages.values_mut() {
        page.sort_by_key(|row| row.event_id);
    }
    Ok(parts
        .iter()
        .map(|part| {
            // A user with two streams in the batch gets the page twice.
            let page = pages.get(part.user.as_str()).cloned().unwrap_or_default();
            (found.state_of(part), page)
        })
        .collect())
}

/// One compound statement of `(kind, key, value)` rows, each an indexed
/// read: `live` (announcements live at `now`, one row), `stored` and
/// `expired` (the counter of each of `users` and its expired part),
/// `hiding` (preference rows that hide a type, per user) and `head` (the
/// newest event id of each of `topics`, one look-up per topic: `GROUP BY
/// topic` would read every event of each topic to find its maximum). A
/// user or topic without rows has no row, or a null value.
fn summary_statement(users: &[&str], topics: &[&str], now: DateTime<Utc>) -> sea_orm::sea_query::SelectStatement {
    use entity::{announcement, event, preference};
    use sea_orm::sea_query::{Alias, Condition, Func, Query, UnionType};
    let (kind, key, value) = (Alias::new(summary::KIND), Alias::new(summary::KEY), Alias::new(summary::VALUE));
    // The first branch names the columns.
    let mut statement = Query::select()
        .expr_as(Expr::val(summary::LIVE), kind)
        .expr_as(Expr::val(""), key)
        .expr_as(Func::count(Expr::col(announcement::Column::Id)), value)
        .from(announcement::Entity)
        .cond_where(Condition::any().add(Expr::col(announcement::Column::ExpiresAt).is_null()).add(Expr::col(announcement::Column::ExpiresAt).gt(now)))
        .to_owned();
    let stored = Query::select()
        .expr(Expr::val(summary::STORED))
        .column(unread_counter::Column::UserId)
        .column(unread_counter::Column::Count)
        .from(unread_counter::Entity)
        .and_where(Expr::col(unread_counter::Column::UserId).is_in(users.iter().copied()))
        .to_owned();
    let expired = Query::select()
        .expr(Expr::val(summary::EXPIRED))
        .column(notification::Column::UserId)
        .expr(Func::count(Expr::col(notification::Column::Id)))
        .from(notification::Entity)
        .and_where(Expr::col(notification::Column::UserId).is_in(users.iter().copied()))
        .and_where(Expr::col(notification::Column::ExpiresAt).is_not_null())
        .and_where(Expr::col(notification::Column::ExpiresAt).lte(now))
        .and_where(Expr::col(notification::Column::ReadAt).is_null())
        .and_where(Expr::col(notification::Column::DeletedAt).is_null())
        .group_by_col(notification::Column::UserId)
        .to_owned();
    let hiding = Query::select()
        .expr(Expr::val(summary::HIDING))
        .column(preference::Column::UserId)
        .expr(Func::count(Expr::col(preference::Column::Kind)))
        .from(preference::Entity)
        .and_where(Expr::col(preference::Column::UserId).is_in(users.iter().copied()))
        .cond_where(Condition::any().add(Expr::col(preference::Column::Enabled).eq(false)).add(Expr::col(preference::Column::Web).eq(false)))
        .group_by_col(preference::Column::UserId)
        .to_owned();
    statement.union(UnionType::All, stored).union(UnionType::All, expired).union(UnionType::All, hiding);
    for topic in topics {
        let head = Query::select()
            .expr(Expr::val(summary::HEAD))
            .expr(Expr::val(*topic))
            .expr(Func::max(Expr::col(event::Column::Id)))
            .from(event::Entity)
            .and_where(Expr::col(event::Column::Topic).eq(*topic))
            .to_owned();
        statement.union(UnionType::All, head);
    }
    statement
}

/// `summary` with the newest `limit` unread notifications of each of
/// `users` joined to its one `live` row: each page is its own indexed,
/// limited read, `UNION ALL`-ed; the join is an equality (`slot = kind`), so
/// the pages are matched by a look-up, not scanned once per summary row.
fn with_pages(summary: sea_orm::sea_query::SelectStatement, users: &[&UserId], now: DateTime<Utc>, limit: u64) -> sea_orm::sea_query::SelectStatement {
    use sea_orm::{
        QueryTrait,
        sea_query::{Alias, Asterisk, JoinType, Query, UnionType},
    };
    let (rows, pages, slot) = (Alias::new("summary"), Alias::new("pages"), Alias::new(summary::SLOT));
    let one = |user: &UserId| {
        let page = crate::store::notifications::newest_unread_query(user, now, limit).into_query();
        Query::select().expr_as(Expr::val(summary::LIVE), slot.clone()).column(Asterisk).from_subquery(page, Alias::new("page")).to_owned()
    };
    let (first, rest) = users.split_first().expect("a batch has a user");
    let mut union = one(first);
    for user in rest {
        union.union(UnionType::All, one(user));
    }
    Query::select()
        .column((rows.clone(), Asterisk))
        .column((pages.clone(), Asterisk))
        .from_subquery(summary, rows.clone())
        .join_subquery(JoinType::LeftJoin, union, pages.clone(), Expr::col((pages, slot)).equals((rows, Alias::new(summary::KIND))))
        .to_owned()
}
