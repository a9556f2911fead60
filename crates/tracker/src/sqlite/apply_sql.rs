//! The statements of a decision's write in the embedded store (`apply.rs`
//! runs them one by one; `apply_hot.rs` runs the step's own write as one
//! script of the same texts), their parameters, and the answer they make.

use crate::apply::{Close, Written};
use crate::executions::{Claimed, ExecResult, ModuleEnv, StepDef, env_pairs};
use crate::runs::strip_nul;
use chrono::{DateTime, Utc};
use scheduler_core::ExecState;
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments};
use sqlx::types::Json;
use std::sync::LazyLock;

/// What the run part returns, whether it moved the run or read it: the
/// answer's run-level columns. `$2` is the step to queue (its `cwd`, `env`
/// and definition for the claim).
const RUN_COLUMNS: &str = "id, sequence, step_count, queue,
       json_type(snapshot, '$.concurrency.max_concurrent') IS NOT NULL AS limited,
       json_extract(snapshot, '$.logical_date') AS logical_date,
       json_extract(snapshot, '$.schedule') AS schedule,
       json_extract(snapshot, '$.steps[' || $2 || '].cwd') AS cwd,
       json_extract(snapshot, '$.steps[' || $2 || '].env') AS env,
       json_extract(snapshot, '$.steps[' || $2 || ']') AS step_def";

/// The run part without a move: the run's columns while it is `running`,
/// and `gate` (a further condition: empty here, the hot script's
/// `changes()` test in `apply_hot.rs`).
pub(super) fn read_sql(gate: &str) -> String {
    format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND state = 'running'{gate}")
}

/// The run part with a move: `$3 -> $4` (compare-and-set), the failing
/// step `$5` and reason `$6` with a failure, at `$7`; the run's columns.
pub(super) fn move_sql() -> String {
    format!(
        "UPDATE runs SET
            state = $4,
            updated_at = $7,
            started_at = CASE WHEN $4 = 'running' THEN coalesce(started_at, $7) ELSE started_at END,
            finished_at = CASE WHEN $4 IN ('succeeded', 'failed', 'canceled', 'skipped') THEN $7 ELSE NULL END,
            failed_step = CASE WHEN $4 = 'failed' THEN $5 WHEN $4 = 'running' THEN NULL ELSE failed_step END,
            error = CASE WHEN $4 = 'failed' THEN $6 WHEN $4 = 'running' THEN NULL ELSE error END,
            note = CASE WHEN $3 = 'waiting' THEN NULL ELSE note END
          WHERE id = $1 AND state = $3
      RETURNING {RUN_COLUMNS}"
    )
}

/// A healthcheck ping of a run that moved (`$2`: its kind, `$3`: the
/// failure's reason, `$4`: the time), only if its snapshot names a
/// `healthcheck_url`.
pub(super) const HEALTHCHECK: &str = "INSERT INTO events (kind, sequence, run_id, message, detail, at)
     SELECT $2, sequence, id, $3, json_object('url', json_extract(snapshot, '$.healthcheck_url')), $4
       FROM runs WHERE id = $1 AND json_type(snapshot, '$.healthcheck_url') IS NOT NULL";

/// The queue part: the next execution inserted from the run's snapshot,
/// claimed when a worker asked (`$4`), the step is due now and the worker
/// serves the step's queue (the run's for older snapshots); only where
/// `gate` (a further condition on the run's row) holds.
pub(super) fn queue_sql(gate: &str) -> String {
    format!(
        "INSERT INTO executions (run_id, step, attempt, module, argv, timeout_secs, state,
                                 worker_id, started_at, lease_until, retry, due_at, queue, queued_at)
         SELECT $1, $2, $3, json_extract(s, '$.module_name'), json_extract(s, '$.argv'),
                json_extract(s, '$.timeout_secs'),
                CASE WHEN claim THEN 'running' ELSE 'queued' END,
                CASE WHEN claim THEN $4 END,
                CASE WHEN claim THEN $9 END,
                CASE WHEN claim THEN $5 END,
                coalesce($6, 0), $7, step_queue, $9
           FROM (SELECT s, step_queue,
                        $4 IS NOT NULL AND step_queue IN (SELECT value FROM json_each($8)) AS claim
                   FROM (SELECT s, coalesce(json_extract(s, '$.queue'), queue) AS step_queue
                           FROM (SELECT json_extract(snapshot, '$.steps[' || $2 || ']') AS s, queue
                                   FROM runs WHERE id = $1{gate})))
          WHERE s IS NOT NULL
         ON CONFLICT DO NOTHING
      RETURNING module, argv, timeout_secs, retry, queue, state"
    )
}

/// The close part: the holder's result (`$2` = `finish`, guarded by its
/// worker id) or recovery's `abandoned` (guarded by the lease having
/// expired); returns the execution's `started_at` when it applied.
/// `$15..$25` are the PostgreSQL statement's other parts, unbound (NULL)
/// here so that the numbering stays the same.
pub(super) const CLOSE: &str = "UPDATE executions
            SET state = $6, finished_at = $35, lease_until = NULL,
                duration_ms = $7,
                exit_code = $8, signal = $9, error = $10, stdout_tail = $11, stderr_tail = $12,
                stdout_bytes = $13, stderr_bytes = $14,
                wall_us = $26, peak_rss_kib = $27, user_cpu_us = $28, sys_cpu_us = $29,
                output_path = $30, output_bytes = $31, output_mtime = $32, output_sha256 = $33,
                warnings = $34, pid = coalesce($36, pid)
          WHERE run_id = $1 AND step = $3 AND attempt = $4 AND state = 'running'
            AND CASE $2 WHEN 'finish' THEN worker_id = $5 ELSE lease_until < $35 END
      RETURNING started_at";

/// [`CLOSE`]'s `$1..$36` bound to `query` (its text is `CLOSE`, or begins
/// with statements that name their parameters the same way).
pub(super) fn bind_close<'q>(
    query: Query<'q, Sqlite, SqliteArguments>,
    run_id: uuid::Uuid,
    close: Close<'q>,
    now: DateTime<Utc>,
) -> Query<'q, Sqlite, SqliteArguments> {
    static ABANDONED: LazyLock<ExecResult> = LazyLock::new(|| ExecResult::new(ExecState::Abandoned));
    let (finished, key, worker, state, result, error) = match close {
        Close::Finish { key, worker_id, result } => (
            true,
            key,
            Some(worker_id),
            result.state,
            result,
            result.error.as_deref().map(strip_nul),
        ),
        Close::Abandon { key, reason } => (
            false,
            key,
            None,
            ExecState::Abandoned,
            &*ABANDONED,
            Some(strip_nul(reason)),
        ),
    };
    let output = result.output.as_ref().filter(|_| finished);
    let warnings = (finished && !result.warnings.is_empty())
        .then(|| Json(result.warnings.iter().map(|w| strip_nul(w)).collect::<Vec<_>>()));
    let mut query = query
        .bind(run_id)
        .bind(if finished { "finish" } else { "abandon" })
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .bind(worker)
        .bind(state.as_str())
        .bind(finished.then_some(result.duration_ms))
        .bind(result.exit_code)
        .bind(result.signal)
        .bind(error)
        .bind(finished.then(|| strip_nul(&result.stdout_tail)))
        .bind(finished.then(|| strip_nul(&result.stderr_tail)))
        .bind(finished.then_some(result.stdout_bytes))
        .bind(finished.then_some(result.stderr_bytes));
    for _ in 15..=25 {
        query = query.bind(None::<i32>);
    }
    query
        .bind(finished.then_some(result.wall_us).flatten())
        .bind(finished.then_some(result.peak_rss_kib).flatten())
        .bind(finished.then_some(result.user_cpu_us).flatten())
        .bind(finished.then_some(result.sys_cpu_us).flatten())
        .bind(output.map(|o| strip_nul(&o.path)))
        .bind(output.map(|o| o.bytes))
        .bind(output.map(|o| o.mtime))
        .bind(output.and_then(|o| o.sha256.clone()))
        .bind(warnings)
        .bind(now)
        .bind(finished.then_some(result.pid).flatten().map(|p| p as i32))
}

/// What a write that closed (if it had to), then read or moved `run` and
/// queued `queued` (if it did), returns.
pub(super) fn written(run: RunRow, queued: Option<QueuedRow>) -> Written {
    let claimed = queued.as_ref().is_some_and(|q| q.state == "running");
    let exec_queue = queued.as_ref().and_then(|q| q.queue.clone());
    let inserted = queued.map(|q| Claimed {
        module: q.module,
        argv: q.argv.0,
        timeout_secs: q.timeout_secs.map(|t| t as u64),
        sequence: run.sequence.clone(),
        step_count: run.step_count as u32,
        retry: q.retry.max(0) as u32,
        logical_date: run.logical_date.clone(),
        schedule: run.schedule.clone(),
        cwd: run.cwd.clone(),
        env: env_pairs(run.env.clone()),
        watch: run.step_def.clone().map(|d| d.0).unwrap_or_default(),
    });
    Written {
        closed: true,
        run: true,
        queued: inserted.is_some(),
        claimed: inserted.filter(|_| claimed),
        queue: Some(run.queue),
        exec_queue,
        sequence: Some(run.sequence),
        limited: run.limited,
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RunRow {
    pub(super) sequence: String,
    step_count: i32,
    queue: String,
    limited: bool,
    logical_date: Option<String>,
    schedule: Option<String>,
    cwd: Option<String>,
    env: Option<ModuleEnv>,
    step_def: Option<StepDef>,
}

#[derive(sqlx::FromRow)]
pub(super) struct QueuedRow {
    pub(super) module: String,
    argv: Json<Vec<String>>,
    timeout_secs: Option<i64>,
    pub(super) retry: i32,
    queue: Option<String>,
    state: String,
}
