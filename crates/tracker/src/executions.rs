//! One execution = one attempt of one step. A worker claims it with a
//! compare-and-set `queued -> running` that also sets its lease, records the
//! module's pid, and finishes it with a compare-and-set `running -> <result>`
//! guarded by its own worker id, so a worker whose lease was taken away can
//! never overwrite the result of the attempt that replaced it.

use crate::runs::{parse_state, strip_nul};
use crate::{Result, Tracker};
use scheduler_core::{ExecState, RunState};
use sqlx::Row;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExecKey {
    pub run_id: Uuid,
    pub step: u32,
    pub attempt: u32,
}

impl std::fmt::Display for ExecKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run {} step {} attempt {}", self.run_id, self.step, self.attempt)
    }
}

/// What a worker needs to run a claimed execution.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub module: String,
    pub argv: Vec<String>,
    pub timeout_secs: Option<u64>,
    pub sequence: String,
    pub step_count: u32,
}

impl Claimed {
    /// Reads the execution a statement inserted (columns `module`, `argv`,
    /// `timeout_secs`, `sequence`, `step_count`; `module` NULL when nothing
    /// was inserted).
    pub(crate) fn from_inserted(row: &sqlx::postgres::PgRow) -> Option<Claimed> {
        let module: String = row.get::<Option<String>, _>("module")?;
        Some(Claimed {
            module,
            argv: row.get("argv"),
            timeout_secs: row.get::<Option<i64>, _>("timeout_secs").map(|t| t as u64),
            sequence: row.get("sequence"),
            step_count: row.get::<i32, _>("step_count") as u32,
        })
    }
}

/// The recorded result of an execution.
#[derive(Debug, Clone, Default)]
pub struct ExecResult {
    pub state: Option<ExecState>,
    pub duration_ms: i64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: Option<String>,
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub stdout_bytes: i64,
    pub stderr_bytes: i64,
}

#[derive(Debug, Clone)]
pub struct Finished {
    /// The result was written (this worker still held the execution).
    pub recorded: bool,
    /// The next execution was inserted (the run was still running).
    pub queued: bool,
    /// With `chain`: the next execution, already claimed by this worker.
    pub chained: Option<Claimed>,
}

impl Tracker {
    /// Claims a queued execution of a running run. `None` means it was not
    /// claimable; [`Tracker::exec_states`] tells why.
    pub async fn claim(&self, key: ExecKey, worker_id: Uuid, lease: Duration) -> Result<Option<Claimed>> {
        let row = sqlx::query(
            "UPDATE executions e
                SET state = 'running', worker_id = $4, started_at = now(),
                    lease_until = now() + make_interval(secs => $5)
               FROM runs r
              WHERE e.run_id = $1 AND e.step = $2 AND e.attempt = $3 AND e.state = 'queued'
                AND r.id = e.run_id AND r.state = 'running'
          RETURNING e.module, e.argv, e.timeout_secs, r.sequence, r.step_count",
        )
        .bind(key.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .bind(worker_id)
        .bind(lease.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| Claimed {
            module: row.get("module"),
            argv: row.get("argv"),
            timeout_secs: row.get::<Option<i64>, _>("timeout_secs").map(|t| t as u64),
            sequence: row.get("sequence"),
            step_count: row.get::<i32, _>("step_count") as u32,
        }))
    }

    /// The run's state and the execution's state (if it exists).
    pub async fn exec_states(&self, key: ExecKey) -> Result<Option<(RunState, Option<ExecState>)>> {
        let row = sqlx::query(
            "SELECT r.state AS run_state, e.state AS exec_state
               FROM runs r LEFT JOIN executions e ON e.run_id = r.id AND e.step = $2 AND e.attempt = $3
              WHERE r.id = $1",
        )
        .bind(key.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let exec = row
                .get::<Option<String>, _>("exec_state")
                .map(parse_state)
                .transpose()?;
            Ok((parse_state(row.get("run_state"))?, exec))
        })
        .transpose()
    }

    /// Marks a queued execution of a run that ended as canceled.
    pub async fn cancel_queued(&self, key: ExecKey) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE executions SET state = 'canceled', finished_at = now()
              WHERE run_id = $1 AND step = $2 AND attempt = $3 AND state = 'queued'",
        )
        .bind(key.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the module's pid (also its process group id).
    pub async fn record_pid(&self, key: ExecKey, worker_id: Uuid, pid: u32) -> Result<()> {
        sqlx::query(
            "UPDATE executions SET pid = $5
              WHERE run_id = $1 AND step = $2 AND attempt = $3 AND worker_id = $4 AND state = 'running'",
        )
        .bind(key.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .bind(worker_id)
        .bind(pid as i32)
        .execute(&self.relaxed)
        .await?;
        Ok(())
    }

    /// Notes that the broker confirmed this execution's `exec_module`.
    pub async fn mark_exec_published(&self, key: ExecKey) -> Result<()> {
        sqlx::query(
            "UPDATE executions SET published_at = coalesce(published_at, now())
              WHERE run_id = $1 AND step = $2 AND attempt = $3",
        )
        .bind(key.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .execute(&self.relaxed)
        .await?;
        Ok(())
    }

    /// Records the result of an execution this worker holds and, in the same
    /// statement, queues `next` if the run is still running. With `chain`
    /// (a lease), the next execution is inserted already claimed by this
    /// worker, so the worker can run it at once without a broker round trip;
    /// [`Finished::chained`] then says what to run.
    pub async fn finish(
        &self,
        key: ExecKey,
        worker_id: Uuid,
        result: &ExecResult,
        next: Option<(u32, u32)>,
        chain: Option<Duration>,
    ) -> Result<Finished> {
        let state = result.state.unwrap_or(ExecState::Failed);
        let (next_step, next_attempt) = match next {
            Some((s, a)) => (Some(s as i32), Some(a as i32)),
            None => (None, None),
        };
        let row = sqlx::query(
            "WITH done AS (
                UPDATE executions SET state = $5, finished_at = now(), duration_ms = $6, exit_code = $7,
                       signal = $8, error = $9, stdout_tail = $10, stderr_tail = $11,
                       stdout_bytes = $12, stderr_bytes = $13, lease_until = NULL
                 WHERE run_id = $1 AND step = $2 AND attempt = $3 AND state = 'running' AND worker_id = $4
             RETURNING run_id
             ), r AS (
                -- Read, not written: updating the run on every step would
                -- rewrite its row and every index on it. A cancel that
                -- commits meanwhile is noticed at the next heartbeat.
                SELECT id, snapshot, sequence, step_count FROM runs
                 WHERE id IN (SELECT run_id FROM done) AND state = 'running' AND $14::int IS NOT NULL
             ), q AS (
                INSERT INTO executions (run_id, step, attempt, module, argv, timeout_secs, state,
                                        worker_id, started_at, lease_until)
                SELECT r.id, $14, $15, s->>'module_name', ARRAY(SELECT jsonb_array_elements_text(s->'argv')),
                       (s->>'timeout_secs')::bigint,
                       CASE WHEN $16::float8 IS NULL THEN 'queued' ELSE 'running' END,
                       CASE WHEN $16::float8 IS NULL THEN NULL ELSE $4 END,
                       CASE WHEN $16::float8 IS NULL THEN NULL ELSE now() END,
                       CASE WHEN $16::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $16) END
                  FROM r CROSS JOIN LATERAL (SELECT r.snapshot->'steps'->($14::int) AS s) x
                 WHERE s IS NOT NULL
                ON CONFLICT DO NOTHING
             RETURNING module, argv, timeout_secs
             )
             SELECT (SELECT count(*) FROM done) AS recorded,
                    q.module, q.argv, q.timeout_secs, r.sequence, r.step_count
               FROM (SELECT 1) AS one LEFT JOIN q ON true LEFT JOIN r ON true",
        )
        .bind(key.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .bind(worker_id)
        .bind(state.as_str())
        .bind(result.duration_ms)
        .bind(result.exit_code)
        .bind(result.signal)
        .bind(result.error.as_deref().map(strip_nul))
        .bind(strip_nul(&result.stdout_tail))
        .bind(strip_nul(&result.stderr_tail))
        .bind(result.stdout_bytes)
        .bind(result.stderr_bytes)
        .bind(next_step)
        .bind(next_attempt)
        .bind(chain.map(|d| d.as_secs_f64()))
        .fetch_one(&self.pool)
        .await?;
        let inserted = Claimed::from_inserted(&row);
        let queued = inserted.is_some();
        let chained = inserted.filter(|_| chain.is_some());
        Ok(Finished {
            recorded: row.get::<i64, _>("recorded") > 0,
            queued,
            chained,
        })
    }
}
