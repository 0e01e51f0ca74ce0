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
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QuerySelect,
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
            .filter(expired_unread(now))
            .group_by(notification::Column::UserId)
            .into_tuple()
            .all(conn)
            .await?;
        found.extend(rows);
    }
    Ok(found)
}

/// Unread notifications that have expired by `now`: what a counter holds
/// that its user no longer sees (the partial index
/// `notifications_expiring_unread` finds them).
fn expired_unread(now: DateTime<Utc>) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(notification::Column::ExpiresAt.is_not_null())
        .add(notification::Column::ExpiresAt.lte(now))
        .add(notification::Column::ReadAt.is_null())
        .add(notification::Column::DeletedAt.is_null())
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
/// of announcements and hidden types are needed at all. `memberships` is
/// how many conversations the user is a member of: a stream opening
/// without any learns so from this statement, and needs no read of its
/// memberships (see `stream::reads::fresh_states`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamState {
    pub head: i64,
    pub stored: i64,
    pub expired: i64,
    pub live_announcements: i64,
    pub hiding_preferences: i64,
    pub memberships: i64,
}

/// One stream's part of [`states_of`]: its user and the
/// topics its log head is taken over.
#[derive(Debug, Clone, Copy)]
pub struct FreshPart<'a> {
    /// Whose counter and unread page.
    pub user: &'a UserId,
    /// The stream's topics (its own, its conversations', its broadcast
    /// topics'): the head is the newest event of any of them.
    pub topics: &'a [&'a str],
}

/// [`StreamState`] for many streams at once, in **one statement** whatever
/// their number: the rows of [`summary_branches`]. Returns one state per
/// part, in order.
///
/// Why one: this is what a stream starts from, and a surge of
/// reconnections is a surge of exactly this read. Each statement is a
/// round trip (on SQLite, a hand-off to the pooled connection's worker
/// thread and back); a statement per kind of row took five for a batch.
///
/// Lists are padded to a few lengths ([`crate::coalesce::padded_len`]) with
/// a repeated user or topic, which changes no answer, so that the
/// statement has a few shapes only, each built once ([`Template`]).
pub async fn states_of(conn: &impl ConnectionTrait, parts: &[FreshPart<'_>], now: DateTime<Utc>) -> Result<Vec<StreamState>, DbErr> {
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let users = padded(parts.iter().map(|part| part.user.as_str()).collect());
    let topics = padded(parts.iter().flat_map(|part| part.topics.iter().copied()).collect());
    let mut found = Summary::default();
    // SQLite refuses a compound SELECT of more than 500 branches: heads
    // beyond one statement's share are read first, in statements of their
    // own. A head read before the counts is safe without a snapshot: the
    // counts then reflect at least every event up to it (see
    // `notifications::unread_state`).
    let mut chunks: Vec<&[&str]> = topics.chunks(HEADS_PER_STATEMENT).collect();
    let last = chunks.pop().unwrap_or_default();
    for chunk in chunks {
        found.read(conn, &[], chunk, now).await?;
    }
    found.read(conn, &users, last, now).await?;
    Ok(parts.iter().map(|part| found.state_of(part)).collect())
}

/// Topics whose heads one statement reads, at most: with the three
/// branches of each of at most 64 users (`TIDINGS_OPEN_BATCH`), well under
/// SQLite's 500 branches of a compound `SELECT`.
const HEADS_PER_STATEMENT: usize = 256;

/// The newest `limit` unread notifications of each of `users`, oldest
/// first, in one statement: each user's page is its own indexed, limited
/// read, and the pages are `UNION ALL`-ed. Users without any are absent.
pub async fn newest_unread_of(conn: &impl ConnectionTrait, users: &[&UserId], now: DateTime<Utc>, limit: u64) -> Result<HashMap<String, Vec<notification::Model>>, DbErr> {
    use sea_orm::FromQueryResult;
    let mut pages: HashMap<String, Vec<notification::Model>> = HashMap::new();
    if users.is_empty() {
        return Ok(pages);
    }
    let users = padded(users.iter().map(|user| user.as_str()).collect());
    let shape = Shape { backend: conn.get_database_backend(), users: users.len(), reading: Reading::Pages { limit } };
    let mut seen = std::collections::HashSet::new();
    for row in conn.query_all_raw(Template::of(shape).bind(&users, now)).await? {
        let unread = notification::Model::from_query_result(&row, "")?;
        // A padding repeat of a user brings its page twice.
        if seen.insert(unread.id) {
            pages.entry(unread.user_id.clone()).or_default().push(unread);
        }
    }
    for page in pages.values_mut() {
        page.sort_by_key(|row| row.event_id);
    }
    Ok(pages)
}

/// The summary rows as read: what each [`StreamState`] is assembled from.
#[derive(Default)]
struct Summary {
    live_announcements: i64,
    stored: HashMap<String, i64>,
    expired: HashMap<String, i64>,
    hiding: HashMap<String, i64>,
    members: HashMap<String, i64>,
    heads: HashMap<String, i64>,
}

impl Summary {
    /// Reads the summary of `users` and `topics` in one statement.
    async fn read(&mut self, conn: &impl ConnectionTrait, users: &[&str], topics: &[&str], now: DateTime<Utc>) -> Result<(), DbErr> {
        let shape = Shape { backend: conn.get_database_backend(), users: users.len(), reading: Reading::Summary { topics: topics.len() } };
        let keys: Vec<&str> = users.iter().chain(topics).copied().collect();
        for row in conn.query_all_raw(Template::of(shape).bind(&keys, now)).await? {
            let kind: String = row.try_get("", summary::KIND)?;
            self.add(&kind, row.try_get("", summary::KEY)?, row.try_get("", summary::VALUE)?);
        }
        Ok(())
    }

    /// Takes in one row of [`summary_branches`].
    fn add(&mut self, kind: &str, key: String, value: Option<i64>) {
        let Some(value) = value else { return };
        match kind {
            summary::LIVE => self.live_announcements = value,
            summary::STORED => drop(self.stored.insert(key, value)),
            summary::EXPIRED => drop(self.expired.insert(key, value)),
            summary::HIDING => drop(self.hiding.insert(key, value)),
            summary::MEMBERS => drop(self.members.insert(key, value)),
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
            memberships: self.members.get(user).copied().unwrap_or(0),
        }
    }
}

/// The kinds of summary rows, and the names of its columns.
mod summary {
    pub const LIVE: &str = "live";
    pub const STORED: &str = "stored";
    pub const EXPIRED: &str = "expired";
    pub const HIDING: &str = "hiding";
    pub const MEMBERS: &str = "members";
    pub const HEAD: &str = "head";
    pub const KIND: &str = "kind";
    pub const KEY: &str = "key";
    pub const VALUE: &str = "value";
}

/// A kind of row as an SQL literal, not a bound value: nothing to bind and
/// copy per execution.
fn literal(kind: &'static str) -> Expr {
    Expr::cust(format!("'{kind}'"))
}

/// What decides the text of a statement of [`states_of`] or
/// [`newest_unread_of`]: its values aside, it is the same for every batch
/// of one shape.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Shape {
    backend: DbBackend,
    users: usize,
    reading: Reading,
}

/// Which of the two statements.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reading {
    /// [`summary_branches`] over this many topics.
    Summary { topics: usize },
    /// [`pages`] of this many notifications each.
    Pages { limit: u64 },
}

/// The statement of one [`Shape`], built once: its text, and where each of
/// its values comes from.
///
/// Why: building it anew for every batch (a hundred branches of sea-query's
/// tree, then their text, then freeing the tree) was an eighth of the CPU
/// of opening a stream (`perf record` during `bench/compare.sh idle`). It
/// is built by the same functions as ever ([`summary_branches`],
/// [`pages`]), with marked keys in place of the users and topics, so there
/// is one description of each statement, not two.
struct Template {
    backend: DbBackend,
    sql: String,
    slots: Vec<Slot>,
}

/// Where a value of a [`Template`] comes from.
enum Slot {
    /// The batch's key at this index: its users, then its topics.
    Key(usize),
    /// The batch's `now`.
    Now,
    /// The same for every batch (a `false`, the page's `LIMIT`).
    Fixed(sea_orm::Value),
}

/// What a key is marked with in a template: a private-use character, which
/// no fixed value of the statements starts with.
const MARK: char = '\u{F8FF}';

/// The templates built so far: a few shapes (`coalesce::padded_len`).
static TEMPLATES: std::sync::LazyLock<std::sync::Mutex<Vec<(Shape, std::sync::Arc<Template>)>>> = std::sync::LazyLock::new(Default::default);

impl Template {
    /// The template of `shape`, built on first use.
    fn of(shape: Shape) -> std::sync::Arc<Template> {
        let mut built = TEMPLATES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, template)) = built.iter().find(|(known, _)| *known == shape) {
            return template.clone();
        }
        let template = std::sync::Arc::new(Template::build(shape));
        built.push((shape, template.clone()));
        template
    }

    fn build(shape: Shape) -> Template {
        let topics = match shape.reading {
            Reading::Summary { topics } => topics,
            Reading::Pages { .. } => 0,
        };
        let keys: Vec<String> = (0..shape.users + topics).map(|index| format!("{MARK}{index}")).collect();
        let (users, topics) = keys.split_at(shape.users);
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        let marked_now = DateTime::<Utc>::UNIX_EPOCH;
        let built = shape.backend.build(&statement(&users, &topics, marked_now, shape.reading));
        let slots = built
            .values
            .map(|values| values.0)
            .unwrap_or_default()
            .into_iter()
            .map(|value| match &value {
                sea_orm::Value::String(Some(text)) => match text.strip_prefix(MARK).and_then(|index| index.parse().ok()) {
                    Some(index) => Slot::Key(index),
                    None => Slot::Fixed(value),
                },
                sea_orm::Value::ChronoDateTimeUtc(Some(time)) if *time == marked_now => Slot::Now,
                _ => Slot::Fixed(value),
            })
            .collect();
        Template { backend: shape.backend, sql: built.sql, slots }
    }

    /// The statement for a batch: `keys` are its users, then its topics.
    fn bind(&self, keys: &[&str], now: DateTime<Utc>) -> sea_orm::Statement {
        let values = self.slots.iter().map(|slot| match slot {
            Slot::Key(index) => sea_orm::Value::from(keys[*index]),
            Slot::Now => sea_orm::Value::from(now),
            Slot::Fixed(value) => value.clone(),
        });
        sea_orm::Statement::from_sql_and_values(self.backend, self.sql.clone(), values)
    }
}

/// The statement of `reading` for `users` and `topics`.
fn statement(users: &[&str], topics: &[&str], now: DateTime<Utc>, reading: Reading) -> sea_orm::sea_query::SelectStatement {
    let mut branches = match reading {
        Reading::Summary { .. } => summary_branches(users, topics, now),
        Reading::Pages { limit } => pages(users, now, limit),
    }
    .into_iter();
    let mut statement = branches.next().expect("a statement has a branch");
    for branch in branches {
        statement.union(sea_orm::sea_query::UnionType::All, branch);
    }
    statement
}

/// The branches of `(kind, key, value)` rows, each an indexed look-up of
/// one key: `live` (announcements live at `now`, one row, first: it names
/// the columns), and for each of `users` its counter (`stored`), the
/// expired part of it (`expired`), the preference rows that hide a type
/// (`hiding`) and its memberships (`members`), and for each of `topics` its
/// newest event id (`head`). A zero count, a missing counter and a topic
/// without events have no row (`HAVING`): a batch of users with nothing
/// stored reads a row or two, not five per user, and every row costs a
/// copy of each value and a hand-off from SQLite's thread.
///
/// A branch per key, not `IN` lists: SQLite builds a temporary b-tree for
/// every `IN` list of every execution (its page cache and pager with it),
/// and `GROUP BY` another; those were a tenth of the CPU of opening a
/// stream (`perf record` during `bench/compare.sh idle`). `GROUP BY topic`
/// would also read every event of each topic to find its maximum.
fn summary_branches(users: &[&str], topics: &[&str], now: DateTime<Utc>) -> Vec<sea_orm::sea_query::SelectStatement> {
    use entity::{announcement, event, preference};
    use sea_orm::sea_query::{Alias, Condition, Func, Query};
    let mut branches = Vec::with_capacity(1 + 4 * users.len() + topics.len());
    let mut live = Query::select();
    live.expr_as(literal(summary::LIVE), Alias::new(summary::KIND))
        .expr_as(Expr::cust("''"), Alias::new(summary::KEY))
        .expr_as(Func::count(Expr::col(announcement::Column::Id)), Alias::new(summary::VALUE))
        .from(announcement::Entity)
        .cond_where(Condition::any().add(Expr::col(announcement::Column::ExpiresAt).is_null()).add(Expr::col(announcement::Column::ExpiresAt).gt(now)));
    branches.push(live);
    for user in users {
        let mut stored = Query::select();
        stored
            .expr(literal(summary::STORED))
            .column(unread_counter::Column::UserId)
            .column(unread_counter::Column::Count)
            .from(unread_counter::Entity)
            .and_where(Expr::col(unread_counter::Column::UserId).eq(*user));
        branches.push(stored);
        branches.push(rows_of_user(summary::EXPIRED, user, notification::Entity, notification::Column::UserId, notification::Column::Id, expired_unread(now)));
        branches.push(rows_of_user(summary::HIDING, user, preference::Entity, preference::Column::UserId, preference::Column::Kind, crate::store::preferences::hides_type()));
        branches.push(rows_of_user(summary::MEMBERS, user, entity::member::Entity, entity::member::Column::UserId, entity::member::Column::ConversationId, Condition::all()));
    }
    for topic in topics {
        let mut head = Query::select();
        head.expr(literal(summary::HEAD))
            .expr(Expr::val(*topic))
            .expr(Func::max(Expr::col(event::Column::Id)))
            .from(event::Entity)
            .and_where(Expr::col(event::Column::Topic).eq(*topic))
            .and_having(Func::max(Expr::col(event::Column::Id)).is_not_null());
        branches.push(head);
    }
    branches
}

/// A `(kind, user, count)` branch: how many rows of `table` belong to
/// `user` and meet `condition` (counted by `counted`, a column that is
/// never null), read through the index on `user_column`; no row when none
/// does.
fn rows_of_user(kind: &'static str, user: &str, table: impl sea_orm::sea_query::IntoTableRef, user_column: impl sea_orm::sea_query::IntoColumnRef, counted: impl sea_orm::sea_query::IntoColumnRef, condition: sea_orm::Condition) -> sea_orm::sea_query::SelectStatement {
    let counted = counted.into_column_ref();
    let mut branch = sea_orm::sea_query::Query::select();
    branch
        .expr(literal(kind))
        .expr(Expr::val(user))
        .expr(sea_orm::sea_query::Func::count(Expr::col(counted.clone())))
        .from(table)
        .and_where(Expr::col(user_column).eq(user))
        .cond_where(condition)
        .and_having(sea_orm::sea_query::Func::count(Expr::col(counted)).gt(Expr::cust("0")));
    branch
}

/// A branch per user: its newest `limit` unread notifications (the rows of
/// `store::notifications::newest_unread_query`, a limited read of one
/// index in event order).
fn pages(users: &[&str], now: DateTime<Utc>, limit: u64) -> Vec<sea_orm::sea_query::SelectStatement> {
    use sea_orm::{
        QueryTrait,
        sea_query::{Alias, Asterisk, Query},
    };
    users
        .iter()
        .map(|user| {
            let user = UserId::parse(*user).expect("batch users and template marks are user ids");
            let page = crate::store::notifications::newest_unread_query(&user, now, limit).into_query();
            let mut branch = Query::select();
            branch.column(Asterisk).from_subquery(page, Alias::new("page"));
            branch
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream of a user in hundreds of conversations: more topics than
    /// one compound statement may hold.
    #[tokio::test]
    async fn the_head_of_more_topics_than_one_statement_holds_is_the_newest_of_all() {
        use migration::MigratorTrait;
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())).await.unwrap();
        migration::Migrator::up(&db, None).await.unwrap();
        let topics: Vec<String> = (0..600).map(|n| format!("conversation:{n}")).collect();
        for (n, topic) in topics.iter().enumerate() {
            // The newest event of all is on a topic beyond the first statement's share.
            let id = if n == 450 { 9_000 } else { n as i64 + 1 };
            let event = entity::event::ActiveModel {
                id: sea_orm::Set(id),
                topic: sea_orm::Set(topic.clone()),
                event: sea_orm::Set("message".into()),
                data: sea_orm::Set("{}".into()),
                created_at: sea_orm::Set(Utc::now()),
                ..Default::default()
            };
            sea_orm::ActiveModelTrait::insert(event, &db).await.unwrap();
        }
        let user = UserId::parse("ann").unwrap();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let states = states_of(&db, &[FreshPart { user: &user, topics: &names }], Utc::now()).await.unwrap();
        assert_eq!(states[0].head, 9_000);
        let few = &names[..3];
        let states = states_of(&db, &[FreshPart { user: &user, topics: few }], Utc::now()).await.unwrap();
        assert_eq!(states[0].head, 3);
    }

    /// A stream opening without a resume point learns from the summary
    /// whether it must read its user's memberships; a user and a topic
    /// with nothing stored read as zero (their rows are left out).
    #[tokio::test]
    async fn the_summary_counts_memberships_and_reads_nothing_stored_as_zero() {
        use migration::MigratorTrait;
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())).await.unwrap();
        migration::Migrator::up(&db, None).await.unwrap();
        let (ann, bob) = (UserId::parse("ann").unwrap(), UserId::parse("bob").unwrap());
        let now = Utc::now();
        for _ in 0..2 {
            let conversation = crate::store::chat::create_conversation(&db, None, &ann, now).await.unwrap();
            crate::store::chat::add_member(&db, conversation.id, &ann, crate::domain::EventId::new(0), now).await.unwrap();
        }
        let (ann_topics, bob_topics) = (["user:ann"], ["user:bob"]);
        let parts = [FreshPart { user: &ann, topics: &ann_topics }, FreshPart { user: &bob, topics: &bob_topics }];
        let states = states_of(&db, &parts, now).await.unwrap();
        assert_eq!(states[0].memberships, 2);
        let nothing = StreamState { head: 0, stored: 0, expired: 0, live_announcements: 0, hiding_preferences: 0, memberships: 0 };
        assert_eq!(states[1], nothing);
    }

    #[test]
    fn a_template_bound_to_a_batch_is_the_statement_built_for_that_batch() {
        let now = Utc::now();
        let users = ["ann", "bob"];
        let topics = ["announcements", "user:ann", "user:bob"];
        let keys = ["ann", "bob", "announcements", "user:ann", "user:bob"];
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            for reading in [Reading::Summary { topics: topics.len() }, Reading::Pages { limit: 100 }] {
                let shape = Shape { backend, users: users.len(), reading };
                let bound = Template::build(shape).bind(&keys, now);
                let built = backend.build(&statement(&users, &topics, now, reading));
                assert_eq!(bound.sql, built.sql, "{backend:?}, {reading:?}");
                assert_eq!(bound.values, built.values, "{backend:?}, {reading:?}");
            }
        }
    }
}
