//! Read models: what `scheduler runs`, `scheduler show` and the UI display.
//! Listing is keyset-paginated on `(created_at, id)`, never OFFSET, so a page
//! costs the same with a thousand runs or millions.

use crate::{Result, Tracker};
use chrono::{DateTime, Utc};
use scheduler_core::RunState;
use serde::Serialize;
use sqlx::{FromRow, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct RunSummary {
    pub id: Uuid,
    pub sequence: String,
    /// `waiting`, `queued`, `running`, `succeeded`, `failed`, `canceled` or
    /// `skipped`.
    pub state: String,
    pub trigger: String,
    pub queue: String,
    pub step_count: i32,
    pub current_step: Option<i32>,
    pub failed_step: Option<i32>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// From start to end (or to now while running).
    pub duration_ms: Option<i64>,
    /// While its failed step waits to be retried: when the retry is due.
    pub retry_at: Option<DateTime<Utc>>,
    /// Why it waits for a slot, was skipped, or was canceled by a newer run.
    pub note: Option<String>,
    /// The queue its next step waits on when no live worker serves it (it
    /// waits; it goes on as soon as a worker for that queue starts).
    pub waiting_on: Option<String>,
    /// The schedule that started it, and the slot it is for.
    pub schedule: Option<String>,
    pub logical_date: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct ExecutionView {
    pub step: i32,
    pub attempt: i32,
    pub module: String,
    pub argv: Vec<String>,
    /// `queued`, `running`, `succeeded`, `failed`, `canceled` or `abandoned`.
    pub state: String,
    pub worker_id: Option<Uuid>,
    pub worker_host: Option<String>,
    pub pid: Option<i32>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    pub stdout_tail: Option<String>,
    pub stderr_tail: Option<String>,
    pub stdout_bytes: Option<i64>,
    pub stderr_bytes: Option<i64>,
    /// Retries of the step's failures this attempt is (0: none).
    pub retry: i32,
    /// A queued retry waits until then.
    pub due_at: Option<DateTime<Utc>>,
    /// The queue it was sent to.
    pub queue: String,
    /// Once its whole log is recorded: every byte it wrote, and how many
    /// of them the cap left out (`None` while it runs, or if its worker
    /// died before the last of it was written).
    pub log_bytes: Option<i64>,
    pub log_omitted: Option<i64>,
    /// Wall time to the microsecond, and the kernel's accounting of the
    /// module and the children it waited for (`None` before it ended).
    pub wall_us: Option<i64>,
    pub peak_rss_kib: Option<i64>,
    pub user_cpu_us: Option<i64>,
    pub sys_cpu_us: Option<i64>,
    /// Its declared local output as the module left it (exit 0 only).
    pub output_path: Option<String>,
    pub output_bytes: Option<i64>,
    pub output_mtime: Option<DateTime<Utc>>,
    pub output_sha256: Option<String>,
    /// The same step's output checksum in the sequence's previous
    /// successful run (to say whether the output changed).
    pub previous_output_sha256: Option<String>,
    /// What did not fail the step but should be seen.
    pub warnings: Option<Vec<String>>,
    /// Since when it has written nothing (its stall watch); `None` when not stalled.
    pub stalled_at: Option<DateTime<Utc>>,
    /// `abandoned` by its own worker, not lost: stopped at a shutdown past
    /// the drain bound, or handed back for want of a free module slot. Not
    /// counted toward `--max-attempts`.
    pub given_back: bool,
}

/// One queue as the record sees it: the work waiting on it and the live
/// workers serving it.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct QueueLoad {
    pub queue: String,
    /// Steps queued on it and due (not a retry still waiting for its delay).
    pub waiting_steps: i64,
    /// Runs whose `start_etl` goes to it and that have not started yet.
    pub waiting_runs: i64,
    /// Hosts of the live workers serving it (empty: nobody serves it).
    pub served_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    /// The definitions frozen when the run was recorded: what its steps run.
    pub snapshot: serde_json::Value,
    pub executions: Vec<ExecutionView>,
}

#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct WorkerView {
    pub id: Uuid,
    pub host: String,
    pub pid: i32,
    pub version: String,
    pub concurrency: i32,
    pub queues: Vec<String>,
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub running: i64,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub sequence: Option<String>,
    /// The runs one schedule started (its slots and backfills).
    pub schedule: Option<String>,
    pub state: Option<RunState>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Keyset cursor: only runs strictly older than this `(created_at, id)`.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: u32,
}

/// A worker that takes work: running (not draining) and heartbeating within
/// the last 30 s (three of its 10 s heartbeats; the UI's "alive").
macro_rules! live_worker {
    () => {
        "w.state = 'running' AND w.heartbeat_at > now() - interval '30 seconds'"
    };
}

/// The columns of a [`RunSummary`], from a relation named `runs`.
pub(crate) const RUN_COLUMNS: &str = concat!(
    "runs.id, runs.sequence, runs.state, runs.trigger, runs.queue, runs.step_count,
    (SELECT max(e.step) FROM executions e WHERE e.run_id = runs.id) AS current_step, runs.failed_step, runs.error,
    runs.created_at, runs.started_at, runs.finished_at,
    (extract(epoch FROM (coalesce(runs.finished_at, now()) - runs.started_at)) * 1000)::bigint AS duration_ms,
    (SELECT min(e.due_at) FROM executions e
      WHERE e.run_id = runs.id AND e.state = 'queued' AND e.due_at > now()) AS retry_at,
    runs.note, runs.schedule, runs.logical_date,
    CASE WHEN runs.state = 'running' THEN
    (SELECT coalesce(e.queue, runs.queue) FROM executions e
      WHERE e.run_id = runs.id AND e.state = 'queued' AND (e.due_at IS NULL OR e.due_at <= now())
        AND NOT EXISTS (SELECT 1 FROM workers w WHERE ",
    live_worker!(),
    " AND coalesce(e.queue, runs.queue) = ANY(w.queues))
      LIMIT 1) END AS waiting_on"
);

pub(crate) async fn list_runs(t: &Tracker, f: &RunFilter) -> Result<Vec<RunSummary>> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT ");
    q.push(RUN_COLUMNS).push(" FROM runs WHERE true");
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

/// The run and its executions from one snapshot of the database (a
/// read-only repeatable-read transaction): read apart, a fast run could show
/// as `queued` beside executions that already ran.
pub(crate) async fn run_detail(t: &Tracker, run_id: Uuid) -> Result<Option<RunDetail>> {
    let mut tx = t.pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT ");
    q.push(RUN_COLUMNS)
        .push(", snapshot FROM runs WHERE id = ")
        .push_bind(run_id);
    let Some(row) = q.build().fetch_optional(&mut *tx).await? else {
        return Ok(None);
    };
    use sqlx::Row;
    let run = RunSummary::from_row(&row)?;
    let snapshot: serde_json::Value = row.try_get("snapshot")?;
    let executions = sqlx::query_as::<_, ExecutionView>(
        "SELECT e.step, e.attempt, e.module, e.argv, e.state, e.worker_id, w.host AS worker_host, e.pid,
                e.queued_at, e.started_at, e.finished_at, e.lease_until,
                coalesce(e.duration_ms, (extract(epoch FROM (now() - e.started_at)) * 1000)::bigint) AS duration_ms,
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
          WHERE e.run_id = $1
       ORDER BY e.step, e.attempt",
    )
    .bind(run_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(RunDetail {
        run,
        snapshot,
        executions,
    }))
}

pub(crate) async fn list_workers(t: &Tracker) -> Result<Vec<WorkerView>> {
    Ok(sqlx::query_as::<_, WorkerView>(
        "SELECT w.id, w.host, w.pid, w.version, w.concurrency, w.queues, w.state, w.started_at, w.heartbeat_at,
                (SELECT count(*) FROM executions e WHERE e.worker_id = w.id AND e.state = 'running') AS running
           FROM workers w
          WHERE w.state <> 'stopped' OR w.heartbeat_at > now() - interval '1 day'
       ORDER BY w.started_at DESC",
    )
    .fetch_all(&t.pool)
    .await?)
}

/// Every queue with work waiting on it or a live worker serving it.
pub(crate) async fn queue_loads(t: &Tracker) -> Result<Vec<QueueLoad>> {
    Ok(sqlx::query_as::<_, QueueLoad>(concat!(
        "WITH steps AS (
            SELECT coalesce(e.queue, r.queue) AS queue, count(*) AS n
              FROM executions e JOIN runs r ON r.id = e.run_id
             WHERE e.state = 'queued' AND r.state = 'running' AND (e.due_at IS NULL OR e.due_at <= now())
             GROUP BY 1
         ), starts AS (
            SELECT queue, count(*) AS n FROM runs WHERE state = 'queued' GROUP BY 1
         ), served AS (
            SELECT q AS queue, array_agg(DISTINCT w.host ORDER BY w.host) AS hosts
              FROM workers w CROSS JOIN LATERAL unnest(w.queues) AS q
             WHERE ",
        live_worker!(),
        "
             GROUP BY 1
         ), names AS (
            SELECT queue FROM steps UNION SELECT queue FROM starts UNION SELECT queue FROM served
         )
         SELECT names.queue, coalesce(steps.n, 0) AS waiting_steps, coalesce(starts.n, 0) AS waiting_runs,
                coalesce(served.hosts, '{}') AS served_by
           FROM names LEFT JOIN steps USING (queue) LEFT JOIN starts USING (queue) LEFT JOIN served USING (queue)
          ORDER BY names.queue"
    ))
    .fetch_all(&t.pool)
    .await?)
}
