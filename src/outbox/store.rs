//! Delivery rows: written with notifications, claimed and settled by
//! workers, listed and counted for the API and metrics.
//!
//! Times on SQLite are text in the form sqlx binds (RFC 3339, `+00:00`),
//! so `due_at <= now` compares correctly as text; the set-based publish
//! renders the same form when it writes rows as literals.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Statement, Value,
    sea_query::{Expr, InsertStatement, Query, SimpleExpr},
};

use super::{ChannelKind, Delivery, DeliveryStatus, Route, idempotency_id};
use entity::delivery::{self, Column, Entity as Deliveries};

/// Rows per multi-row INSERT: 9 columns × 1000 stays under SQLite's limit.
pub const INSERT_CHUNK: usize = 1000;

/// A delivery row to write with its notification.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub notification_id: i64,
    pub user_id: String,
    pub route: Route,
    pub due_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// The multi-row INSERT of `rows`, with times rendered by `time` (bound
/// values, or SQLite literals in the publish script).
pub fn insert_statement(rows: &[NewDelivery], time: impl Fn(DateTime<Utc>) -> SimpleExpr) -> InsertStatement {
    let mut insert = Query::insert();
    insert.into_table(Deliveries).columns([
        Column::NotificationId,
        Column::UserId,
        Column::Channel,
        Column::Target,
        Column::Status,
        Column::Attempts,
        Column::DueAt,
        Column::IdempotencyId,
        Column::UpdatedAt,
    ]);
    for row in rows {
        insert.values_panic([
            row.notification_id.into(),
            row.user_id.clone().into(),
            row.route.channel.as_str().into(),
            row.route.target.clone().into(),
            DeliveryStatus::Pending.as_str().into(),
            0i32.into(),
            time(row.due_at),
            idempotency_id(row.notification_id, &row.route).into(),
            time(row.now),
        ]);
    }
    insert
}

/// Writes `rows` with bound values, in chunks.
pub async fn insert(conn: &impl ConnectionTrait, rows: &[NewDelivery]) -> Result<(), DbErr> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let statement = insert_statement(chunk, Expr::val);
        conn.execute(&statement).await?;
    }
    Ok(())
}

/// A claimed row: what the worker needs to deliver it.
#[derive(Debug, Clone, FromQueryResult)]
struct Claimed {
    id: i64,
    notification_id: i64,
    user_id: String,
    channel: String,
    target: Option<String>,
    attempts: i32,
    idempotency_id: String,
}

/// Claims up to `limit` due pending rows: each gets its lease (`due_at =
/// lease_until`) and one more attempt, in one statement. On PostgreSQL the
/// rows are picked `FOR UPDATE SKIP LOCKED`, so claims of several nodes
/// never take the same row.
pub async fn claim(conn: &impl ConnectionTrait, now: DateTime<Utc>, lease_until: DateTime<Utc>, limit: usize) -> Result<Vec<Delivery>, DbErr> {
    let backend = conn.get_database_backend();
    let lock = if backend == DbBackend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    let [p1, p2, p3, p4, p5] = placeholders(backend);
    let sql = format!(
        "UPDATE deliveries SET due_at = {p1}, attempts = attempts + 1, updated_at = {p2} \
         WHERE id IN (SELECT id FROM deliveries WHERE status = {p3} AND due_at <= {p4} ORDER BY due_at LIMIT {p5}{lock}) \
         RETURNING id, notification_id, user_id, channel, target, attempts, idempotency_id"
    );
    let values: Vec<Value> = vec![lease_until.into(), now.into(), DeliveryStatus::Pending.as_str().into(), now.into(), (limit as i64).into()];
    let rows = Claimed::find_by_statement(Statement::from_sql_and_values(backend, sql, values)).all(conn).await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some(Delivery {
                id: row.id,
                notification_id: row.notification_id,
                user_id: row.user_id,
                channel: ChannelKind::parse(&row.channel)?,
                target: row.target,
                attempt: u32::try_from(row.attempts).unwrap_or(1),
                idempotency_id: row.idempotency_id,
            })
        })
        .collect())
}

fn placeholders(backend: DbBackend) -> [&'static str; 5] {
    match backend {
        DbBackend::Postgres => ["$1", "$2", "$3", "$4", "$5"],
        _ => ["?", "?", "?", "?", "?"],
    }
}

/// How an attempt ended, for [`settle`].
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: i64,
    pub status: DeliveryStatus,
    /// For `pending`: when the next attempt falls due.
    pub due_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// Records the outcomes of attempts. Only rows still `pending` change: a
/// row settled by another path stays as it is.
pub async fn settle(conn: &impl ConnectionTrait, outcomes: &[Outcome], now: DateTime<Utc>) -> Result<(), DbErr> {
    for outcome in outcomes {
        let mut update = Deliveries::update_many()
            .col_expr(Column::Status, Expr::val(outcome.status.as_str()).into())
            .col_expr(Column::LastError, Expr::val(outcome.last_error.clone()).into())
            .col_expr(Column::UpdatedAt, Expr::val(now).into());
        if let Some(due) = outcome.due_at {
            update = update.col_expr(Column::DueAt, Expr::val(due).into());
        }
        update.filter(Column::Id.eq(outcome.id)).filter(Column::Status.eq(DeliveryStatus::Pending.as_str())).exec(conn).await?;
    }
    Ok(())
}

/// Of `ids`, the notifications with a pending delivery on `channel`, and
/// when it is due (the earliest, if several).
pub async fn pending_due(conn: &impl ConnectionTrait, channel: ChannelKind, ids: &[i64]) -> Result<std::collections::HashMap<i64, DateTime<Utc>>, DbErr> {
    let mut due = std::collections::HashMap::new();
    if ids.is_empty() {
        return Ok(due);
    }
    let rows: Vec<(i64, DateTime<Utc>)> = Deliveries::find()
        .select_only()
        .column(Column::NotificationId)
        .column(Column::DueAt)
        .filter(Column::NotificationId.is_in(ids.iter().copied()))
        .filter(Column::Channel.eq(channel.as_str()))
        .filter(Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .into_tuple()
        .all(conn)
        .await?;
    for (id, at) in rows {
        due.entry(id).and_modify(|known: &mut DateTime<Utc>| *known = (*known).min(at)).or_insert(at);
    }
    Ok(due)
}

/// Every delivery of a notification, oldest first.
pub async fn of_notification(conn: &impl ConnectionTrait, notification_id: i64) -> Result<Vec<delivery::Model>, DbErr> {
    Deliveries::find().filter(Column::NotificationId.eq(notification_id)).order_by_asc(Column::Id).all(conn).await
}

/// Rows by channel and status, for metrics.
pub async fn counts(conn: &impl ConnectionTrait) -> Result<Vec<(String, String, i64)>, DbErr> {
    Deliveries::find()
        .select_only()
        .column(Column::Channel)
        .column(Column::Status)
        .column_as(Expr::cust("COUNT(*)"), "n")
        .group_by(Column::Channel)
        .group_by(Column::Status)
        .into_tuple()
        .all(conn)
        .await
}

/// The due time of the oldest pending row that is due now: the outbox lag
/// is how long ago that was.
pub async fn oldest_due(conn: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, DbErr> {
    let row: Option<Option<DateTime<Utc>>> = Deliveries::find()
        .select_only()
        .column_as(Column::DueAt.min(), "oldest")
        .filter(Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(Column::DueAt.lte(now))
        .into_tuple()
        .one(conn)
        .await?;
    Ok(row.flatten())
}

/// Per type and channel: deliveries sent, failed, and sent ones whose
/// notification was clicked.
pub async fn stats(conn: &impl ConnectionTrait, kind: Option<&str>, since: Option<DateTime<Utc>>) -> Result<Vec<(String, String, i64, i64, i64)>, DbErr> {
    let backend = conn.get_database_backend();
    let mut sql = String::from(
        "SELECT n.\"type\", d.channel, \
         SUM(CASE WHEN d.status = 'sent' THEN 1 ELSE 0 END), \
         SUM(CASE WHEN d.status = 'failed' THEN 1 ELSE 0 END), \
         SUM(CASE WHEN d.status = 'sent' AND n.clicked_at IS NOT NULL THEN 1 ELSE 0 END) \
         FROM deliveries d JOIN notifications n ON n.id = d.notification_id WHERE 1 = 1",
    );
    let mut values: Vec<Value> = Vec::new();
    let next = |values: &mut Vec<Value>, value: Value| {
        values.push(value);
        if backend == DbBackend::Postgres { format!("${}", values.len()) } else { "?".to_owned() }
    };
    if let Some(kind) = kind {
        let p = next(&mut values, kind.into());
        sql.push_str(&format!(" AND n.\"type\" = {p}"));
    }
    if let Some(since) = since {
        let p = next(&mut values, since.into());
        sql.push_str(&format!(" AND n.created_at >= {p}"));
    }
    sql.push_str(" GROUP BY n.\"type\", d.channel");
    let rows = conn.query_all_raw(Statement::from_sql_and_values(backend, sql, values)).await?;
    rows.into_iter()
        .map(|row| {
            Ok((
                row.try_get_by_index::<String>(0)?,
                row.try_get_by_index::<String>(1)?,
                row.try_get_by_index::<Option<i64>>(2)?.unwrap_or(0),
                row.try_get_by_index::<Option<i64>>(3)?.unwrap_or(0),
                row.try_get_by_index::<Option<i64>>(4)?.unwrap_or(0),
            ))
        })
        .collect()
}
