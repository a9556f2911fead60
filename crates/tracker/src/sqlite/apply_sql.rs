//! The statements of a decision's write in the embedded store (`apply.rs`
//! runs them on the inline connection), their parameters, and the answer
//! they make.

use super::apply::after;
use super::inline::{Value, int, opt, text, time, uuid};
use crate::TrackerError;
use crate::apply::{ClaimFor, Close, Written};
use crate::executions::{Claimed, ExecResult, ModuleEnv, StepDef, env_pairs};
use crate::runs::strip_nul;
use chrono::{DateTime, Utc};
use scheduler_core::ExecState;
use scheduler_core::machine::StepAttempt;
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
                warnings = $34, pid = coalesce($36, pid),
                given_back = ($2 = 'finish' AND $6 = 'abandoned')
          WHERE run_id = $1 AND step = $3 AND attempt = $4 AND state = 'running'
            AND CASE $2 WHEN 'finish' THEN worker_id = $5 ELSE lease_until < $35 END
      RETURNING started_at";

/// [`CLOSE`]'s `$1..$36`, in order, in sqlx's encodings (`inline.rs`):
/// bound by number on the inline connection.
pub(super) fn close_values(run_id: uuid::Uuid, close: Close<'_>, now: DateTime<Utc>) -> Vec<Value> {
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
        .then(|| serde_json::to_string(&result.warnings.iter().map(|w| strip_nul(w)).collect::<Vec<_>>()));
    let only_finished = |v: Option<i64>| opt(v.filter(|_| finished), int);
    let mut values = vec![
        uuid(run_id),
        text(if finished { "finish" } else { "abandon" }),
        int(key.step),
        int(key.attempt),
        opt(worker, uuid),
        text(state.as_str()),
        only_finished(Some(result.duration_ms)),
        opt(result.exit_code, int),
        opt(result.signal, int),
        opt(error, text),
        opt(finished.then(|| strip_nul(&result.stdout_tail)), text),
        opt(finished.then(|| strip_nul(&result.stderr_tail)), text),
        only_finished(Some(result.stdout_bytes)),
        only_finished(Some(result.stderr_bytes)),
    ];
    values.extend((15..=25).map(|_| Value::Null));
    values.extend([
        only_finished(result.wall_us),
        only_finished(result.peak_rss_kib),
        only_finished(result.user_cpu_us),
        only_finished(result.sys_cpu_us),
        opt(output.map(|o| strip_nul(&o.path)), text),
        opt(output.map(|o| o.bytes), int),
        opt(output.map(|o| o.mtime), time),
        opt(output.and_then(|o| o.sha256.clone()), text),
        opt(warnings.and_then(|w| w.ok()), text),
        time(now),
        opt(result.pid.filter(|_| finished), |p| int(p as i32)),
    ]);
    values
}

/// The read's `$1..$2`: the run, the step to queue.
pub(super) fn read_values(run_id: uuid::Uuid, step: Option<u32>) -> Vec<Value> {
    vec![uuid(run_id), opt(step, int)]
}

/// [`queue_sql`]'s `$1..$9`: execution `q` of run `run_id`, claimed for
/// `claim` (unless delayed), due after its delay.
pub(super) fn queue_values(
    run_id: uuid::Uuid,
    q: StepAttempt,
    claim: Option<ClaimFor<'_>>,
    now: DateTime<Utc>,
) -> Vec<Value> {
    let claim = claim.filter(|_| q.delay.is_none());
    let queues = serde_json::to_string(claim.map_or(&[][..], |c| c.queues)).unwrap_or_else(|_| "[]".into());
    vec![
        uuid(run_id),
        int(q.step),
        int(q.attempt),
        opt(claim.map(|c| c.worker_id), uuid),
        opt(claim.map(|c| after(now, c.lease)), time),
        int(q.retry),
        opt(q.delay.map(|d| after(now, d)), time),
        text(queues),
        time(now),
    ]
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

impl RunRow {
    /// The row of [`read_sql`] or [`move_sql`] from the inline connection.
    pub(super) fn inline(row: &rusqlite::Row<'_>) -> Result<RunRow, TrackerError> {
        Ok(RunRow {
            sequence: row.get("sequence")?,
            step_count: row.get("step_count")?,
            queue: row.get("queue")?,
            limited: row.get("limited")?,
            logical_date: row.get("logical_date")?,
            schedule: row.get("schedule")?,
            cwd: row.get("cwd")?,
            env: super::inline::json(row, "env")?,
            step_def: super::inline::json(row, "step_def")?,
        })
    }
}

pub(super) struct QueuedRow {
    pub(super) module: String,
    argv: Json<Vec<String>>,
    timeout_secs: Option<i64>,
    pub(super) retry: i32,
    queue: Option<String>,
    state: String,
}

impl QueuedRow {
    /// The row of [`queue_sql`] from the inline connection.
    pub(super) fn inline(row: &rusqlite::Row<'_>) -> Result<QueuedRow, TrackerError> {
        Ok(QueuedRow {
            module: row.get("module")?,
            argv: super::inline::json(row, "argv")?.unwrap_or_default(),
            timeout_secs: row.get("timeout_secs")?,
            retry: row.get("retry")?,
            queue: row.get("queue")?,
            state: row.get("state")?,
        })
    }
}
