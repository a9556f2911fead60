//! The write connection's inline half: a second connection to the store,
//! run on the calling thread (rusqlite, on the SQLite that sqlx links), for
//! the decisions of the state machine (`apply.rs`), the queue's take and
//! settle, and the start of a run whose sequence has no concurrency limit
//! (`queue.rs`).
//!
//! sqlx runs each SQLite connection on a thread of its own: every call is a
//! message to that thread and an answer back. On these machines (virtual,
//! two cores) each such hop wakes a thread on the other core, and the
//! wake-ups, not SQLite, were most of the cost of a step's write: in a
//! profile of a worker, sqlx's SQLite thread spent 1 point of 15 in
//! SQLite's executor and most of the rest waking threads. Here the same
//! statements run where the step's task runs, holding the write turn, in
//! tens of microseconds, with no thread between.
//!
//! **What may block the thread, and for how long.** SQLite works in memory
//! and in the page cache here: the log is not flushed at commit
//! (`synchronous = NORMAL`; the process's flusher flushes it after, as for
//! every write, `writer.rs`) and this connection never checkpoints
//! (`wal_autocheckpoint = 0`): the sqlx write connection's commits do (in a
//! worker, at least each inbox's consumer refresh every 3 s, and the
//! heartbeats). A burst of writes grows the log between two of them (316
//! MB for the bench's 4000 runs started at once); a steady load then
//! overwrites it in place. The one wait is another process holding
//! SQLite's write lock
//! (the keeper, the UI, a CLI command): the busy handler waits for it here
//! at most [`INLINE_WAIT`], then the write gives up and runs again in
//! `block_in_place`, waiting up to the store's busy timeout without holding
//! up the runtime's other tasks.
//!
//! Parameters are bound by their `$N` number, as sqlx binds them, so the
//! statements' texts are the general path's own (`apply_sql.rs`), and
//! values are one list for both ([`Value`]), in sqlx's encodings (UUIDs as
//! 16-byte blobs, times as RFC 3339 text, JSON as text).

use crate::TrackerError;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::OpenFlags;
pub(crate) use rusqlite::types::Value;
use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

/// How long an inline write waits for another process's write lock before
/// it gives up the runtime's thread and waits in `block_in_place`.
pub(crate) const INLINE_WAIT: Duration = Duration::from_millis(2);

/// Opens the inline connection to the store at `db` (its schema and WAL
/// mode set by the pool that opened it first).
pub(crate) fn open(db: &Path) -> Result<rusqlite::Connection, TrackerError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(db, flags)?;
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;")?;
    conn.busy_handler(Some(on_busy))?;
    // Every statement this connection runs stays prepared (about 20 texts).
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

thread_local! {
    /// How long this thread's current write may wait for the lock.
    static LIMIT: Cell<Duration> = const { Cell::new(INLINE_WAIT) };
}

fn on_busy(count: i32) -> bool {
    super::busy::again(count, LIMIT.get())
}

/// Runs `f` with waits for the lock bounded by `limit` on this thread.
pub(crate) fn waiting_at_most<T>(limit: Duration, f: impl FnOnce() -> T) -> T {
    let before = LIMIT.replace(limit);
    let out = f();
    LIMIT.set(before);
    out
}

/// Whether `e` is SQLite's "the database is locked" (another process holds
/// the write lock past the wait allowed).
pub(crate) fn is_busy(e: &TrackerError) -> bool {
    matches!(e, TrackerError::Sql(sqlx::Error::Database(d))
        if d.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == 5))
}

/// A prepared statement of `sql` (cached on the connection), its `$N`
/// parameters bound from `values` (`$1` is `values[0]`).
pub(crate) fn bind<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
    values: &[Value],
) -> Result<rusqlite::CachedStatement<'c>, TrackerError> {
    let mut statement = conn.prepare_cached(sql)?;
    for index in 1..=statement.parameter_count() {
        let n = statement
            .parameter_name(index)
            .and_then(|name| name.strip_prefix(['$', '?']))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(index);
        let value = values.get(n - 1).ok_or_else(|| {
            TrackerError::Corrupt(format!(
                "statement parameter ${n} has no value ({} given)",
                values.len()
            ))
        })?;
        statement.raw_bind_parameter(index, value)?;
    }
    Ok(statement)
}

/// Runs `sql` with `values` to its end; the rows it changed.
pub(crate) fn execute(conn: &rusqlite::Connection, sql: &str, values: &[Value]) -> Result<usize, TrackerError> {
    Ok(bind(conn, sql, values)?.raw_execute()?)
}

/// The first row `sql` returns, read by `read` (the statement runs to its
/// end: an `UPDATE ... RETURNING` has written every row once stepped).
pub(crate) fn first<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    values: &[Value],
    read: impl FnOnce(&rusqlite::Row<'_>) -> Result<T, TrackerError>,
) -> Result<Option<T>, TrackerError> {
    let mut statement = bind(conn, sql, values)?;
    let mut rows = statement.raw_query();
    let found = match rows.next()? {
        Some(row) => Some(read(row)?),
        None => None,
    };
    while rows.next()?.is_some() {}
    Ok(found)
}

/// Every row `sql` returns, each read by `read`.
pub(crate) fn all<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    values: &[Value],
    mut read: impl FnMut(&rusqlite::Row<'_>) -> Result<T, TrackerError>,
) -> Result<Vec<T>, TrackerError> {
    let mut statement = bind(conn, sql, values)?;
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(read(row)?);
    }
    Ok(out)
}

/// A 16-byte blob column as a UUID.
pub(crate) fn get_uuid(row: &rusqlite::Row<'_>, column: usize) -> Result<uuid::Uuid, TrackerError> {
    let bytes: Vec<u8> = row.get(column)?;
    uuid::Uuid::from_slice(&bytes).map_err(|e| TrackerError::Corrupt(format!("column {column}: {e}")))
}

/// A time in sqlx's encoding for SQLite (RFC 3339, "+00:00").
pub(crate) fn time(t: DateTime<Utc>) -> Value {
    Value::Text(t.to_rfc3339_opts(SecondsFormat::AutoSi, false))
}

pub(crate) fn uuid(id: uuid::Uuid) -> Value {
    Value::Blob(id.as_bytes().to_vec())
}

pub(crate) fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

pub(crate) fn int(n: impl Into<i64>) -> Value {
    Value::Integer(n.into())
}

/// `Some(v)` as `f(v)`, `None` as NULL.
pub(crate) fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    v.map_or(Value::Null, f)
}

/// A column holding JSON text, parsed (`None` when NULL).
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    column: &str,
) -> Result<Option<sqlx::types::Json<T>>, TrackerError> {
    let Some(text) = row.get::<_, Option<String>>(column)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(|v| Some(sqlx::types::Json(v)))
        .map_err(|e| TrackerError::Corrupt(format!("column {column}: {e}")))
}

/// SQLite's error from the inline connection, as sqlx reports one from its
/// own (so that `explain_storage` and the callers read both alike).
#[derive(Debug)]
struct InlineError {
    code: Option<i32>,
    message: String,
}

impl std::fmt::Display for InlineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "(code: {code}) {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for InlineError {}

impl sqlx::error::DatabaseError for InlineError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.code.map(|c| c.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        // SQLITE_CONSTRAINT_UNIQUE, _PRIMARYKEY, _FOREIGNKEY, _CHECK, _NOTNULL.
        match self.code {
            Some(2067 | 1555) => sqlx::error::ErrorKind::UniqueViolation,
            Some(787) => sqlx::error::ErrorKind::ForeignKeyViolation,
            Some(275) => sqlx::error::ErrorKind::CheckViolation,
            Some(1299) => sqlx::error::ErrorKind::NotNullViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}

impl From<rusqlite::Error> for TrackerError {
    fn from(e: rusqlite::Error) -> TrackerError {
        let (code, message) = match &e {
            rusqlite::Error::SqliteFailure(f, message) => {
                (Some(f.extended_code), message.clone().unwrap_or_else(|| f.to_string()))
            }
            other => (None, other.to_string()),
        };
        TrackerError::Sql(sqlx::Error::Database(Box::new(InlineError { code, message })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> rusqlite::Connection {
        let dir = std::env::temp_dir().join(format!("inline_{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = rusqlite::Connection::open(dir.join("t.db")).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (a, b, c)")
            .unwrap();
        c
    }

    #[test]
    fn parameters_are_bound_by_their_number_not_their_place() {
        let c = conn();
        bind(
            &c,
            "INSERT INTO t (a, b, c) VALUES ($3, $1, $3 || $2)",
            &[int(1), text("x"), text("y")],
        )
        .unwrap()
        .raw_execute()
        .unwrap();
        let row: (String, i64, String) = c
            .query_row("SELECT a, b, c FROM t", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap();
        assert_eq!(row, ("y".into(), 1, "yx".into()));
        let missing = bind(&c, "SELECT $2", &[int(1)]).err().unwrap();
        assert!(missing.to_string().contains("$2 has no value"), "{missing}");
    }

    #[test]
    fn times_and_ids_are_in_sqlx_encodings() {
        let t = DateTime::parse_from_rfc3339("2026-11-29T09:00:00.123456Z")
            .unwrap()
            .to_utc();
        assert_eq!(time(t), Value::Text("2026-11-29T09:00:00.123456+00:00".into()));
        let id = uuid::Uuid::now_v7();
        assert_eq!(uuid(id), Value::Blob(id.as_bytes().to_vec()));
    }

    #[test]
    fn sqlite_errors_keep_their_code_and_a_lock_held_elsewhere_reads_as_busy() {
        let c = conn();
        let e: TrackerError = c.execute("INSERT INTO nowhere VALUES (1)", []).unwrap_err().into();
        assert!(e.to_string().contains("no such table"), "{e}");
        assert!(!is_busy(&e));
        let other = rusqlite::Connection::open(c.path().unwrap()).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        c.busy_handler(Some(on_busy)).unwrap();
        let started = std::time::Instant::now();
        let busy: TrackerError = waiting_at_most(Duration::from_millis(20), || c.execute_batch("BEGIN IMMEDIATE"))
            .unwrap_err()
            .into();
        assert!(is_busy(&busy), "{busy}");
        assert!(
            started.elapsed() >= Duration::from_millis(20),
            "gave up before its limit"
        );
        assert!(started.elapsed() < Duration::from_secs(1), "waited past its limit");
    }
}
