//! Mirrors `crate::retention` (PostgreSQL) for the embedded store: pruning
//! finished runs in batches, and the storage figures.
//!
//! One batch is one short `BEGIN IMMEDIATE` transaction of two statements:
//! the read that picks the next candidates (oldest first, after a keyset
//! cursor on `runs_newest`) and decides each one (final, finished before
//! the bound, no execution still queued or running, not one of the
//! `keep_last` newest of its sequence) with what goes with it, then the
//! delete of the doomed ones, by primary key and only if still final.
//! PostgreSQL does both in one statement under `FOR UPDATE SKIP LOCKED`;
//! here SQLite's single writer makes the pair atomic: no other writer
//! runs between the decision and the delete, so a run an operator moves
//! back to `running` is either seen as running (kept) or retried after
//! the batch (the run is gone, and the retry finds no run). The
//! difference: a batch never skips a run being written, it waits for the
//! writer before it (the busy timeout) and makes the next writer wait for
//! it; that is why a batch stays short (at most `limit` runs, a few
//! milliseconds each hundred). Executions go by `ON DELETE CASCADE`, log
//! rows by cascade from their execution (foreign keys are on), and a
//! schedule slot keeps its row with `run_id` NULL (`ON DELETE SET NULL`).

use super::Embedded;
use crate::Result;
use crate::retention::{EventCursor, EventPruneBatch, PruneBatch, PruneCounts, PruneCursor, Retention, StorageFigures};
use crate::ui_queries::EXACT_BELOW;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

/// The batch's read: `?1` the bound, `?2`/`?3` the cursor, `?4` the batch
/// size, and (with `keep_last`) `?5` its offset, `keep_last - 1`. One row
/// per run scanned, oldest first, with whether it goes and what would go
/// with it (counted by primary-key ranges, run by run). The candidates are
/// a range scan of `runs_newest` in its order: `+state` keeps the planner
/// from reading every old final run through `runs_by_state` and sorting
/// them for the first `limit`.
fn batch_sql(keep_last: bool) -> String {
    // The keep_last-th newest run of the run's sequence (a short range scan
    // of `runs_by_sequence`); older runs may go. A sequence with fewer runs
    // gives no row, the comparison is NULL, and it keeps them all.
    let not_kept = if keep_last {
        "AND (r.created_at, r.id) < (SELECT n.created_at, n.id FROM runs n WHERE n.sequence = r.sequence
                                      ORDER BY n.created_at DESC, n.id DESC LIMIT 1 OFFSET ?5)"
    } else {
        ""
    };
    format!(
        "WITH scan AS MATERIALIZED (
            SELECT id, created_at FROM runs
             WHERE created_at < ?1 AND (created_at, id) > (?2, ?3)
               AND +state IN ('succeeded', 'failed', 'canceled', 'skipped')
             ORDER BY created_at, id
             LIMIT ?4
        )
        SELECT s.id, s.created_at,
               (r.state IN ('succeeded', 'failed', 'canceled', 'skipped')
                AND coalesce(r.finished_at, r.created_at) < ?1
                AND NOT EXISTS (SELECT 1 FROM executions e
                                 WHERE e.run_id = r.id AND e.state IN ('queued', 'running'))
                {not_kept}) AS doomed,
               (SELECT count(*) FROM executions e WHERE e.run_id = r.id) AS executions,
               (SELECT count(*) FROM execution_logs l WHERE l.run_id = r.id) AS log_rows,
               (SELECT coalesce(sum(length(l.data)), 0) FROM execution_logs l WHERE l.run_id = r.id) AS log_bytes
          FROM scan s JOIN runs r ON r.id = s.id
         ORDER BY s.created_at, s.id"
    )
}

#[derive(sqlx::FromRow)]
struct ScanRow {
    id: Uuid,
    created_at: DateTime<Utc>,
    /// NULL when the `keep_last` comparison is (fewer runs than kept).
    doomed: Option<bool>,
    executions: i64,
    log_rows: i64,
    log_bytes: i64,
}

/// One batch of at most `limit` runs after `from` (`None`: from the
/// oldest): deleted, or only counted when `dry_run`. The bound is the
/// store's clock less `older_than`, computed here.
pub(crate) async fn prune_batch(
    t: &Embedded,
    retention: &Retention,
    from: Option<PruneCursor>,
    limit: u32,
    dry_run: bool,
) -> Result<PruneBatch> {
    let keep_last = retention.keep_last.filter(|&n| n > 0);
    let limit = limit.max(1);
    let bound = chrono::Duration::from_std(retention.older_than)
        .ok()
        .and_then(|d| super::now().checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    // Before any run: the first day of year 1, as with PostgreSQL.
    let from = from.unwrap_or(PruneCursor {
        created_at: DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default(),
        id: Uuid::nil(),
    });
    let sql = batch_sql(keep_last.is_some());
    let read = sqlx::query_as::<_, ScanRow>(sqlx::AssertSqlSafe(sql))
        .bind(bound)
        .bind(from.created_at)
        .bind(from.id)
        .bind(limit as i64)
        .bind(keep_last.map(|n| n as i64 - 1));
    let (rows, deleted) = if dry_run {
        // A dry run only reads: one statement, no write lock.
        let rows = read.fetch_all(&t.pool).await?;
        let doomed = rows.iter().filter(|r| r.doomed == Some(true)).count() as i64;
        (rows, doomed)
    } else {
        let mut tx = t.begin().await?;
        let rows = read.fetch_all(&mut *tx).await?;
        let doomed: Vec<Uuid> = rows.iter().filter(|r| r.doomed == Some(true)).map(|r| r.id).collect();
        let mut deleted = 0;
        if !doomed.is_empty() {
            // Still final: under the write lock since the read, so it is.
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "DELETE FROM runs WHERE state IN ('succeeded', 'failed', 'canceled', 'skipped') AND id IN (",
            );
            let mut ids = q.separated(", ");
            for id in &doomed {
                ids.push_bind(*id);
            }
            q.push(")");
            deleted = q.build().execute(&mut *tx).await?.rows_affected() as i64;
        }
        tx.commit().await?;
        (rows, deleted)
    };
    let mut counts = PruneCounts {
        runs: deleted,
        ..PruneCounts::default()
    };
    for r in rows.iter().filter(|r| r.doomed == Some(true)) {
        counts.executions += r.executions;
        counts.log_rows += r.log_rows;
        counts.log_bytes += r.log_bytes;
    }
    let scanned = rows.len() as i64;
    let next = match rows.last() {
        Some(last) if scanned >= limit as i64 => Some(PruneCursor {
            created_at: last.created_at,
            id: last.id,
        }),
        _ => None,
    };
    Ok(PruneBatch {
        counts,
        scanned,
        next,
        bound,
    })
}

/// The events' batch, as PostgreSQL's `events_batch_sql` (which explains
/// what stays): the scan of the oldest events after `from`, then those of
/// them whose deliveries are all over and none of which is the newest let
/// go to its target for its kind and subject, deleted with their
/// deliveries and attempts by `ON DELETE CASCADE`. One `BEGIN IMMEDIATE`
/// transaction (a read-only snapshot for a dry run): under the single
/// writer, what it reads final stays final until it commits, where
/// PostgreSQL locks the rows `SKIP LOCKED`.
pub(crate) async fn prune_events_batch(
    t: &Embedded,
    older_than: std::time::Duration,
    from: Option<EventCursor>,
    limit: u32,
    dry_run: bool,
) -> Result<EventPruneBatch> {
    let limit = limit.max(1);
    let bound = chrono::Duration::from_std(older_than)
        .ok()
        .and_then(|d| super::now().checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut tx = if dry_run {
        t.begin_read().await?
    } else {
        t.begin().await?
    };
    let scan: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, at FROM events
          WHERE at < ?1 AND (?2 IS NULL OR (at, id) > (?2, ?3))
          ORDER BY at, id
          LIMIT ?4",
    )
    .bind(bound)
    .bind(from.map(|c| c.at))
    .bind(from.map(|c| c.id))
    .bind(limit as i64)
    .fetch_all(&mut *tx)
    .await?;
    let ids = serde_json::to_string(&scan.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .map_err(|e| crate::TrackerError::Corrupt(e.to_string()))?;
    let doomed: Vec<(i64,)> = sqlx::query_as(
        "SELECT e.id FROM events e
          WHERE e.id IN (SELECT value FROM json_each(?1))
            AND e.routed_at IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM alert_deliveries d
                             WHERE d.event_id = e.id AND d.state IN ('pending', 'held'))
            AND NOT EXISTS (SELECT 1 FROM alert_deliveries d
                             WHERE d.event_id = e.id AND d.released_at IS NOT NULL
                               AND NOT EXISTS (SELECT 1 FROM alert_deliveries n
                                                WHERE n.target = d.target AND n.kind = d.kind
                                                  AND n.subject = d.subject
                                                  AND (n.released_at, n.event_id) > (d.released_at, d.event_id)))",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let doomed = serde_json::to_string(&doomed.iter().map(|(id,)| *id).collect::<Vec<_>>())
        .map_err(|e| crate::TrackerError::Corrupt(e.to_string()))?;
    let (deliveries,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM alert_deliveries WHERE event_id IN (SELECT value FROM json_each(?1))")
            .bind(&doomed)
            .fetch_one(&mut *tx)
            .await?;
    let events = if dry_run {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM json_each(?1)")
            .bind(&doomed)
            .fetch_one(&mut *tx)
            .await?;
        n
    } else {
        sqlx::query("DELETE FROM events WHERE id IN (SELECT value FROM json_each(?1))")
            .bind(&doomed)
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64
    };
    tx.commit().await?;
    let next = match scan.last() {
        Some((id, at)) if scan.len() >= limit as usize => Some(EventCursor { at: *at, id: *id }),
        _ => None,
    };
    Ok(EventPruneBatch {
        counts: PruneCounts {
            events,
            deliveries,
            ..PruneCounts::default()
        },
        scanned: scan.len() as i64,
        next,
        bound,
    })
}

/// Runs, executions and log rows, what the logs and the store take on disk.
///
/// Counts are exact up to [`EXACT_BELOW`] rows (a `count(*)` capped there,
/// as PostgreSQL counts its small tables); past it SQLite has no
/// `pg_class`-like estimate kept up to date, so the figure is the row count
/// `ANALYZE` left in `sqlite_stat1` when there is one and larger, else the
/// cap, and `estimated` is set. `log_bytes` is the pages of
/// `execution_logs` (a WITHOUT ROWID table: its rows, overflow pages
/// included) from the `dbstat` virtual table: exact, but it reads every
/// page of the table, so it costs in proportion to the logs kept (0.27 s
/// for 225 MB of logs in 600,000 rows, warm cache).
/// `database_bytes` is the size of the file and its WAL, as `stat` sees them.
pub(crate) async fn storage_figures(t: &Embedded) -> Result<StorageFigures> {
    let mut figures = StorageFigures::default();
    let cap = EXACT_BELOW as i64;
    for table in ["runs", "executions", "execution_logs"] {
        let counted: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {cap})"
        )))
        .fetch_one(&t.pool)
        .await?;
        let rows = if counted >= cap {
            figures.estimated = true;
            analyzed_rows(t, table).await?.unwrap_or(cap).max(cap)
        } else {
            counted
        };
        match table {
            "runs" => figures.runs = rows,
            "executions" => figures.executions = rows,
            _ => figures.log_rows = rows,
        }
    }
    figures.log_bytes =
        sqlx::query_scalar("SELECT coalesce(sum(pgsize), 0) FROM dbstat('main', 1) WHERE name = 'execution_logs'")
            .fetch_one(&t.pool)
            .await?;
    let on_disk = |suffix: &str| {
        let mut path = t.path().as_os_str().to_owned();
        path.push(suffix);
        std::fs::metadata(path).map(|m| m.len() as i64).unwrap_or(0)
    };
    figures.database_bytes = on_disk("") + on_disk("-wal");
    Ok(figures)
}

/// The table's row count at its last `ANALYZE` (the first number of its
/// primary key's `sqlite_stat1` row), if it was ever analyzed.
async fn analyzed_rows(t: &Embedded, table: &str) -> Result<Option<i64>> {
    let has_stats: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1')")
        .fetch_one(&t.pool)
        .await?;
    if !has_stats {
        return Ok(None);
    }
    let stats: Vec<String> = sqlx::query_scalar("SELECT stat FROM sqlite_stat1 WHERE tbl = ?1")
        .bind(table)
        .fetch_all(&t.pool)
        .await?;
    Ok(stats
        .iter()
        .filter_map(|s| s.split(' ').next()?.parse::<i64>().ok())
        .max())
}
