//! The process's one write connection, held by whoever has the write turn.
//!
//! Every write of a process takes its turn at one FIFO gate (the mutex
//! around [`Writer`]) and writes on the connection the gate holds. Two costs
//! of writing through the pool that this takes off every write, both seen
//! in a profile of a worker (`perf`, concurrency 2):
//!
//! - **A cold page cache.** In WAL mode SQLite discards a connection's page
//!   cache when the database changed since that connection's last
//!   transaction by another connection. Writes spread over the pool's
//!   connections found their cache discarded nearly every time and read
//!   the pages again (`pread`, 9 % of the SQLite thread). One connection
//!   writing everything keeps its cache: its own commits do not discard it.
//! - **The pool's checkout** (a ping of the connection's thread before each
//!   use): one more hop to that thread and back per write.
//!
//! **Two connections, one turn.** The decisions of the state machine, the
//! queue's take and settle, and the start of a run without a concurrency
//! limit run on the turn's inline connection
//! ([`Turn::inline`], `inline.rs`: rusqlite on the calling thread, no hop
//! to sqlx's connection thread); every other write on the sqlx connection.
//! Both are used only holding the turn, a transaction is on one of them,
//! and both commit at `synchronous = NORMAL` into the same log, so the
//! group flush below covers the commits of either.
//!
//! **Group flush.** The write connection commits with `synchronous =
//! NORMAL`: its commits write the write-ahead log but do not flush it. A
//! write that must be durable before it returns (`Durability::Flushed`,
//! nearly all) then waits, after giving the turn back, for the process's
//! [`Flusher`]: the first waiter flushes the log file (`fdatasync`) for
//! every commit made so far, and those that waited meanwhile find theirs
//! flushed (they wait on a notification that wakes them all when the flush
//! ends, not in a queue for the flusher's role). So the turn is held only
//! while writing, the next writer writes during the flush, and writes that
//! commit together share one flush, as PostgreSQL's commits share a WAL
//! flush. While flushes are quick (under 1 ms) the flush is a blocking call
//! on the runtime thread itself, after a yield that lets a writer already
//! woken on that thread commit first ([`on_runtime_thread`]); a slow one
//! goes through `block_in_place`. The log is one file written in order, so
//! a flush covers every commit before it, whichever process made it; a
//! checkpoint flushes the log before it copies it (SQLite does so at
//! `NORMAL`), so a commit copied and its log reused is durable in the
//! database file. A caller with something to do between its commit and the
//! flush (the queue rings its bell) takes the commit [`Unflushed`] and
//! awaits its flush itself.
//!
//! The queue's bookkeeping (a message taken or settled, a consumer's row
//! refreshed) and the published-at notes do not wait
//! (`Durability::Logged`): the next flush covers them. Only a crash of the
//! machine (not of the process) before then loses them, and losing one only
//! delivers a message again, which the claim's compare-and-set drops (the
//! same choice as `synchronous_commit = off` for the same writes in
//! PostgreSQL).
//!
//! A flush that fails ends the process (as PostgreSQL does): after a failed
//! `fsync` the kernel may have dropped the pages it could not write, so no
//! later flush can say they are on disk; recovery then treats it as any
//! crash.
//!
//! A transaction left open (its [`WriteTx`] dropped before its commit, say
//! a cancelled task) is rolled back at once on a task of its own, still
//! holding the turn, so that no other process waits on a lock nobody uses.

use super::inline;
use sqlx::sqlite::{SqliteConnectOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqliteConnection};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;

/// How durable a write must be when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// On disk: the write waits for the log's flush ([`Flusher`]).
    Flushed,
    /// In the log, flushed with the next write that waits: for writes whose
    /// loss in a machine crash only repeats a delivery.
    Logged,
}

pub(crate) struct Writer {
    options: SqliteConnectOptions,
    busy_timeout: Duration,
    conn: Option<SqliteConnection>,
    /// A transaction may still be open on `conn`.
    open: bool,
    /// The store's file, for the inline connection.
    db: PathBuf,
    /// The inline connection (`inline.rs`): the decisions and the queue's
    /// take and settle, run on the calling thread; opened at its first use.
    inline: Option<rusqlite::Connection>,
    flusher: Arc<Flusher>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("connected", &self.conn.is_some())
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// The writer of the store at `db` (its log is `db` + `-wal`).
    pub(crate) fn new(options: SqliteConnectOptions, busy_timeout: Duration, db: &std::path::Path) -> Writer {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Writer {
            options: options.synchronous(SqliteSynchronous::Normal),
            busy_timeout,
            conn: None,
            open: false,
            db: db.to_path_buf(),
            inline: None,
            flusher: Arc::new(Flusher {
                wal: PathBuf::from(wal),
                committed: AtomicU64::new(0),
                role: tokio::sync::Mutex::new(()),
                durable: AtomicU64::new(0),
                flushes_ended: tokio::sync::Notify::new(),
                flushes: AtomicU64::new(0),
                last_flush_us: AtomicU64::new(0),
            }),
        }
    }
}

/// Flushes the write-ahead log for the commits of this process's write
/// connection, one flush for all the commits that wait at once.
#[derive(Debug)]
pub(crate) struct Flusher {
    wal: PathBuf,
    /// Commits made on the write connection (counted under the turn, after
    /// each commit returned: their frames are in the log file).
    committed: AtomicU64,
    /// The flusher's role: one flush at a time, by whichever waiter finds
    /// none under way.
    role: tokio::sync::Mutex<()>,
    /// Commits known flushed (written only by the role's holder): a waiter
    /// whose commit is covered returns without waiting for the role.
    durable: AtomicU64,
    /// Rung after each flush, once its role is given back: every waiter
    /// wakes at once and either finds its commit durable or takes the
    /// role for the next flush.
    flushes_ended: tokio::sync::Notify,
    /// Flushes done (for tests and figures).
    flushes: AtomicU64,
    /// How long the last flush took, in µs: the next one blocks its runtime
    /// thread only while flushes are quick ([`on_runtime_thread`]).
    last_flush_us: AtomicU64,
}

/// A flush quicker than this runs on the runtime's thread itself.
const QUICK_FLUSH: Duration = Duration::from_millis(1);

/// Whether the next flush runs on the runtime thread that asks for it, as a
/// short blocking call, rather than in `block_in_place`: only while the
/// last flush took less than [`QUICK_FLUSH`] and another runtime thread
/// runs the other tasks meanwhile. `block_in_place` hands the thread's
/// tasks to another thread first, which costs more than a quick flush
/// (measured: 5-6 context switches and 0.05-0.1 ms of the worker's CPU per
/// module execution); a slow disk (a flush of tens of milliseconds) or a
/// runtime of one thread keeps it.
pub(crate) fn on_runtime_thread(last_flush: Duration, workers: usize) -> bool {
    last_flush < QUICK_FLUSH && workers > 1
}

impl Flusher {
    /// Counts a commit that just returned; its number, to wait for.
    fn committed(&self) -> u64 {
        self.committed.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Returns once commit `seq` is on disk: flushed by this task, or by
    /// another in the flusher's role.
    ///
    /// Waiters do not queue for the role: a flush under way is waited for
    /// on `flushes_ended`, which wakes every waiter at once when it ends.
    /// Queued one behind the other on the role's lock instead, each
    /// waiter's task had to be scheduled in turn only to find its commit
    /// covered, and a step waited for that chain, not for the disk: 1.5 ms
    /// for a 0.3 ms flush at `-c 2`, 25 ms for a 3.5 ms one at `-c 16`.
    pub(crate) async fn wait(&self, seq: u64) {
        loop {
            if self.durable.load(Ordering::Acquire) >= seq {
                return;
            }
            // Listen before looking at the role, so that a flush ending
            // between the two still wakes this waiter (the flusher rings
            // after giving the role back).
            let ended = self.flushes_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.durable.load(Ordering::Acquire) >= seq {
                return;
            }
            match self.role.try_lock() {
                Ok(held) => {
                    let role = Role {
                        held: Some(held),
                        ended: &self.flushes_ended,
                    };
                    self.flush(role, seq).await;
                    return;
                }
                Err(_) => ended.await,
            }
        }
    }

    /// Flushes the log for every commit made so far, holding the role,
    /// unless commit `seq` is durable already.
    async fn flush(&self, _role: Role<'_>, seq: u64) {
        if self.durable.load(Ordering::Acquire) >= seq {
            return;
        }
        let runtime = tokio::runtime::Handle::current();
        let last = Duration::from_micros(self.last_flush_us.load(Ordering::Relaxed));
        let direct = runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            && on_runtime_thread(last, runtime.metrics().num_workers());
        if direct {
            // A writer woken when the turn was given back waits on this
            // thread (in its LIFO slot, which no other thread takes): let it
            // commit first, so that this flush covers it too.
            tokio::task::yield_now().await;
        }
        let target = self.committed.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        let synced = match runtime.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread if direct => sync_file(&self.wal),
            // On this thread when the runtime lets it hand its other tasks
            // to another (a hop to the blocking pool costs more than the flush).
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| sync_file(&self.wal)),
            _ => {
                let wal = self.wal.clone();
                tokio::task::spawn_blocking(move || sync_file(&wal))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
            }
        };
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_flush_us.store(took, Ordering::Relaxed);
        match synced {
            Ok(()) => {
                self.durable.store(target, Ordering::Release);
                self.flushes.fetch_add(1, Ordering::Relaxed);
                // `_role` gives the role back, then rings.
            }
            Err(e) => {
                // As PostgreSQL: after a failed fsync the kernel may have
                // dropped the pages it could not write; no later flush could
                // say they are on disk. End here; recovery treats it as a crash.
                tracing::error!(error = %e, log = %self.wal.display(), "could not flush the embedded store's log to disk; stopping (nothing after the last flush is known written)");
                eprintln!(
                    "scheduler: could not flush {} to disk: {e}; stopping. Check the disk, then start again: recovery resumes what was running",
                    self.wal.display()
                );
                std::process::exit(70);
            }
        }
    }
}

/// The flusher's role, held: given back, then every waiter woken, however
/// the flush ends (a task cancelled at its yield included), so that no
/// waiter sleeps on a flush that will not ring.
struct Role<'a> {
    held: Option<tokio::sync::MutexGuard<'a, ()>>,
    ended: &'a tokio::sync::Notify,
}

impl Drop for Role<'_> {
    fn drop(&mut self) {
        // In this order: a waiter woken before the role is free could find
        // it taken, and sleep past the ring.
        self.held = None;
        self.ended.notify_waiters();
    }
}

#[cfg(test)]
impl Flusher {
    /// (commits made, commits flushed, flushes done, the log's path).
    pub(crate) async fn state(&self) -> (u64, u64, u64, PathBuf) {
        let flushed = self.durable.load(Ordering::Acquire);
        (
            self.committed.load(Ordering::Acquire),
            flushed,
            self.flushes.load(Ordering::Relaxed),
            self.wal.clone(),
        )
    }
}

/// `fdatasync` of the log file. A log that is not there has nothing to
/// flush: SQLite removes it only after copying it into the database file
/// and flushing that.
fn sync_file(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(path) {
        Ok(file) => file.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A commit in the log that may not be on disk yet.
#[derive(Debug)]
#[must_use = "a commit is durable only once its flush is awaited"]
pub(crate) struct Unflushed {
    flusher: Arc<Flusher>,
    seq: u64,
}

impl Unflushed {
    /// Returns once a flush of the log covers the commit (this task's, or
    /// another's that covers it).
    pub(crate) async fn flushed(self) {
        self.flusher.wait(self.seq).await;
    }

    /// Returns once the commit is as durable as `durability` asks.
    async fn settle(self, durability: Durability) {
        if durability == Durability::Flushed {
            self.flushed().await;
        }
    }
}

/// The write turn: the process's write connection, exclusively.
pub(crate) struct Turn(pub(crate) OwnedMutexGuard<Writer>);

impl Turn {
    /// The write connection, (re)connected if need be, any transaction left
    /// open rolled back.
    pub(crate) async fn conn(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        let w = &mut *self.0;
        if w.conn.is_none() {
            let mut conn = w.options.connect().await?;
            super::busy::install(&mut conn, w.busy_timeout).await?;
            w.conn = Some(conn);
            w.open = false;
        }
        if w.open {
            // "no transaction is active" when it had ended already.
            let _ = sqlx::query("ROLLBACK").execute(live(&mut w.conn)).await;
            w.open = false;
        }
        Ok(live(&mut w.conn))
    }

    /// Runs one write (a statement in autocommit) on the write connection;
    /// gives the turn back before waiting for the flush that `durability`
    /// asks for.
    pub(crate) async fn write<T, E>(
        self,
        durability: Durability,
        f: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<sqlx::Error> + LostConnection,
    {
        let (result, unflushed) = self.write_unflushed(f).await?;
        unflushed.settle(durability).await;
        Ok(result)
    }

    /// [`Turn::write`], returning once the write is committed (the turn
    /// given back) with its flush still owed.
    pub(crate) async fn write_unflushed<T, E>(
        mut self,
        f: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, E>,
    ) -> Result<(T, Unflushed), E>
    where
        E: From<sqlx::Error> + LostConnection,
    {
        let conn = self.conn().await?;
        match f(conn).await {
            Ok(result) => Ok((result, self.committed())),
            Err(e) => {
                if e.lost_connection() {
                    self.0.conn = None;
                }
                Err(e)
            }
        }
    }

    /// Runs `f` on the inline connection (`inline.rs`), on this thread: a
    /// write that opens and commits its own transaction (one rusqlite
    /// `Transaction`, rolled back when `f` fails), or one statement in
    /// autocommit; flushed before this returns. `f` may run twice: when
    /// another process held SQLite's lock past [`inline::INLINE_WAIT`], it
    /// runs again in `block_in_place`, waiting up to the busy timeout.
    pub(crate) async fn inline<T>(
        self,
        f: impl Fn(&mut rusqlite::Connection) -> Result<T, crate::TrackerError>,
    ) -> Result<T, crate::TrackerError> {
        self.inline_as(Durability::Flushed, f).await
    }

    /// [`Turn::inline`], as durable as `durability` asks.
    pub(crate) async fn inline_as<T>(
        self,
        durability: Durability,
        f: impl Fn(&mut rusqlite::Connection) -> Result<T, crate::TrackerError>,
    ) -> Result<T, crate::TrackerError> {
        let (result, unflushed) = self.inline_unflushed(f).await?;
        unflushed.settle(durability).await;
        Ok(result)
    }

    /// [`Turn::inline`], returning once the write is committed (in the
    /// log, the turn given back) with its flush still owed: the caller
    /// awaits [`Unflushed::flushed`] before anything that needs the commit
    /// on disk.
    pub(crate) async fn inline_unflushed<T>(
        mut self,
        f: impl Fn(&mut rusqlite::Connection) -> Result<T, crate::TrackerError>,
    ) -> Result<(T, Unflushed), crate::TrackerError> {
        if self.0.open {
            // Whatever the other connection left open holds the lock.
            self.conn().await?;
        }
        let w = &mut *self.0;
        if w.inline.is_none() {
            w.inline = Some(inline::open(&w.db)?);
        }
        let Some(conn) = w.inline.as_mut() else {
            unreachable!("the inline connection was just opened")
        };
        let mut result = inline::waiting_at_most(inline::INLINE_WAIT, || f(conn));
        if result.as_ref().is_err_and(inline::is_busy) {
            let mut patient = || inline::waiting_at_most(w.busy_timeout, || f(conn));
            result = match tokio::runtime::Handle::current().runtime_flavor() {
                tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(patient),
                _ => patient(),
            };
        }
        let result = result?;
        Ok((result, self.committed()))
    }

    /// Counts the commit just made and gives the turn back; what remains is
    /// its flush.
    fn committed(self) -> Unflushed {
        Unflushed {
            seq: self.0.flusher.committed(),
            flusher: self.0.flusher.clone(),
        }
    }

    /// Opens a transaction (`BEGIN IMMEDIATE`: the write lock at once, so a
    /// transaction never fails to upgrade midway); its commit is flushed.
    pub(crate) async fn begin(self) -> Result<WriteTx, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }

    /// A transaction that only reads (`BEGIN`: no write lock), on the write
    /// connection, still holding the turn.
    pub(crate) async fn begin_read(self) -> Result<WriteTx, sqlx::Error> {
        self.begin_with("BEGIN").await
    }

    async fn begin_with(mut self, begin: &'static str) -> Result<WriteTx, sqlx::Error> {
        let conn = self.conn().await?;
        if let Err(e) = sqlx::query(begin).execute(&mut *conn).await {
            return Err(lost(&mut self.0.conn, e));
        }
        self.0.open = true;
        Ok(WriteTx { turn: Some(self) })
    }
}

/// The connection, known to be there.
fn live(conn: &mut Option<SqliteConnection>) -> &mut SqliteConnection {
    match conn {
        Some(conn) => conn,
        None => unreachable!("the write connection is open while it is used"),
    }
}

/// Drops a connection that an error shows is gone, so that the next turn
/// connects again; gives the error back.
fn lost(conn: &mut Option<SqliteConnection>, e: sqlx::Error) -> sqlx::Error {
    if e.lost_connection() {
        *conn = None;
    }
    e
}

/// Whether an error means the connection itself is gone (not a statement
/// that failed on a working one).
pub(crate) trait LostConnection {
    fn lost_connection(&self) -> bool;
}

impl LostConnection for sqlx::Error {
    fn lost_connection(&self) -> bool {
        matches!(
            self,
            sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_)
        )
    }
}

impl LostConnection for crate::TrackerError {
    fn lost_connection(&self) -> bool {
        matches!(self, crate::TrackerError::Sql(e) if e.lost_connection())
    }
}

/// A transaction on the write connection, holding the write turn until it
/// commits or is dropped (then rolled back at once).
pub(crate) struct WriteTx {
    turn: Option<Turn>,
}

impl WriteTx {
    /// Commits, gives the turn back, and returns once the commit is flushed.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.commit_unflushed().await?.flushed().await;
        Ok(())
    }

    /// Commits and gives the turn back; returns the flush still owed.
    pub(crate) async fn commit_unflushed(mut self) -> Result<Unflushed, sqlx::Error> {
        let Some(mut turn) = self.turn.take() else {
            unreachable!("a WriteTx holds its turn until commit or drop")
        };
        let w = &mut *turn.0;
        match sqlx::query("COMMIT").execute(live(&mut w.conn)).await {
            Ok(_) => {
                w.open = false;
                Ok(turn.committed())
            }
            Err(e) => {
                // Still open, or rolled back by SQLite: rolled back before
                // the turn goes on either way.
                let e = lost(&mut w.conn, e);
                drop(WriteTx { turn: Some(turn) });
                Err(e)
            }
        }
    }

    fn conn(&self) -> &SqliteConnection {
        match self.turn.as_ref().and_then(|t| t.0.conn.as_ref()) {
            Some(conn) => conn,
            None => unreachable!("a WriteTx holds an open connection"),
        }
    }

    fn conn_mut(&mut self) -> &mut SqliteConnection {
        match self.turn.as_mut().and_then(|t| t.0.conn.as_mut()) {
            Some(conn) => conn,
            None => unreachable!("a WriteTx holds an open connection"),
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(mut turn) = self.turn.take() else { return };
        if !turn.0.open || turn.0.conn.is_none() {
            return;
        }
        // Roll back now, still holding the turn; without a runtime (a
        // process ending), the next turn rolls it back first.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = turn.conn().await;
            });
        }
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.conn()
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn_mut()
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
