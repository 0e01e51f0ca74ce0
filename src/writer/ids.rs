//! Id allocation for one batch, in commit order.
//!
//! - **SQLite**: the writer is the only writer of the file and the batch
//!   holds `BEGIN IMMEDIATE`, so the tables' `AUTOINCREMENT` sequences are
//!   read once at the start of the batch and ids are handed out in memory.
//!   Rows are inserted with their ids, which moves the sequences on, so an
//!   id is never reused even after its row is pruned.
//! - **PostgreSQL**: ids come from the tables' sequences (`nextval`), many
//!   in one statement. The batch holds the cluster-wide advisory lock while
//!   it draws them, so ids still grow in commit order across nodes.

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement};

/// The ids of one batch.
pub enum Ids {
    /// SQLite: the next free id of each table.
    Local { next_event: i64, next_notification: i64, next_message: i64 },
    /// PostgreSQL: drawn from the sequences.
    Sequences,
}

impl Ids {
    /// Reads where the sequences stand, inside the batch's transaction.
    pub async fn start(txn: &DatabaseTransaction) -> Result<Ids, DbErr> {
        if txn.get_database_backend() != DbBackend::Sqlite {
            return Ok(Ids::Sequences);
        }
        // The sequence is at least the largest id ever inserted; MAX(id)
        // covers a table whose sequence row does not exist yet.
        let sql = "SELECT \
            MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), COALESCE((SELECT MAX(id) FROM events), 0)), \
            MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'notifications'), 0), COALESCE((SELECT MAX(id) FROM notifications), 0)), \
            MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0), COALESCE((SELECT MAX(id) FROM messages), 0))";
        let row = txn
            .query_one_raw(Statement::from_string(DbBackend::Sqlite, sql))
            .await?
            .ok_or_else(|| DbErr::Custom("reading the id sequences returned nothing".into()))?;
        let events: i64 = row.try_get_by_index(0)?;
        let notifications: i64 = row.try_get_by_index(1)?;
        let messages: i64 = row.try_get_by_index(2)?;
        Ok(Ids::Local { next_event: events + 1, next_notification: notifications + 1, next_message: messages + 1 })
    }

    /// `n` new event ids, ascending.
    pub async fn events(&mut self, txn: &DatabaseTransaction, n: usize) -> Result<Vec<i64>, DbErr> {
        match self {
            Ids::Local { next_event, .. } => Ok(take(next_event, n)),
            Ids::Sequences => draw(txn, "events", n).await,
        }
    }

    /// `n` new message ids, ascending.
    pub async fn messages(&mut self, txn: &DatabaseTransaction, n: usize) -> Result<Vec<i64>, DbErr> {
        match self {
            Ids::Local { next_message, .. } => Ok(take(next_message, n)),
            Ids::Sequences => draw(txn, "messages", n).await,
        }
    }

    /// `n` new notification ids, ascending.
    pub async fn notifications(&mut self, txn: &DatabaseTransaction, n: usize) -> Result<Vec<i64>, DbErr> {
        match self {
            Ids::Local { next_notification, .. } => Ok(take(next_notification, n)),
            Ids::Sequences => draw(txn, "notifications", n).await,
        }
    }
}

fn take(next: &mut i64, n: usize) -> Vec<i64> {
    let first = *next;
    *next += n as i64;
    (first..*next).collect()
}

/// `n` values of `table`'s id sequence in one statement (PostgreSQL).
async fn draw(txn: &DatabaseTransaction, table: &str, n: usize) -> Result<Vec<i64>, DbErr> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT nextval(pg_get_serial_sequence('{table}', 'id')) AS id FROM generate_series(1, {n}) ORDER BY 1");
    let rows = txn.query_all_raw(Statement::from_string(DbBackend::Postgres, sql)).await?;
    let mut ids = Vec::with_capacity(n);
    for row in rows {
        ids.push(row.try_get_by_index::<i64>(0)?);
    }
    Ok(ids)
}
