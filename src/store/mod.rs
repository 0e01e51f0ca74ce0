//! Persistence: SeaORM queries, one module per table family, each function
//! taking a connection (or a transaction) so that callers choose the
//! transaction boundaries.
//!
//! - [`event_log`]: reads of the append-only log every stream resumes from;
//! - [`notifications`]: notification rows and their queries;
//! - [`announcements`]: notifications stored once for many users, and users' marks;
//! - [`unread`]: the per-user unread counters;
//! - [`idempotency`]: remembered answers for `Idempotency-Key`.
//!
//! Writes happen inside the [`Writer`](crate::writer)'s transactions; the
//! functions here only run statements on the connection they are given.

pub mod announcements;
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
    connect_with(url, Pool::Readers { connections: 16 }, SqliteSync::Normal, DEFAULT_TIMEOUT).await
}

/// How long a connection may take to be handed out, unless configured
/// (`TIDINGS_DATABASE_TIMEOUT_SECS`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `err` says the database could not be reached, rather than that
/// it refused a statement: no pooled connection in time, a connection lost
/// or refused. Such a request answers 503 `unavailable` (the contract's
/// word for a dependency that does not answer), not 500.
pub fn is_unreachable(err: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr, sqlx::Error};
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(**e, Error::Io(_) | Error::PoolTimedOut | Error::PoolClosed | Error::WorkerCrashed)
        }
        _ => false,
    }
}

/// Which pool to open.
#[derive(Debug, Clone, Copy)]
pub enum Pool {
    /// The read pool, of this many connections.
    Readers { connections: u32 },
    /// The writer's own connection.
    Writer,
}

/// WAL pages after which the writer checkpoints inline, as a safety net:
/// normally [`spawn_checkpointer`] keeps the WAL far smaller, off the
/// writer's path.
const WRITER_AUTOCHECKPOINT_PAGES: &str = "16384";

/// Rows a SQLite connection's worker thread may hand over before it waits
/// for the reader: a replay page (1,000 events by default) and then some.
/// The buffer grows only as rows arrive.
const ROW_BUFFER: usize = 1024;

/// Opens a pool. SQLite gets WAL (readers never block the writer), the
/// given `synchronous` level, foreign keys, a busy timeout and temporary
/// data in memory (statement journals of multi-row inserts then cost no
/// file writes). The writer's connection checkpoints the WAL only as a
/// last resort, so commits do not pay for copying pages into the database.
///
/// `timeout` bounds connecting and waiting for a pooled connection, so a
/// database that is gone fails a request in bounded time.
pub async fn connect_with(url: &str, pool: Pool, sync: SqliteSync, timeout: Duration) -> Result<DatabaseConnection, sea_orm::DbErr> {
    if url.starts_with("sqlite:") {
        sqlite_without_memory_statistics();
    }
    let connections = match pool {
        Pool::Readers { connections } => connections,
        Pool::Writer => 1,
    };
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(connections)
        .min_connections(1)
        .connect_timeout(timeout)
        .acquire_timeout(timeout)
        .sqlx_logging(false)
        // A pooled SQLite connection is a file handle in this process: it
        // cannot go stale the way a network connection can, so sqlx's ping
        // before every hand-out is pure cost (a round trip to the
        // connection's worker thread; one in seven of a stream open's).
        // PostgreSQL keeps it: a ping there finds a connection the network
        // broke before a request does.
        .test_before_acquire(!url.starts_with("sqlite:"))
        .map_sqlx_sqlite_opts(move |opts| {
            use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
            let opts = opts
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(match sync {
                    SqliteSync::Normal => SqliteSynchronous::Normal,
                    SqliteSync::Full => SqliteSynchronous::Full,
                })
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                .pragma("temp_store", "memory")
                .pragma("journal_size_limit", "67108864")
                // A connection's rows come from its worker thread through a
                // channel; sqlx's default holds 50, so a replay page of
                // 1,000 rows stopped the worker twenty times to wait for
                // the reader, each a thread hand-off both ways. A page fits.
                .row_buffer_size(ROW_BUFFER);
            match pool {
                Pool::Writer => opts.pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES),
                Pool::Readers { .. } => opts,
            }
        })
        .map_sqlx_sqlite_pool_opts(|pool| pool.after_connect(|connection, _| Box::pin(stable_query_plans(connection))));
    let db = Database::connect(options).await?;
    if db.get_database_backend() == DbBackend::Sqlite {
        tracing::debug!("SQLite in WAL mode");
    }
    Ok(db)
}

/// SQLite: turns off its memory statistics, once, before the process
/// opens its first connection.
///
/// Why: with them on (SQLite's default), every allocation SQLite makes takes
/// one process-wide mutex to count it. Twenty-one connections on their own
/// threads (readers, batch readers, the writer) contended on it: a profile of
/// a catch-up (`perf record` during `tidings-bench catchup`) spent about 4 %
/// of the server's CPU in that mutex, and its waits are thread sleeps and
/// wake-ups. SQLite's documentation recommends turning them off where
/// `sqlite3_status()` is not used; nothing here uses it.
fn sqlite_without_memory_statistics() {
    use libsqlite3_sys::{SQLITE_CONFIG_MEMSTATUS, sqlite3_config};
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` may only run while no other thread uses
        // SQLite. In the server every connection is opened through
        // `connect_with`, so this runs before the first one, and `Once`
        // holds back concurrent callers until it returns. (A test that
        // opens SQLite itself with `Database::connect` at the same moment
        // as the first `connect_with` would be outside that guarantee; at
        // worst SQLite's allocation counts, which nothing reads, would be
        // off.) Called after SQLite was initialized, it changes nothing and
        // returns SQLITE_MISUSE: the statistics then stay on.
        let code = unsafe { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int) };
        if code != libsqlite3_sys::SQLITE_OK {
            tracing::debug!(code, "SQLite memory statistics left on");
        }
    });
}

/// SQLite: turns on the query planner stability guarantee
/// (`SQLITE_DBCONFIG_ENABLE_QPSG`) for a new connection.
///
/// Why: without it, SQLite (3.47 and later) looks at the value bound to
/// `LIMIT ?` when it compiles a statement, and marks the statement to be
/// compiled again whenever that parameter is bound anew. SeaORM binds every
/// limit, so every replay page, unread page and list was parsed and planned
/// afresh on each execution, cached statement or not: a profile of 5,000
/// stream opens (`perf record` during `tidings-bench idle`) spent 7 % of the
/// server's CPU in `sqlite3Reprepare`. With the guarantee, a statement keeps
/// the plan it was first given, which for our indexed look-ups is the only
/// plan there is.
async fn stable_query_plans(connection: &mut sea_orm::sqlx::SqliteConnection) -> Result<(), sea_orm::sqlx::Error> {
    use libsqlite3_sys::{SQLITE_DBCONFIG_ENABLE_QPSG, SQLITE_OK, sqlite3_db_config};
    let mut handle = connection.lock_handle().await?;
    let raw = handle.as_raw_handle().as_ptr();
    // SAFETY: `raw` is this connection's open handle, held locked (so no
    // other thread uses it) for the duration of the call; the option takes
    // an int (1: on) and an optional out-pointer, which may be null.
    let rc = unsafe { sqlite3_db_config(raw, SQLITE_DBCONFIG_ENABLE_QPSG, 1 as std::ffi::c_int, std::ptr::null_mut::<std::ffi::c_int>()) };
    if rc != SQLITE_OK {
        return Err(sea_orm::sqlx::Error::Configuration(format!("SQLite refused the query planner stability guarantee (code {rc})").into()));
    }
    Ok(())
}

/// SQLite: checkpoints the WAL five times a second from the read pool, so that the
/// writer's commits never copy pages into the database themselves. A
/// passive checkpoint never blocks the writer or a reader; what a reader
/// still needs waits for the next one. Small, frequent checkpoints keep
/// the WAL short (every page look-up searches it) and each checkpoint's
/// I/O small: measured with `bench/compare.sh notify`, publish p99 fell
/// from 31.8 ms at one checkpoint a second to 13.5 ms at five, and to
/// 87 ms with only SQLite's own inline checkpoints (BENCHMARKS.md).
pub fn spawn_checkpointer(db: DatabaseConnection, shutdown: tokio_util::sync::CancellationToken) {
    use sea_orm::ConnectionTrait;
    if db.get_database_backend() != DbBackend::Sqlite {
        return;
    }
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            if let Err(e) = db.execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)").await {
                tracing::debug!(error = %e, "WAL checkpoint skipped");
            }
        }
    });
}
