//! Retention: deleting finished runs older than a bound, with their
//! executions and their logs, in small batches; the alert events older than
//! the bound whose deliveries are all over ([`prune_events_batch`]); and the
//! storage figures the UI shows (how much is kept), cheap at millions of
//! rows.
//!
//! One batch is one statement (in a short transaction of its own, which only
//! turns JIT off for it): it picks the next few hundred final runs created
//! before the bound (oldest first, after a keyset cursor on `runs_newest`),
//! locks them `FOR UPDATE SKIP LOCKED`,
//! checks again under the lock that each is final, finished before the
//! bound, has no execution still queued or running (a canceled run whose
//! module is still being stopped holds its sequence's slot) and is not one
//! of the `keep_last` newest of its sequence, and deletes those. Executions
//! go by `ON DELETE CASCADE` from the run, log rows by cascade from their
//! execution, and a schedule slot lets go of its run (`ON DELETE SET NULL`,
//! through `schedule_slots_by_run`). Deciding finality in the deleting
//! statement itself, under the row lock, is what keeps a run an operator
//! retried a moment before (moved back to `running`) from being deleted;
//! skipping locked rows is what keeps a batch from ever waiting on, or
//! making wait, a worker writing a run. Every lookup is an index range scan
//! (`runs_newest` for the candidates, `runs_by_sequence` for the `keep_last`
//! boundary, the primary keys of `executions` and `execution_logs` for the
//! counts and the cascade), so a batch costs the same at a thousand runs or
//! millions. No table lock, no long transaction: the caller pauses between
//! batches ([`PRUNE_PAUSE`]) and stops when a batch says it reached the
//! bound.

use crate::ui_queries::EXACT_BELOW;
use crate::{Result, Tracker};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

/// Runs deleted per batch (one statement, one transaction): with ten
/// executions each and their logs, tens of milliseconds.
pub const PRUNE_BATCH: u32 = 500;
/// The pause between two batches, so that work on the same tables
/// (workers recording steps, autovacuum) is never starved by a long prune.
pub const PRUNE_PAUSE: Duration = Duration::from_millis(20);

/// Which runs retention deletes: final runs (succeeded, failed, canceled,
/// skipped) that finished more than `older_than` ago (by the database's
/// clock; a run that never started counts from its creation), except the
/// `keep_last` newest runs of each sequence, whatever their age (`None` or
/// 0: none kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub older_than: Duration,
    pub keep_last: Option<u32>,
}

/// Where the next batch starts: after this `(created_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneCursor {
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) id: Uuid,
}

/// Where the next batch of events starts: after this `(at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor {
    pub(crate) at: DateTime<Utc>,
    pub(crate) id: i64,
}

/// What a prune deleted (or, dry, would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneCounts {
    pub runs: i64,
    pub executions: i64,
    pub log_rows: i64,
    /// Bytes of output in those log rows.
    pub log_bytes: i64,
    /// Alert events (healthcheck pings included), each with its deliveries.
    pub events: i64,
    /// Their deliveries (one per event and target), with their attempts.
    pub deliveries: i64,
}

impl std::ops::AddAssign for PruneCounts {
    fn add_assign(&mut self, o: PruneCounts) {
        self.runs += o.runs;
        self.executions += o.executions;
        self.log_rows += o.log_rows;
        self.log_bytes += o.log_bytes;
        self.events += o.events;
        self.deliveries += o.deliveries;
    }
}

/// One batch's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneBatch {
    pub counts: PruneCounts,
    /// Runs looked at (deleted or kept); at most the batch size.
    pub scanned: i64,
    /// Where the next batch starts; `None` when this one reached the bound.
    pub next: Option<PruneCursor>,
    /// The bound this batch used: runs that finished before it went.
    pub bound: DateTime<Utc>,
}

/// One batch of events' outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPruneBatch {
    /// `events` and `deliveries` (the rest is zero).
    pub counts: PruneCounts,
    /// Events looked at (deleted or kept); at most the batch size.
    pub scanned: i64,
    /// Where the next batch starts; `None` when this one reached the bound.
    pub next: Option<EventCursor>,
    /// The bound this batch used: events recorded before it went.
    pub bound: DateTime<Utc>,
}

/// How much the store holds, for the UI. Row counts are the planner's
/// estimates past [`EXACT_BELOW`] rows (`estimated` then), exact below.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StorageFigures {
    pub runs: i64,
    pub executions: i64,
    pub log_rows: i64,
    /// What the logs take on disk: the table, its TOAST and its index.
    pub log_bytes: i64,
    /// The whole database on disk.
    pub database_bytes: i64,
    /// Whether any count above is an estimate ("about").
    pub estimated: bool,
}

/// The batch statement: `$1` age in seconds, `$2`/`$3` the cursor; the
/// batch size and `keep_last` are written into the text (numbers), so that
/// the plan cached for it knows how few rows a batch touches: with them as
/// parameters the generic plan guessed thousands and counted the logs by a
/// merge join over the whole of `execution_logs`' index. `delete`: lock and
/// delete; otherwise count only (a dry run reads the same rows without
/// locking them).
fn batch_sql(limit: u32, keep_last: Option<u32>, delete: bool) -> String {
    // The keep_last-th newest run of each sequence of the batch (one short
    // range scan of `runs_by_sequence` each); older runs may go. A sequence
    // with fewer runs has no row here, and keeps them all.
    let (kept, not_kept) = match keep_last {
        Some(n) => (
            format!(
                "kept AS (
                    SELECT q.sequence, k.created_at, k.id
                      FROM (SELECT DISTINCT sequence FROM scan) q
                      CROSS JOIN LATERAL (
                          SELECT n.created_at, n.id FROM runs n WHERE n.sequence = q.sequence
                           ORDER BY n.created_at DESC, n.id DESC OFFSET {} LIMIT 1) k
                ),",
                n - 1
            ),
            "AND EXISTS (SELECT 1 FROM kept k
                          WHERE k.sequence = r.sequence AND (r.created_at, r.id) < (k.created_at, k.id))",
        ),
        None => (String::new(), ""),
    };
    let lock = if delete { "FOR UPDATE OF r SKIP LOCKED" } else { "" };
    let gone = if delete {
        "gone AS (
            DELETE FROM runs r USING doomed d
             WHERE r.id = d.id AND r.state IN ('succeeded', 'failed', 'canceled', 'skipped')
            RETURNING r.id
        )"
    } else {
        "gone AS (SELECT id FROM doomed)"
    };
    format!(
        "WITH bound AS (SELECT now() - make_interval(secs => $1) AS at),
        -- The next candidates, oldest first: a backward range scan of
        -- `runs_newest` from the cursor. finished_at >= created_at, so a run
        -- created after the bound cannot have finished before it.
        scan AS MATERIALIZED (
            SELECT id, sequence, created_at FROM runs
             WHERE created_at < (SELECT at FROM bound) AND (created_at, id) > ($2, $3)
               AND state IN ('succeeded', 'failed', 'canceled', 'skipped')
             ORDER BY created_at, id
             LIMIT {limit}
        ),
        {kept}
        doomed AS (
            SELECT r.id FROM runs r JOIN scan s ON s.id = r.id
             WHERE r.state IN ('succeeded', 'failed', 'canceled', 'skipped')
               AND coalesce(r.finished_at, r.created_at) < (SELECT at FROM bound)
               AND NOT EXISTS (SELECT 1 FROM executions e
                                WHERE e.run_id = r.id AND e.state IN ('queued', 'running'))
               {not_kept}
             {lock}
        ),
        -- Counted run by run (a primary-key range each), never by a join
        -- the planner could turn into a walk over a whole table.
        execs AS (
            SELECT coalesce(sum(x.n), 0)::bigint AS n FROM doomed d
             CROSS JOIN LATERAL (SELECT count(*) AS n FROM executions e WHERE e.run_id = d.id) x
        ),
        logs AS (
            SELECT coalesce(sum(x.n), 0)::bigint AS n, coalesce(sum(x.bytes), 0)::bigint AS bytes FROM doomed d
             CROSS JOIN LATERAL (SELECT count(*) AS n, sum(octet_length(l.data)) AS bytes
                                   FROM execution_logs l WHERE l.run_id = d.id) x
        ),
        {gone},
        last AS (SELECT created_at, id FROM scan ORDER BY created_at DESC, id DESC LIMIT 1)
        SELECT (SELECT count(*) FROM gone) AS runs,
               (SELECT n FROM execs) AS executions,
               (SELECT n FROM logs) AS log_rows,
               (SELECT bytes FROM logs) AS log_bytes,
               (SELECT count(*) FROM scan) AS scanned,
               (SELECT created_at FROM last) AS last_at,
               (SELECT id FROM last) AS last_id,
               (SELECT at FROM bound) AS bound"
    )
}

#[derive(sqlx::FromRow)]
struct BatchRow {
    runs: i64,
    executions: i64,
    log_rows: i64,
    log_bytes: i64,
    scanned: i64,
    last_at: Option<DateTime<Utc>>,
    last_id: Option<Uuid>,
    bound: DateTime<Utc>,
}

/// One batch of at most `limit` runs after `from` (`None`: from the
/// oldest): deleted, or only counted when `dry_run`.
pub(crate) async fn prune_batch(
    t: &Tracker,
    retention: &Retention,
    from: Option<PruneCursor>,
    limit: u32,
    dry_run: bool,
) -> Result<PruneBatch> {
    // Keeping none is keeping nothing: the statement then has no `kept`.
    let keep_last = retention.keep_last.filter(|&n| n > 0);
    let limit = limit.max(1);
    let sql = batch_sql(limit, keep_last, !dry_run);
    // Before any run: the first day of year 1 (in PostgreSQL's range).
    let from = from.unwrap_or(PruneCursor {
        created_at: DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default(),
        id: Uuid::nil(),
    });
    // Its own short transaction, only to turn JIT off for it: on a large
    // table the planner's costs pass `jit_above_cost`, and compiling the
    // statement (hundreds of milliseconds) costs more than running it.
    let mut tx = t.pool.begin().await?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    let row: BatchRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(retention.older_than.as_secs_f64())
        .bind(from.created_at)
        .bind(from.id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    let next = match (row.last_at, row.last_id) {
        (Some(created_at), Some(id)) if row.scanned >= limit as i64 => Some(PruneCursor { created_at, id }),
        _ => None,
    };
    Ok(PruneBatch {
        counts: PruneCounts {
            runs: row.runs,
            executions: row.executions,
            log_rows: row.log_rows,
            log_bytes: row.log_bytes,
            ..PruneCounts::default()
        },
        scanned: row.scanned,
        next,
        bound: row.bound,
    })
}

/// The events' batch statement, as [`batch_sql`] is the runs': `$1` age in
/// seconds, `$2`/`$3` the cursor. An event goes once it is older than the
/// bound, routed, none of its deliveries is `pending` (to be sent or
/// retried) or `held` (waiting for its target's `max_frequency` period, to
/// be sent with the others folded into it), and none is the newest let go
/// to its target for its kind and subject (throttling counts from it; one
/// event per target, kind and subject, bounded by the definitions, stays
/// for that): `sent`, `failed` and `folded` are final, so what the statement's snapshot sees final stays final, and
/// an event whose routing commits after the snapshot is seen unrouted and
/// kept. Deliveries and their attempts go by `ON DELETE CASCADE`. Events
/// have no foreign key to runs: an event outlives its run (a run pruned
/// while its alert is still pending is alerted all the same), and pruning
/// runs never touches events.
fn events_batch_sql(limit: u32, delete: bool) -> String {
    let lock = if delete { "FOR UPDATE OF e SKIP LOCKED" } else { "" };
    let gone = if delete {
        "gone AS (DELETE FROM events e USING doomed d WHERE e.id = d.id RETURNING e.id)"
    } else {
        "gone AS (SELECT id FROM doomed)"
    };
    format!(
        "WITH bound AS (SELECT now() - make_interval(secs => $1) AS at),
        scan AS MATERIALIZED (
            SELECT id, at FROM events
             WHERE at < (SELECT at FROM bound) AND (at, id) > ($2, $3)
             ORDER BY at, id
             LIMIT {limit}
        ),
        doomed AS (
            SELECT e.id FROM events e JOIN scan s ON s.id = e.id
             WHERE e.routed_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM alert_deliveries d
                                WHERE d.event_id = e.id AND d.state IN ('pending', 'held'))
               -- The newest delivery let go to a target for its kind and
               -- subject is what `max_frequency` counts its period from:
               -- kept, however old, or a prune shorter than the period
               -- would let the next alert through at once.
               AND NOT EXISTS (SELECT 1 FROM alert_deliveries d
                                WHERE d.event_id = e.id AND d.released_at IS NOT NULL
                                  AND NOT EXISTS (SELECT 1 FROM alert_deliveries n
                                                   WHERE n.target = d.target AND n.kind = d.kind
                                                     AND n.subject = d.subject
                                                     AND (n.released_at, n.event_id) > (d.released_at, d.event_id)))
             {lock}
        ),
        deliveries AS (
            SELECT coalesce(sum(x.n), 0)::bigint AS n FROM doomed d
             CROSS JOIN LATERAL (SELECT count(*) AS n FROM alert_deliveries a WHERE a.event_id = d.id) x
        ),
        {gone},
        last AS (SELECT at, id FROM scan ORDER BY at DESC, id DESC LIMIT 1)
        SELECT (SELECT count(*) FROM gone) AS events,
               (SELECT n FROM deliveries) AS deliveries,
               (SELECT count(*) FROM scan) AS scanned,
               (SELECT at FROM last) AS last_at,
               (SELECT id FROM last) AS last_id,
               (SELECT at FROM bound) AS bound"
    )
}

#[derive(sqlx::FromRow)]
struct EventBatchRow {
    events: i64,
    deliveries: i64,
    scanned: i64,
    last_at: Option<DateTime<Utc>>,
    last_id: Option<i64>,
    bound: DateTime<Utc>,
}

/// One batch of at most `limit` events recorded more than `older_than` ago,
/// after `from` (`None`: from the oldest), whose deliveries are all over:
/// deleted with their deliveries and attempts, or only counted when
/// `dry_run`.
pub(crate) async fn prune_events_batch(
    t: &Tracker,
    older_than: Duration,
    from: Option<EventCursor>,
    limit: u32,
    dry_run: bool,
) -> Result<EventPruneBatch> {
    let limit = limit.max(1);
    let from = from.unwrap_or(EventCursor {
        at: DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default(),
        id: i64::MIN,
    });
    let mut tx = t.pool.begin().await?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    let row: EventBatchRow = sqlx::query_as(sqlx::AssertSqlSafe(events_batch_sql(limit, !dry_run)))
        .bind(older_than.as_secs_f64())
        .bind(from.at)
        .bind(from.id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    let next = match (row.last_at, row.last_id) {
        (Some(at), Some(id)) if row.scanned >= limit as i64 => Some(EventCursor { at, id }),
        _ => None,
    };
    Ok(EventPruneBatch {
        counts: PruneCounts {
            events: row.events,
            deliveries: row.deliveries,
            ..PruneCounts::default()
        },
        scanned: row.scanned,
        next,
        bound: row.bound,
    })
}

/// A table's row count as the planner estimates it (rows per page at the
/// last ANALYZE or VACUUM times its pages now; -1 when never analyzed, 0
/// when it does not exist).
const ESTIMATE: &str = "
    coalesce((SELECT CASE WHEN c.relpages > 0
                          THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::float8)
                          ELSE c.reltuples::float8 END
                FROM pg_class c WHERE c.oid = to_regclass(t.name)), 0)";

/// Runs, executions and log rows (estimated; exact under [`EXACT_BELOW`]),
/// what the logs and the database take on disk. A few catalog reads and
/// `stat`s of the database's files; exact counts only of small tables (a
/// table never analyzed is counted up to [`EXACT_BELOW`] rows, and past
/// that reads as an estimate of at least that many).
pub(crate) async fn storage_figures(t: &Tracker) -> Result<StorageFigures> {
    let estimates: Vec<(String, f64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT t.name, {ESTIMATE} FROM unnest(ARRAY['runs', 'executions', 'execution_logs']) AS t(name)"
    )))
    .fetch_all(&t.pool)
    .await?;
    let mut figures = StorageFigures::default();
    for (table, estimate) in estimates {
        let rows = if estimate < EXACT_BELOW {
            // Small, or never analyzed (then possibly large): counted, but
            // never past the bound, so a page load stays cheap either way.
            let cap = EXACT_BELOW as i64;
            let counted: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {cap}) t"
            )))
            .fetch_one(&t.pool)
            .await?;
            if counted >= cap {
                figures.estimated = true;
            }
            counted
        } else {
            figures.estimated = true;
            estimate.round() as i64
        };
        match table.as_str() {
            "runs" => figures.runs = rows,
            "executions" => figures.executions = rows,
            _ => figures.log_rows = rows,
        }
    }
    let (log_bytes, database_bytes): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(pg_total_relation_size(to_regclass('execution_logs')), 0),
                pg_database_size(current_database())",
    )
    .fetch_one(&t.pool)
    .await?;
    figures.log_bytes = log_bytes;
    figures.database_bytes = database_bytes;
    Ok(figures)
}
