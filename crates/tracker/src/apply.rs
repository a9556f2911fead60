//! Applying a decision of the state machine: one statement writes all of
//! it. Every path that changes a run goes through [`crate::Store::apply`]: the
//! worker finishing a step, `start_etl`, `end_etl`, `error_handler`,
//! recovery closing an expired step or re-deciding a stuck run, and the
//! operator's retry and cancel. Its parts, each optional, in order:
//!
//! 1. **close** an execution: the worker's result (guarded by its worker
//!    id: a worker that lost its lease cannot overwrite the attempt that
//!    replaced it), or recovery's `abandoned` (guarded by the lease still
//!    being expired). Nothing else applies unless this one did.
//! 2. **move** the run `from -> to` (compare-and-set), with the failing step
//!    and reason; or, without a move, check that the run is `running`.
//! 3. **queue** the next execution from the run's snapshot (the one copy of
//!    that insert), optionally already claimed by a worker with a lease
//!    (local delivery); `ON CONFLICT DO NOTHING`, so a duplicate is a no-op.
//! 4. a move to `canceled` cancels the run's queued executions.
//! 5. the events the change causes, for alerts (a failed run, a sequence
//!    green again, a step waiting to retry, a run's healthcheck pings), in
//!    shapes of their own so the hot path records none (`events.rs`).
//!
//! The answer says which parts applied and the run's queue, so the caller
//! publishes the plan's message only when everything it follows is written.

use crate::executions::{Claimed, ExecKey, ExecResult};
use crate::runs::strip_nul;
use crate::{Result, Tracker};
use scheduler_core::machine::Plan;
use scheduler_core::{ExecState, RunState};
use std::time::Duration;
use uuid::Uuid;

/// One decision to write, with what it follows from.
#[derive(Debug, Clone, Copy)]
pub struct Write<'a> {
    pub run_id: Uuid,
    /// Close this execution first; the rest applies only if it did.
    pub close: Option<Close<'a>>,
    pub plan: &'a Plan,
    /// Insert the plan's queued execution already claimed by this worker
    /// (local continuation: no broker round trip), if it serves the step's
    /// queue and the step is due now.
    pub claim_for: Option<ClaimFor<'a>>,
}

/// The worker that would continue a run locally.
#[derive(Debug, Clone, Copy)]
pub struct ClaimFor<'a> {
    pub worker_id: Uuid,
    /// The lease the claimed execution starts with.
    pub lease: Duration,
    /// The queues the worker serves: a step on another queue is not claimed
    /// but published there.
    pub queues: &'a [String],
}

#[derive(Debug, Clone, Copy)]
pub enum Close<'a> {
    /// The worker holding `key` records how it ended.
    Finish {
        key: ExecKey,
        worker_id: Uuid,
        result: &'a ExecResult,
    },
    /// Recovery takes over `key`, whose lease expired.
    Abandon { key: ExecKey, reason: &'a str },
}

/// What a [`Write`] did.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// The execution was closed (true when there was none to close).
    pub closed: bool,
    /// The run moved as planned or, without a move, is `running`.
    pub run: bool,
    /// The queued execution was inserted (false if none was planned, or it
    /// existed already).
    pub queued: bool,
    /// With `claim_for`: the inserted execution, claimed.
    pub claimed: Option<Claimed>,
    /// The run's queue, where its run-level messages go (`None` when `run`
    /// is false).
    pub queue: Option<String>,
    /// The queued execution's queue, where its `exec_module` goes.
    pub exec_queue: Option<String>,
    /// The run's sequence (`None` when `run` is false).
    pub sequence: Option<String>,
    /// The run's sequence has a concurrency limit: a run that ends frees a
    /// slot for a waiting one.
    pub limited: bool,
}

impl Written {
    /// Where the plan's message goes: an `exec_module` to its step's queue,
    /// the rest to the run's.
    pub fn queue_for(&self, message: &scheduler_core::Message) -> Option<&str> {
        match message {
            scheduler_core::Message::ExecModule { .. } => self.exec_queue.as_deref(),
            _ => self.queue.as_deref(),
        }
    }
}

impl Written {
    /// Whether every write the plan asked for applied, so its message may be
    /// published.
    pub fn complete(&self, plan: &Plan) -> bool {
        self.not_applied(plan).is_none()
    }

    /// Why the plan did not (fully) apply, or `None` if it did.
    pub fn not_applied(&self, plan: &Plan) -> Option<String> {
        if !self.closed {
            return Some("the execution was no longer this writer's to close".into());
        }
        if !self.run {
            return Some(match plan.run {
                Some(m) => format!("run left {} before this {} -> {} applied", m.from, m.from, m.to),
                None => "run is no longer running".into(),
            });
        }
        if plan.queue.is_some() && !self.queued {
            return Some("the execution to queue already existed".into());
        }
        None
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    closed: i64,
    run: i64,
    module: Option<String>,
    argv: Option<Vec<String>>,
    timeout_secs: Option<i64>,
    retry: Option<i32>,
    sequence: Option<String>,
    step_count: Option<i32>,
    queue: Option<String>,
    exec_queue: Option<String>,
    exec_state: Option<String>,
    limited: Option<bool>,
    logical_date: Option<String>,
    schedule: Option<String>,
    cwd: Option<String>,
    env: Option<crate::executions::ModuleEnv>,
    step_def: Option<crate::executions::StepDef>,
}

// The statement, assembled from one copy of each fragment into the shape a
// write needs, so that PostgreSQL plans and runs only the parts it uses (the
// hot path, a worker recording a step and claiming the next, is
// close + read the run + queue). Every shape takes the same 35 parameters
// (sqlx declares their types, so a shape may leave some unused):
// $1 run; $2 close kind ('finish' | 'abandon'), $3 step, $4 attempt,
// $5 the finishing worker, $6..$14 the result; $15 from, $16 to, $17 failed
// step, $18 reason; $19 step and $20 attempt to queue; $21 the claiming
// worker, $22 its lease in seconds; $23 the queued execution's retry number,
// $24 its delay in seconds (a retry: due then, published by recovery);
// $25 the queues the claiming worker serves; $26..$29 the accounting (wall
// time, peak RSS, user and system CPU), $30..$33 the output's path, size,
// mtime and checksum, $34 the warnings, $35 the module's pid.
//
// Every row is found by its primary key, and by nothing else an index could
// serve: the state a compare-and-set expects is written `state IS NOT
// DISTINCT FROM ...` (the same test, `state` being NOT NULL), which no index
// takes as a condition and no partial index's predicate follows from. The
// hot path's connections plan each shape once (a generic plan, `hot.rs`),
// often on nearly empty tables (a new database, the bench's emptied one),
// where every index costs about the same; planned then with `state = ...`,
// the close scanned the whole partial index `executions_by_worker` and the
// run's read the `'running'` range of `runs_by_state`, dead entries
// included, at every step, until the plan was made again: 17 % of
// PostgreSQL's CPU per step in a 5000-run bench, growing with the runs.

/// Close a running execution: the holder's result, or recovery's
/// `abandoned` once its lease expired.
const CLOSE: &str = "closed AS (
    UPDATE executions
       SET state = $6, finished_at = now(), lease_until = NULL,
           duration_ms = coalesce($7, (extract(epoch FROM (now() - started_at)) * 1000)::bigint),
           exit_code = $8, signal = $9, error = $10, stdout_tail = $11, stderr_tail = $12,
           stdout_bytes = $13, stderr_bytes = $14,
           wall_us = $26, peak_rss_kib = $27, user_cpu_us = $28, sys_cpu_us = $29,
           output_path = $30, output_bytes = $31, output_mtime = $32, output_sha256 = $33,
           warnings = $34, pid = coalesce($35, pid),
           given_back = ($2::text = 'finish' AND $6 = 'abandoned')
     WHERE run_id = $1 AND step = $3 AND attempt = $4 AND state IS NOT DISTINCT FROM 'running'
       AND CASE $2::text WHEN 'finish' THEN worker_id = $5 ELSE lease_until < now() END
 RETURNING run_id
)";

/// The run, read and not written, if it is running (and, after a close,
/// only if the close applied): updating the run on every step would rewrite
/// its row and every index on it. A cancel that commits meanwhile is
/// noticed at the next heartbeat.
const READ_RUN: &str = "r AS (
    SELECT id, snapshot, sequence, step_count, queue FROM runs
     WHERE id = $1 AND state IS NOT DISTINCT FROM 'running' {gate}
)";

/// Move the run `$15 -> $16` (compare-and-set).
const MOVE_RUN: &str = "moved AS (
    UPDATE runs SET
        state = $16,
        updated_at = now(),
        started_at = CASE WHEN $16 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
        finished_at = CASE WHEN $16 IN ('succeeded', 'failed', 'canceled', 'skipped') THEN now() ELSE NULL END,
        failed_step = CASE WHEN $16 = 'failed' THEN $17 WHEN $16 = 'running' THEN NULL ELSE failed_step END,
        error = CASE WHEN $16 = 'failed' THEN $18 WHEN $16 = 'running' THEN NULL ELSE error END,
        note = CASE WHEN $15 = 'waiting' THEN NULL ELSE note END
     WHERE id = $1 AND state IS NOT DISTINCT FROM $15 {gate}
 RETURNING id, snapshot, sequence, step_count, queue
), r AS (
    SELECT id, snapshot, sequence, step_count, queue FROM moved
)";

/// The one insert of an execution: step `$19`, attempt `$20`, from the
/// run's snapshot, on the step's queue (the run's for older snapshots);
/// claimed by `$21` with a lease of `$22` s when it serves that queue
/// (`$25`) and the step is due now; a retry (`$23`) due after `$24` s.
const QUEUE: &str = "q AS (
    INSERT INTO executions (run_id, step, attempt, module, argv, timeout_secs, state,
                            worker_id, started_at, lease_until, retry, due_at, queue)
    SELECT r.id, $19, $20, s->>'module_name', ARRAY(SELECT jsonb_array_elements_text(s->'argv')),
           (s->>'timeout_secs')::bigint,
           CASE WHEN claim THEN 'running' ELSE 'queued' END,
           CASE WHEN claim THEN $21::uuid END,
           CASE WHEN claim THEN now() END,
           CASE WHEN claim THEN now() + make_interval(secs => $22) END,
           coalesce($23::int, 0),
           CASE WHEN $24::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $24) END,
           step_queue
      FROM r CROSS JOIN LATERAL (SELECT r.snapshot->'steps'->($19::int) AS s) x
             CROSS JOIN LATERAL (SELECT coalesce(x.s->>'queue', r.queue) AS step_queue) y
             CROSS JOIN LATERAL (SELECT $21::uuid IS NOT NULL AND $24::float8 IS NULL
                                        AND y.step_queue = ANY($25::text[]) AS claim) z
     WHERE $19::int IS NOT NULL AND s IS NOT NULL
    ON CONFLICT DO NOTHING
 RETURNING module, argv, timeout_secs, retry, queue, state
)";

/// A run moved to `canceled` takes its queued executions with it.
const CANCEL_QUEUED: &str = "c AS (
    UPDATE executions SET state = 'canceled', finished_at = now()
     WHERE run_id = $1 AND state IS NOT DISTINCT FROM 'queued' AND $16::text = 'canceled' AND EXISTS (SELECT 1 FROM moved)
 RETURNING step
)";

/// Events of a run move, recorded with it: a run that failed, a sequence
/// green again after failing (`failing_sequences` holds the streak; the
/// success deletes its row), and the healthcheck pings of a run whose
/// snapshot names a `healthcheck_url` (start, success, fail). Only in the
/// shapes that move a run to `running` from `queued`, or to `succeeded` or
/// `failed`; never in the hot path (`Close`).
const MOVE_EVENTS: &str = "failing AS (
    INSERT INTO failing_sequences AS fs (sequence, since, failures, last_run)
    SELECT m.sequence, now(), 1, m.id FROM moved m WHERE $16::text = 'failed'
    ON CONFLICT (sequence) DO UPDATE SET failures = fs.failures + 1, last_run = excluded.last_run
), green AS (
    DELETE FROM failing_sequences fs USING moved m
     WHERE $16::text = 'succeeded' AND fs.sequence = m.sequence
 RETURNING fs.since, fs.failures
), run_events AS (
    INSERT INTO events (kind, sequence, run_id, step, message, detail)
    SELECT 'run_failed', m.sequence, m.id, $17::int, $18::text,
           jsonb_strip_nulls(jsonb_build_object('module', m.snapshot->'steps'->($17::int)->>'module_name',
                                                'schedule', m.snapshot->>'schedule'))
      FROM moved m WHERE $16::text = 'failed'
    UNION ALL
    SELECT 'run_recovered', m.sequence, m.id, NULL, NULL,
           jsonb_build_object('failing_since', g.since, 'failures', g.failures)
      FROM moved m CROSS JOIN green g
    UNION ALL
    SELECT CASE $16::text WHEN 'running' THEN 'healthcheck_start' WHEN 'succeeded' THEN 'healthcheck_success'
                          ELSE 'healthcheck_fail' END,
           m.sequence, m.id, NULL, CASE WHEN $16::text = 'failed' THEN $18::text END,
           jsonb_build_object('url', m.snapshot->>'healthcheck_url')
      FROM moved m
     WHERE m.snapshot ? 'healthcheck_url'
       AND (($15::text = 'queued' AND $16::text = 'running') OR $16::text IN ('succeeded', 'failed'))
)";

/// A failed step whose next attempt waits for its retry delay: recorded
/// with the failure and the queued retry (shape `CloseRetry`, never the
/// hot path's `Close`).
const RETRY_EVENT: &str = "retry_event AS (
    INSERT INTO events (kind, sequence, run_id, step, attempt, message, detail)
    SELECT 'step_retrying', r.sequence, r.id, $3::int, $4::int, $10::text,
           jsonb_strip_nulls(jsonb_build_object(
               'module', q.module, 'retry', q.retry, 'next_attempt', $20::int,
               'retries', (r.snapshot->'steps'->($19::int)->'retry'->>'retries')::int,
               'due_at', now() + make_interval(secs => $24::float8), 'exit_code', $8::int))
      FROM q CROSS JOIN r
)";

const ANSWER: &str = "SELECT {closed} AS closed, (SELECT count(*) FROM r) AS run,
       q.module, q.argv, q.timeout_secs, q.retry, r.sequence, r.step_count, r.queue,
       q.queue AS exec_queue, q.state AS exec_state, r.snapshot->'concurrency' ? 'max_concurrent' AS limited,
       r.snapshot->>'logical_date' AS logical_date, r.snapshot->>'schedule' AS schedule,
       r.snapshot->'steps'->($19::int)->>'cwd' AS cwd, r.snapshot->'steps'->($19::int)->'env' AS env,
       r.snapshot->'steps'->($19::int) AS step_def
  FROM (SELECT 1) AS one LEFT JOIN q ON true LEFT JOIN r ON true";

/// Which parts a write has.
#[derive(Clone, Copy)]
enum Shape {
    /// Queue (or nothing) on a running run: recovery's re-decisions.
    Running,
    /// Close an execution, then queue on its still running run.
    Close,
    /// `Close` of a failed attempt whose retry is queued with a delay:
    /// records `step_retrying` too.
    CloseRetry,
    /// Move the run (and queue, or cancel its queue).
    Move,
    /// `Move` to `failed`, to `succeeded`, or from `queued` to `running`:
    /// records the run's events too ([`MOVE_EVENTS`]).
    MoveEvents,
    /// Close, then move: the worker that records a run's last step (or its
    /// failed one) ends the run in the same write; records the run's
    /// events ([`MOVE_EVENTS`]).
    CloseMove,
}

fn assemble(shape: Shape) -> String {
    const AFTER_CLOSE: &str = "AND EXISTS (SELECT 1 FROM closed)";
    let (parts, closed): (Vec<String>, &str) = match shape {
        Shape::Running => (vec![READ_RUN.replace("{gate}", "")], "1::bigint"),
        Shape::Close => (
            vec![CLOSE.into(), READ_RUN.replace("{gate}", AFTER_CLOSE)],
            "(SELECT count(*) FROM closed)",
        ),
        Shape::CloseRetry => (
            vec![CLOSE.into(), READ_RUN.replace("{gate}", AFTER_CLOSE)],
            "(SELECT count(*) FROM closed)",
        ),
        Shape::Move | Shape::MoveEvents => (vec![MOVE_RUN.replace("{gate}", ""), CANCEL_QUEUED.into()], "1::bigint"),
        Shape::CloseMove => (
            vec![
                CLOSE.into(),
                MOVE_RUN.replace("{gate}", AFTER_CLOSE),
                CANCEL_QUEUED.into(),
            ],
            "(SELECT count(*) FROM closed)",
        ),
    };
    let mut ctes = parts;
    ctes.push(QUEUE.into());
    match shape {
        Shape::CloseRetry => ctes.push(RETRY_EVENT.into()),
        Shape::MoveEvents | Shape::CloseMove => ctes.push(MOVE_EVENTS.into()),
        Shape::Running | Shape::Close | Shape::Move => {}
    }
    format!("WITH {}\n{}", ctes.join(",\n"), ANSWER.replace("{closed}", closed))
}

fn statement(shape: Shape) -> &'static str {
    static SHAPES: std::sync::LazyLock<[String; 6]> = std::sync::LazyLock::new(|| {
        [
            assemble(Shape::Running),
            assemble(Shape::Close),
            assemble(Shape::CloseRetry),
            assemble(Shape::Move),
            assemble(Shape::MoveEvents),
            assemble(Shape::CloseMove),
        ]
    });
    &SHAPES[shape as usize]
}

/// On one of the hot path's own connections (`hot.rs`): planned once per
/// connection, not pinged after.
pub(crate) async fn apply_write(t: &Tracker, w: &Write<'_>) -> Result<Written> {
    let mut lent = t.hot.take().await?;
    let written = apply_on(lent.conn(), w).await;
    match written {
        Ok(_) => lent.give_back(),
        Err(_) => {
            drop(lent);
            t.hot.forget_idle();
        }
    }
    written
}

/// [`apply_write`] on a given connection (inside a caller's transaction).
pub(crate) async fn apply_on<'e>(executor: impl sqlx::PgExecutor<'e>, w: &Write<'_>) -> Result<Written> {
    let none = ExecResult::new(ExecState::Abandoned);
    let (kind, key, worker, state, result) = match w.close {
        None => (None, None, None, None, &none),
        Some(Close::Finish { key, worker_id, result }) => {
            (Some("finish"), Some(key), Some(worker_id), Some(result.state), result)
        }
        Some(Close::Abandon { key, .. }) => (Some("abandon"), Some(key), None, Some(ExecState::Abandoned), &none),
    };
    let error = match w.close {
        Some(Close::Abandon { reason, .. }) => Some(strip_nul(reason)),
        _ => result.error.as_deref().map(strip_nul),
    };
    let finished = matches!(w.close, Some(Close::Finish { .. }));
    let plan = w.plan;
    let delayed = plan.queue.and_then(|q| q.delay);
    // Only the writes that cause an event take the shapes that record one.
    let retrying = matches!(w.close, Some(Close::Finish { .. })) && delayed.is_some();
    let eventful = plan.run.is_some_and(|m| {
        matches!(m.to, RunState::Failed | RunState::Succeeded)
            || (m.from, m.to) == (RunState::Queued, RunState::Running)
    });
    let shape = match (w.close.is_some(), plan.run.is_some()) {
        (false, false) => Shape::Running,
        (true, false) if retrying => Shape::CloseRetry,
        (true, false) => Shape::Close,
        (false, true) if eventful => Shape::MoveEvents,
        (false, true) => Shape::Move,
        (true, true) => Shape::CloseMove,
    };
    let row: Row = sqlx::query_as(statement(shape))
        .bind(w.run_id)
        .bind(kind)
        .bind(key.map(|k| k.step as i32))
        .bind(key.map(|k| k.attempt as i32))
        .bind(worker)
        .bind(state.map(ExecState::as_str))
        .bind(finished.then_some(result.duration_ms))
        .bind(result.exit_code)
        .bind(result.signal)
        .bind(error)
        .bind(finished.then(|| strip_nul(&result.stdout_tail)))
        .bind(finished.then(|| strip_nul(&result.stderr_tail)))
        .bind(finished.then_some(result.stdout_bytes))
        .bind(finished.then_some(result.stderr_bytes))
        .bind(plan.run.map(|m| m.from.as_str()))
        .bind(plan.run.map(|m| m.to.as_str()))
        .bind(plan.failure.as_ref().map(|f| f.step as i32))
        .bind(plan.failure.as_ref().map(|f| strip_nul(&f.reason)))
        .bind(plan.queue.map(|q| q.step as i32))
        .bind(plan.queue.map(|q| q.attempt as i32))
        // A delayed execution is never claimed at once (the statement checks).
        .bind(w.claim_for.map(|c| c.worker_id))
        .bind(w.claim_for.map_or(0.0, |c| c.lease.as_secs_f64()))
        .bind(plan.queue.map(|q| q.retry as i32))
        .bind(delayed.map(|d| d.as_secs_f64()))
        .bind(w.claim_for.map_or(&[][..], |c| c.queues))
        .bind(finished.then_some(result.wall_us).flatten())
        .bind(finished.then_some(result.peak_rss_kib).flatten())
        .bind(finished.then_some(result.user_cpu_us).flatten())
        .bind(finished.then_some(result.sys_cpu_us).flatten())
        .bind(result.output.as_ref().filter(|_| finished).map(|o| strip_nul(&o.path)))
        .bind(result.output.as_ref().filter(|_| finished).map(|o| o.bytes))
        .bind(result.output.as_ref().filter(|_| finished).map(|o| o.mtime))
        .bind(
            result
                .output
                .as_ref()
                .filter(|_| finished)
                .and_then(|o| o.sha256.clone()),
        )
        .bind(
            (finished && !result.warnings.is_empty())
                .then(|| result.warnings.iter().map(|w| strip_nul(w)).collect::<Vec<_>>()),
        )
        .bind(finished.then_some(result.pid).flatten().map(|p| p as i32))
        .fetch_one(executor)
        .await?;
    let inserted = match (row.module, row.argv, row.sequence.clone(), row.step_count) {
        (Some(module), Some(argv), Some(sequence), Some(step_count)) => Some(Claimed {
            module,
            argv,
            timeout_secs: row.timeout_secs.map(|t| t as u64),
            sequence,
            step_count: step_count as u32,
            retry: row.retry.unwrap_or(0).max(0) as u32,
            logical_date: row.logical_date.clone(),
            schedule: row.schedule.clone(),
            cwd: row.cwd.clone(),
            env: crate::executions::env_pairs(row.env.clone()),
            watch: row.step_def.clone().map(|d| d.0).unwrap_or_default(),
        }),
        _ => None,
    };
    let claimed = row.exec_state.as_deref() == Some("running");
    Ok(Written {
        closed: kind.is_none() || row.closed > 0,
        run: row.run > 0,
        queued: inserted.is_some(),
        claimed: inserted.filter(|_| claimed),
        queue: row.queue,
        exec_queue: row.exec_queue,
        sequence: row.sequence,
        limited: row.limited.unwrap_or(false),
    })
}
