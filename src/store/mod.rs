//! Persistence: SeaORM queries, one module per table family, each function
//! taking a connection (or a transaction) so that callers choose the
//! transaction boundaries.
//!
//! - [`event_log`]: reads of the append-only log every stream resumes from;
//! - [`notifications`]: notification rows and their queries;
//! - [`unread`]: the per-user unread counters;
//! - [`idempotency`]: remembered answers for `Idempotency-Key`.
//!
//! Writes happen inside the [`Writer`](crate::writer)'s transactions; the
//! functions here only run statements on the connection they are given.

pub mod chat;
pub mod event_log;
pub mod idempotency;
pub mod notifications;
pub mod preferences;
pub mod unread;

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};

/// How SQLite syncs a commit to disk (`TIDINGS_SQLITE_SYNCHRONOUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SqliteSync {
    /// WAL with `synchronous=NORMAL`: a commit survives the process
    /// crashing; the last commits before a power loss or OS crash may be
    /// lost (the database stays consistent).
    #[default]
    Normal,
    /// `synchronous=FULL`: a commit survives power loss too, at one fsync
    /// per commit (shared by a whole write batch).
    Full,
}

/// Opens the read pool: several connections, so that replays and lists
/// read while the writer writes. See [`connect_with`].
pub async fn connect(url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    connect_with(url, 16, SqliteSync::Normal).await
}

/// Opens a pool of `connections`. SQLite gets WAL (readers never block the
/// writer), the given `synchronous` level, foreign keys and a busy timeout.
/// The writer opens its own pool of one, so it never waits for a connection
/// behind readers.
pub async fn connect_with(url: &str, connections: u32, sync: SqliteSync) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(move |opts| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            opts.journal_mode(SqliteJournalMode::Wal)
                .synchronous(match sync {
                    SqliteSync::Normal => SqliteSynchronous::Normal,
                    SqliteSync::Full => SqliteSynchronous::Full,
                })
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
        });
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        tracing::debug!("SQLite in WAL mode");
    }
    Ok(db)
}
