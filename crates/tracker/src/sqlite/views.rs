//! Mirrors `crate::views` (PostgreSQL) for the embedded store: the read
//! models of `scheduler runs`, `scheduler show` and the UI, keyset-paginated
//! on `(created_at, id)` as there.
//!
//! Where PostgreSQL reads `now()`, these statements read the store's clock
//! ([`super::now`]), bound once into a one-row relation `clock` ([`CLOCK`]).

use super::Embedded;
use crate::Result;
use crate::views::{ExecutionView, QueueLoad, RunDetail, RunFilter, RunSummary, WorkerView};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{FromRow, QueryBuilder, Sqlite};
use uuid::Uuid;

/// The statement's clock, a one-row relation: `now`, and `live`, the bound
/// a live worker's heartbeat is after (three of its 10 s heartbeats ago).
/// Bind [`clock`]'s two times to it, first.
pub(crate) const CLOCK: &str = "WITH clock(now, live) AS (SELECT ?, ?) ";

/// The two times [`CLOCK`] takes.
pub(crate) fn clock() -> (DateTime<Utc>, DateTime<Utc>) {
    let now = super::now();
    (now, now - chrono::Duration::seconds(30))
}

/// A worker that takes work: running (not draining) and heartbeating within
/// the last 30 s (the UI's "alive").
macro_rules! live_worker {
    () => {
        "w.state = 'running' AND w.heartbeat_at > clock.live"
    };
}

/// The columns of a [`RunSummary`], from relations named `runs` and
/// `clock` ([`CLOCK`]), joined `runs CROSS JOIN clock`: SQLite keeps the
/// order of a cross join, so `runs` is the outer loop and its index order
/// serves `ORDER BY` (with `clock` first, a keyset page would sort every
/// matching run). Durations are differences of stored times
/// (`unixepoch(.., 'subsec')`, to the millisecond).
pub(crate) const RUN_COLUMNS: &str = concat!(
    "runs.id, runs.sequence, runs.state, runs.trigger, runs.queue, runs.step_count,
    (SELECT max(e.step) FROM executions e WHERE e.run_id = runs.id) AS current_step, runs.failed_step, runs.error,
    runs.created_at, runs.started_at, runs.finished_at,
    CAST(round((unixepoch(coalesce(runs.finished_at, clock.now), 'subsec') - unixepoch(runs.started_at, 'subsec'))
               * 1000) AS INTEGER) AS duration_ms,
    (SELECT min(e.due_at) FROM executions e
      WHERE e.run_id = runs.id AND e.state = 'queued' AND e.due_at > clock.now) AS retry_at,
    runs.note, runs.schedule, runs.logical_date,
    CASE WHEN runs.state = 'running' THEN
    (SELECT coalesce(e.queue, runs.queue) FROM executions e
      WHERE e.run_id = runs.id AND e.state = 'queued' AND (e.due_at IS NULL OR e.due_at <= clock.now)
        AND NOT EXISTS (SELECT 1 FROM workers w WHERE ",
    live_worker!(),
    " AND coalesce(e.queue, runs.queue) IN (SELECT value FROM json_each(w.queues)))
      LIMIT 1) END AS waiting_on"
);

/// `WITH clock ... SELECT <run columns>`, its clock bound.
fn select_runs() -> QueryBuilder<Sqlite> {
    let (now, live) = clock();
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("WITH clock(now, live) AS (SELECT ");
    q.push_bind(now)
        .push(", ")
        .push_bind(live)
        .push(") SELECT ")
        .push(RUN_COLUMNS);
    q
}

pub(crate) async fn list_runs(t: &Embedded, f: &RunFilter) -> Result<Vec<RunSummary>> {
    let mut q = select_runs();
    q.push(" FROM runs CROSS JOIN clock WHERE true");
    if let Some(s) = &f.sequence {
        q.push(" AND sequence = ").push_bind(s.clone());
    }
    if let Some(s) = &f.schedule {
        q.push(" AND schedule = ").push_bind(s.clone());
    }
    if let Some(s) = f.state {
        q.push(" AND state = ").push_bind(s.as_str());
    }
    if let Some(t) = f.since {
        q.push(" AND created_at >= ").push_bind(t);
    }
    if let Some(t) = f.until {
        q.push(" AND created_at < ").push_bind(t);
    }
    if let Some((t, id)) = f.before {
        q.push(" AND (created_at, id) < (")
            .push_bind(t)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(f.limit.clamp(1, 1000) as i64);
    Ok(q.build_query_as::<RunSummary>().fetch_all(&t.pool).await?)
}

/// An [`ExecutionView`] as SQLite holds it: `argv` and `warnings` are JSON
/// arrays in TEXT.
#[derive(FromRow)]
struct ExecutionRow {
    step: i32,
    attempt: i32,
    module: String,
    argv: Json<Vec<String>>,
    state: String,
    worker_id: Option<Uuid>,
    worker_host: Option<String>,
    pid: Option<i32>,
    queued_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    lease_until: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    error: Option<String>,
    stdout_tail: Option<String>,
    stderr_tail: Option<String>,
    stdout_bytes: Option<i64>,
    stderr_bytes: Option<i64>,
    retry: i32,
    due_at: Option<DateTime<Utc>>,
    queue: String,
    log_bytes: Option<i64>,
    log_omitted: Option<i64>,
    wall_us: Option<i64>,
    peak_rss_kib: Option<i64>,
    user_cpu_us: Option<i64>,
    sys_cpu_us: Option<i64>,
    output_path: Option<String>,
    output_bytes: Option<i64>,
    output_mtime: Option<DateTime<Utc>>,
    output_sha256: Option<String>,
    previous_output_sha256: Option<String>,
    warnings: Option<Json<Vec<String>>>,
    stalled_at: Option<DateTime<Utc>>,
    given_back: bool,
}

impl From<ExecutionRow> for ExecutionView {
    fn from(r: ExecutionRow) -> ExecutionView {
        ExecutionView {
            step: r.step,
            attempt: r.attempt,
            module: r.module,
            argv: r.argv.0,
            state: r.state,
            worker_id: r.worker_id,
            worker_host: r.worker_host,
            pid: r.pid,
            queued_at: r.queued_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            lease_until: r.lease_until,
            duration_ms: r.duration_ms,
            exit_code: r.exit_code,
            signal: r.signal,
            error: r.error,
            stdout_tail: r.stdout_tail,
            stderr_tail: r.stderr_tail,
            stdout_bytes: r.stdout_bytes,
            stderr_bytes: r.stderr_bytes,
            retry: r.retry,
            due_at: r.due_at,
            queue: r.queue,
            log_bytes: r.log_bytes,
            log_omitted: r.log_omitted,
            wall_us: r.wall_us,
            peak_rss_kib: r.peak_rss_kib,
            user_cpu_us: r.user_cpu_us,
            sys_cpu_us: r.sys_cpu_us,
            output_path: r.output_path,
            output_bytes: r.output_bytes,
            output_mtime: r.output_mtime,
            output_sha256: r.output_sha256,
            previous_output_sha256: r.previous_output_sha256,
            warnings: r.warnings.map(|w| w.0),
            stalled_at: r.stalled_at,
            given_back: r.given_back,
        }
    }
}

/// The run and its executions from one snapshot of the database: a
/// deferred (read) transaction, whose first read fixes its WAL snapshot;
/// read apart, a fast run could show as `queued` beside executions that
/// already ran. Not `BEGIN IMMEDIATE`: it never writes, so it takes no
/// write lock and waits for no writer.
pub(crate) async fn run_detail(t: &Embedded, run_id: Uuid) -> Result<Option<RunDetail>> {
    let mut tx = t.pool.begin().await?;
    let mut q = select_runs();
    q.push(", runs.snapshot FROM runs CROSS JOIN clock WHERE runs.id = ")
        .push_bind(run_id);
    let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
        return Ok(None);
    };
    use sqlx::Row;
    let run = RunSummary::from_row(&row)?;
    let snapshot: Json<serde_json::Value> = row.try_get("snapshot")?;
    let (now, _) = clock();
    let executions = sqlx::query_as::<_, ExecutionRow>(
        "SELECT e.step, e.attempt, e.module, e.argv, e.state, e.worker_id, w.host AS worker_host, e.pid,
                e.queued_at, e.started_at, e.finished_at, e.lease_until,
                coalesce(e.duration_ms,
                         CAST(round((unixepoch(?2, 'subsec') - unixepoch(e.started_at, 'subsec')) * 1000) AS INTEGER))
                  AS duration_ms,
                e.exit_code, e.signal, e.error, e.stdout_tail, e.stderr_tail, e.stdout_bytes, e.stderr_bytes,
                e.retry, e.due_at, coalesce(e.queue, r.queue) AS queue,
                coalesce(e.log_bytes, CASE WHEN e.stdout_bytes + e.stderr_bytes = 0 THEN 0 END) AS log_bytes,
                coalesce(e.log_omitted, CASE WHEN e.stdout_bytes + e.stderr_bytes = 0 THEN 0 END) AS log_omitted,
                e.wall_us, e.peak_rss_kib, e.user_cpu_us, e.sys_cpu_us,
                e.output_path, e.output_bytes, e.output_mtime, e.output_sha256, e.given_back,
                CASE WHEN e.output_sha256 IS NOT NULL THEN
                  (SELECT e2.output_sha256 FROM runs r2 JOIN executions e2 ON e2.run_id = r2.id
                    WHERE r2.sequence = r.sequence AND r2.state = 'succeeded' AND r2.created_at < r.created_at
                      AND e2.step = e.step AND e2.state = 'succeeded'
                    ORDER BY r2.created_at DESC, e2.attempt DESC LIMIT 1)
                END AS previous_output_sha256,
                e.warnings, e.stalled_at
           FROM executions e JOIN runs r ON r.id = e.run_id LEFT JOIN workers w ON w.id = e.worker_id
          WHERE e.run_id = ?1
       ORDER BY e.step, e.attempt",
    )
    .bind(run_id)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(RunDetail {
        run,
        snapshot: snapshot.0,
        executions: executions.into_iter().map(ExecutionView::from).collect(),
    }))
}

/// A [`WorkerView`] with its queues as SQLite holds them (a JSON array).
#[derive(FromRow)]
struct WorkerRow {
    id: Uuid,
    host: String,
    pid: i32,
    version: String,
    concurrency: i32,
    queues: Json<Vec<String>>,
    state: String,
    started_at: DateTime<Utc>,
    heartbeat_at: DateTime<Utc>,
    running: i64,
}

pub(crate) async fn list_workers(t: &Embedded) -> Result<Vec<WorkerView>> {
    let day_ago = super::now() - chrono::Duration::days(1);
    let rows = sqlx::query_as::<_, WorkerRow>(
        "SELECT w.id, w.host, w.pid, w.version, w.concurrency, w.queues, w.state, w.started_at, w.heartbeat_at,
                (SELECT count(*) FROM executions e WHERE e.worker_id = w.id AND e.state = 'running') AS running
           FROM workers w
          WHERE w.state <> 'stopped' OR w.heartbeat_at > ?1
       ORDER BY w.started_at DESC",
    )
    .bind(day_ago)
    .fetch_all(&t.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| WorkerView {
            id: r.id,
            host: r.host,
            pid: r.pid,
            version: r.version,
            concurrency: r.concurrency,
            queues: r.queues.0,
            state: r.state,
            started_at: r.started_at,
            heartbeat_at: r.heartbeat_at,
            running: r.running,
        })
        .collect())
}

/// A [`QueueLoad`] with its hosts as SQLite holds them (a JSON array).
#[derive(FromRow)]
struct QueueLoadRow {
    queue: String,
    waiting_steps: i64,
    waiting_runs: i64,
    served_by: Json<Vec<String>>,
}

/// Every queue with work waiting on it or a live worker serving it.
/// `json_each` stands for `unnest`, and `json_group_array(.. ORDER BY)`
/// over distinct pairs for `array_agg(DISTINCT .. ORDER BY)`.
pub(crate) async fn queue_loads(t: &Embedded) -> Result<Vec<QueueLoad>> {
    let (now, live) = clock();
    let rows = sqlx::query_as::<_, QueueLoadRow>(concat!(
        "WITH clock(now, live) AS (SELECT ?1, ?2),
         steps AS (
            SELECT coalesce(e.queue, r.queue) AS queue, count(*) AS n
              FROM clock, executions e JOIN runs r ON r.id = e.run_id
             WHERE e.state = 'queued' AND r.state = 'running' AND (e.due_at IS NULL OR e.due_at <= clock.now)
             GROUP BY 1
         ), starts AS (
            SELECT queue, count(*) AS n FROM runs WHERE state = 'queued' GROUP BY 1
         ), served AS (
            SELECT queue, json_group_array(host ORDER BY host) AS hosts
              FROM (SELECT DISTINCT q.value AS queue, w.host AS host
                      FROM clock, workers w, json_each(w.queues) q
                     WHERE ",
        live_worker!(),
        ")
             GROUP BY 1
         ), names AS (
            SELECT queue FROM steps UNION SELECT queue FROM starts UNION SELECT queue FROM served
         )
         SELECT names.queue, coalesce(steps.n, 0) AS waiting_steps, coalesce(starts.n, 0) AS waiting_runs,
                coalesce(served.hosts, '[]') AS served_by
           FROM names LEFT JOIN steps USING (queue) LEFT JOIN starts USING (queue) LEFT JOIN served USING (queue)
          ORDER BY names.queue"
    ))
    .bind(now)
    .bind(live)
    .fetch_all(&t.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| QueueLoad {
            queue: r.queue,
            waiting_steps: r.waiting_steps,
            waiting_runs: r.waiting_runs,
            served_by: r.served_by.0,
        })
        .collect())
}
