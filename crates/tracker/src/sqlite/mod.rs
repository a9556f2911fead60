//! The embedded store: the whole record in one SQLite file, for the
//! zero-server mode (one host, no PostgreSQL, no RabbitMQ). It fills the same
//! [`crate::Store`] contract as [`crate::Tracker`], module by module: each
//! file here mirrors the PostgreSQL module of the same name, in the same
//! order, so a reader compares the two statement by statement.
//!
//! # How SQLite's single writer is handled
//! - WAL journal: readers never block the writer nor each other.
//! - One writer at a time inside a process: every write takes its turn at
//!   the handle's gate ([`Embedded::begin`], [`Embedded::turn`]), a FIFO
//!   queue of tasks, before asking SQLite for the lock. Without it a
//!   worker's 16 slots all asked SQLite at once, and all but one slept in
//!   the busy handler and asked again (at concurrency 16 a quarter of the
//!   worker's CPU went to those sleeps and lock calls). The turn holds the
//!   process's write connections (`writer.rs`): sqlx's, and the inline one
//!   on which the decisions and the queue's take and settle run on the
//!   caller's thread (`inline.rs`); they keep their page caches warm, and
//!   let a write commit without a flush of its own when losing it in a
//!   machine crash only repeats a delivery.
//! - `busy_timeout`: a writer waits for the one before it (30 s by default);
//!   with the gate, only writers of other processes (the keeper, the UI, a
//!   CLI command) still meet there.
//! - Every transaction that may write begins with `BEGIN IMMEDIATE`
//!   ([`Embedded::begin`]): a deferred one that reads first and writes later
//!   fails at once with SQLITE_BUSY when another process wrote in between,
//!   whatever the timeout. A single statement outside a transaction takes
//!   its write lock when it starts, so it waits like an immediate one.
//! - Transactions are short: never held across anything but SQL.
//! - A write is on disk when it returns, as a PostgreSQL commit is (a run
//!   is never lost to a power cut): the write connection commits at
//!   `synchronous = NORMAL` and then waits for a flush of the log shared
//!   with the commits that wait at once (`writer.rs`); the pool, which
//!   only reads once the store is open, stays at `synchronous = FULL`.
//!
//! # Types (see `migrations/sqlite/*.sql`)
//! UUIDs are 16-byte BLOBs; times are RFC 3339 TEXT in UTC with "+00:00"
//! (sqlx's encoding of `DateTime<Utc>`), so text order is time order; times
//! are computed in Rust and bound ([`now`]); JSON and arrays are TEXT JSON.

pub(crate) mod activity;
pub(crate) mod apply;
mod apply_sql;
#[cfg(test)]
mod apply_tests;
mod busy;
pub(crate) mod events;
pub(crate) mod executions;
#[cfg(test)]
mod group_commit_tests;
pub(crate) mod history;
mod inline;
pub(crate) mod logs;
pub mod queue;
pub(crate) mod recovery;
pub(crate) mod retention;
pub(crate) mod runs;
pub(crate) mod schedules;
pub(crate) mod slots;
pub(crate) mod store;
#[cfg(test)]
mod test_runs;
pub(crate) mod ui_queries;
pub(crate) mod views;
pub(crate) mod workers;
mod writer;

use crate::{Result, TrackerError};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
pub(crate) use writer::{Durability, LostConnection, Turn, Unflushed, WriteTx};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Where the embedded store is and who may use it.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The SQLite file (created with its directory when missing).
    pub path: PathBuf,
    /// The project directory this store belongs to: recorded when the file
    /// is created, and a different project opening it is refused. `None`
    /// skips the check (tools that only read).
    pub project: Option<PathBuf>,
    pub max_connections: u32,
    /// How long a writer waits for the one before it.
    pub busy_timeout: Duration,
}

impl EmbeddedConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            path: path.into(),
            project: None,
            max_connections: 8,
            busy_timeout: Duration::from_secs(30),
        }
    }
}

/// Handle on the embedded store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub(crate) pool: SqlitePool,
    path: PathBuf,
    /// The process's writers' queue: see "One writer at a time" above.
    writer: Arc<Mutex<writer::Writer>>,
    /// Decisions waiting for the write turn, for a group commit
    /// ([`apply::apply_write`]).
    batch: Arc<std::sync::Mutex<Vec<apply::Pending>>>,
}

impl Embedded {
    /// Opens (creating it when missing) and migrates the store, and checks
    /// that it belongs to `config.project`.
    pub async fn open(config: &EmbeddedConfig) -> Result<Embedded> {
        let path = &config.path;
        let store_err = |what: String| TrackerError::Embedded {
            path: path.display().to_string(),
            what,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                let fix = if dir.exists() && !dir.is_dir() {
                    "it is a file, not a directory: move it aside"
                } else {
                    "make its parent writable"
                };
                store_err(format!(
                    "cannot create the directory {}: {e}; {fix}, or set DATABASE_URL=sqlite://PATH to put the store elsewhere",
                    dir.display()
                ))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(config.busy_timeout)
            .foreign_keys(true);
        let busy_timeout = config.busy_timeout;
        let pool = SqlitePoolOptions::new()
            .after_connect(move |conn, _| Box::pin(busy::install(conn, busy_timeout)))
            .max_connections(config.max_connections.max(2))
            .min_connections(1)
            .acquire_timeout(config.busy_timeout + Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(|e| store_err(explain_open(&e)))?;
        // The log's path must not depend on the working directory.
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let writer = writer::Writer::new(options, busy_timeout, &absolute);
        let store = Embedded {
            pool,
            path: path.clone(),
            writer: Arc::new(Mutex::new(writer)),
            batch: Arc::default(),
        };
        store.migrate().await.map_err(|e| match e {
            TrackerError::Migrate(m) => store_err(explain_migrate(&m)),
            other => other,
        })?;
        if let Some(project) = &config.project {
            store.claim_project(project).await.map_err(|e| match e {
                TrackerError::Sql(s) => store_err(explain_open(&s)),
                other => other,
            })?;
        }
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Records the project the store belongs to on first use; refuses
    /// another one.
    async fn claim_project(&self, project: &Path) -> Result<()> {
        let mine = std::fs::canonicalize(project)
            .unwrap_or_else(|_| project.to_path_buf())
            .display()
            .to_string();
        sqlx::query("INSERT INTO store_meta (key, value) VALUES ('project', ?) ON CONFLICT (key) DO NOTHING")
            .bind(&mine)
            .execute(&self.pool)
            .await?;
        let (owner,): (String,) = sqlx::query_as("SELECT value FROM store_meta WHERE key = 'project'")
            .fetch_one(&self.pool)
            .await?;
        if owner != mine {
            return Err(TrackerError::Embedded {
                path: self.path.display().to_string(),
                what: format!(
                    "it belongs to the project at {owner}, not to {mine}. Each project keeps its own store: \
                     run from {owner}, or give this project its own file with DATABASE_URL=sqlite://PATH"
                ),
            });
        }
        Ok(())
    }

    /// A transaction that may write: `BEGIN IMMEDIATE` takes the write lock
    /// at once (waiting up to the busy timeout), so it never fails half-way
    /// with SQLITE_BUSY as a deferred one that writes after reading does.
    /// On the process's write connection, after waiting for the write turn,
    /// which the transaction holds until it is committed or dropped (then
    /// rolled back); the commit returns once it is flushed.
    pub(crate) async fn begin(&self) -> Result<WriteTx> {
        Ok(self.turn().await.begin().await?)
    }

    /// A read transaction on the write connection, holding the write turn.
    pub(crate) async fn begin_read(&self) -> Result<WriteTx> {
        Ok(self.turn().await.begin_read().await?)
    }

    pub(crate) fn lock_batch(&self) -> std::sync::MutexGuard<'_, Vec<apply::Pending>> {
        self.batch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The write turn: the process's writers take it in order (a FIFO
    /// gate), so they do not meet in SQLite's busy handler.
    pub(crate) async fn turn(&self) -> Turn {
        Turn(self.writer.clone().lock_owned().await)
    }

    /// One write (a statement in autocommit), flushed before it returns.
    pub(crate) async fn write<T, E>(
        &self,
        f: impl AsyncFnOnce(&mut SqliteConnection) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<sqlx::Error> + LostConnection,
    {
        self.write_as(Durability::Flushed, f).await
    }

    /// One write, as durable as `durability` asks: `Logged` for a write
    /// whose loss in a machine crash only repeats a delivery (committed
    /// without waiting for a flush; see `writer.rs`).
    pub(crate) async fn write_as<T, E>(
        &self,
        durability: Durability,
        f: impl AsyncFnOnce(&mut SqliteConnection) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<sqlx::Error> + LostConnection,
    {
        self.turn().await.write(durability, f).await
    }

    /// Whether `other` is this handle or a clone of it (one write turn).
    pub(crate) fn same_handle(&self, other: &Embedded) -> bool {
        Arc::ptr_eq(&self.writer, &other.writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The store's clock: one host, so the process's clock is every caller's.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// What to do about a SQLite error that comes from the file or its disk
/// rather than from the command (the disk full, a write refused, a read
/// failed), whenever a statement meets it; `None` for the others. SQLite
/// rolls the statement back, so what was recorded before is intact.
pub fn explain_storage(e: &sqlx::Error) -> Option<&'static str> {
    let sqlx::Error::Database(db) = e else { return None };
    let primary = db.code()?.parse::<i32>().ok()? & 0xff;
    Some(match primary {
        // SQLITE_FULL
        13 => {
            "the disk holding the embedded store is full: free some space and run the command again \
             (nothing of this command was written; what was recorded before is kept)"
        }
        // SQLITE_IOERR
        10 => {
            "the embedded store's disk failed a read or write (is it full, or gone?): free some space or fix \
             the disk and run the command again (nothing of this command was written; what was recorded before is kept)"
        }
        // SQLITE_READONLY
        8 => {
            "the embedded store cannot be written (a read-only file, directory or filesystem): make them writable, \
             or set DATABASE_URL=sqlite://PATH to put the store elsewhere (what was recorded before is kept)"
        }
        _ => return None,
    })
}

fn explain_open(e: &sqlx::Error) -> String {
    let text = e.to_string();
    if let Some(hint) = explain_storage(e) {
        format!("{text}: {hint}")
    } else if text.contains("unable to open") || text.contains("readonly") || text.contains("read-only") {
        format!("{text}. Check that the file and its directory are writable by this user")
    } else if text.contains("not a database") || text.contains("malformed") {
        format!(
            "{text}. The file is not a scheduler store or is damaged: move it aside (your runs stay in it) \
             and start again with a new one, or restore it from a backup"
        )
    } else {
        text
    }
}

fn explain_migrate(e: &sqlx::migrate::MigrateError) -> String {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(v) => format!(
            "it was written by a newer version of scheduler (schema version {v} is unknown to this one). \
             Upgrade scheduler, or point DATABASE_URL=sqlite://PATH at another file"
        ),
        other => format!("{other}. The file may be damaged: move it aside and start with a new one"),
    }
}
