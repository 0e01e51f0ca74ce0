//! Persistence: SeaORM queries, one module per table family, each function
//! taking a connection (or a transaction) so that callers choose the
//! transaction boundaries.
//!
//! - [`event_log`]: the append-only log every stream resumes from, and the
//!   one writer that keeps its ids in commit order;
//! - [`notifications`]: notification rows and their queries;
//! - [`idempotency`]: remembered answers for `Idempotency-Key`.
//!
//! Nothing here uses SQL that only one backend speaks, apart from the
//! clearly marked PostgreSQL lock in `event_log`.

pub mod chat;
pub mod event_log;
pub mod idempotency;
pub mod notifications;
pub mod preferences;

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

pub use event_log::{EventLog, LogWrite};

/// Opens the pool. SQLite gets WAL (readers never block the writer),
/// `synchronous=NORMAL` (durable across a process crash, one fsync per
/// checkpoint rather than per commit), foreign keys and a busy timeout, and
/// several connections so that replays read while the writer writes.
pub async fn connect(url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(16)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(|opts| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
        });
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        tracing::debug!("SQLite in WAL mode");
    }
    Ok(db)
}
