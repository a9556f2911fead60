//! Recording a run and moving it between states. Every transition is one
//! statement: a compare-and-set on the run's state, plus, in the same
//! statement and therefore the same transaction, the execution it queues
//! (built from the run's snapshot) or the queued executions it cancels.

use crate::{Result, Tracker, TrackerError};
use scheduler_core::machine::RunView;
use scheduler_core::{RunState, Snapshot};
use sqlx::Row;
use uuid::Uuid;

/// A run about to be recorded, as `scheduler start` (or the UI) builds it.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: Uuid,
    pub queue: String,
    pub trigger: String,
    pub snapshot: Snapshot,
}

/// One compare-and-set transition, as decided by `scheduler_core::machine`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub run_id: Uuid,
    pub from: RunState,
    pub to: RunState,
    /// `(step, reason)` recorded when the run fails.
    pub failure: Option<(u32, String)>,
    /// `(step, attempt)` of an execution to insert as queued.
    pub queue: Option<(u32, u32)>,
    /// Insert that execution already claimed by this worker, with a lease
    /// (local delivery of the `exec_module` the decision asks for).
    pub claim_for: Option<(Uuid, std::time::Duration)>,
}

/// What a transition did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The run was in `from` and is now in `to`.
    pub applied: bool,
    /// The queued execution was inserted (false if it already existed).
    pub queued: bool,
    /// With `claim_for`: the inserted execution, claimed by that worker.
    pub claimed: Option<crate::Claimed>,
}

impl Tracker {
    /// Records a new run in `queued`. The caller publishes `start_etl` after.
    pub async fn create_run(&self, run: &NewRun) -> Result<()> {
        let snapshot = serde_json::to_value(&run.snapshot).map_err(|e| TrackerError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO runs (id, sequence, state, queue, trigger, snapshot, step_count)
             VALUES ($1, $2, 'queued', $3, $4, $5, $6)",
        )
        .bind(run.id)
        .bind(&run.snapshot.sequence)
        .bind(&run.queue)
        .bind(strip_nul(&run.trigger))
        .bind(snapshot)
        .bind(run.snapshot.steps.len() as i32)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Notes that the broker confirmed the run's `start_etl`.
    pub async fn mark_run_published(&self, run_id: Uuid) -> Result<()> {
        sqlx::query("UPDATE runs SET published_at = coalesce(published_at, now()) WHERE id = $1")
            .bind(run_id)
            .execute(&self.relaxed)
            .await?;
        Ok(())
    }

    pub async fn run_view(&self, run_id: Uuid) -> Result<Option<RunView>> {
        let row = sqlx::query("SELECT state, step_count FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(RunView {
                id: run_id,
                state: parse_state(row.get("state"))?,
                step_count: row.get::<i32, _>("step_count") as u32,
            })
        })
        .transpose()
    }

    /// The queue a run's messages go to.
    pub async fn run_queue(&self, run_id: Uuid) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT queue FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Whether the latest attempt of the run's last step succeeded.
    pub async fn last_step_succeeded(&self, run_id: Uuid) -> Result<bool> {
        let state: Option<String> = sqlx::query_scalar(
            "SELECT e.state FROM executions e JOIN runs r ON r.id = e.run_id
             WHERE e.run_id = $1 AND e.step = r.step_count - 1
             ORDER BY e.attempt DESC LIMIT 1",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(state.as_deref() == Some("succeeded"))
    }

    /// The failing step of a failed run and how many attempts it had.
    pub async fn failed_step_attempts(&self, run_id: Uuid) -> Result<Option<(u32, u32)>> {
        let row = sqlx::query(
            "SELECT r.failed_step, (SELECT coalesce(max(attempt), 0) FROM executions e
                                      WHERE e.run_id = r.id AND e.step = r.failed_step) AS attempts
             FROM runs r WHERE r.id = $1 AND r.failed_step IS NOT NULL",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| {
            (
                r.get::<i32, _>("failed_step") as u32,
                r.get::<i32, _>("attempts") as u32,
            )
        }))
    }

    /// Applies one transition atomically; `applied == false` means the run
    /// was no longer in `from` (someone else moved it first).
    pub async fn apply_transition(&self, t: &Transition) -> Result<Applied> {
        let (failed_step, reason) = match &t.failure {
            Some((step, reason)) => (Some(*step as i32), Some(strip_nul(reason))),
            None => (None, None),
        };
        let (queue_step, queue_attempt) = match t.queue {
            Some((s, a)) => (Some(s as i32), Some(a as i32)),
            None => (None, None),
        };
        let row = sqlx::query(
            "WITH r AS (
                UPDATE runs SET
                    state = $3,
                    updated_at = now(),
                    started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
                    finished_at = CASE WHEN $3 IN ('succeeded', 'failed', 'canceled') THEN now() ELSE NULL END,
                    failed_step = CASE WHEN $3 = 'failed' THEN $4 WHEN $3 = 'running' THEN NULL ELSE failed_step END,
                    error = CASE WHEN $3 = 'failed' THEN $5 WHEN $3 = 'running' THEN NULL ELSE error END
                WHERE id = $1 AND state = $2
                RETURNING id, snapshot, sequence, step_count
             ), q AS (
                INSERT INTO executions (run_id, step, attempt, module, argv, timeout_secs, state,
                                        worker_id, started_at, lease_until)
                SELECT r.id, $6, $7, s->>'module_name', ARRAY(SELECT jsonb_array_elements_text(s->'argv')),
                       (s->>'timeout_secs')::bigint,
                       CASE WHEN $8::uuid IS NULL THEN 'queued' ELSE 'running' END,
                       $8::uuid,
                       CASE WHEN $8::uuid IS NULL THEN NULL ELSE now() END,
                       CASE WHEN $8::uuid IS NULL THEN NULL ELSE now() + make_interval(secs => $9) END
                FROM r CROSS JOIN LATERAL (SELECT r.snapshot->'steps'->($6::int) AS s) x
                WHERE $6::int IS NOT NULL AND s IS NOT NULL
                ON CONFLICT DO NOTHING
                RETURNING step, module, argv, timeout_secs
             ), c AS (
                UPDATE executions SET state = 'canceled', finished_at = now()
                WHERE run_id = $1 AND state = 'queued' AND $3 = 'canceled' AND EXISTS (SELECT 1 FROM r)
                RETURNING step
             )
             SELECT (SELECT count(*) FROM r) AS applied, q.module, q.argv, q.timeout_secs, r.sequence, r.step_count
               FROM (SELECT 1) AS one LEFT JOIN q ON true LEFT JOIN r ON true",
        )
        .bind(t.run_id)
        .bind(t.from.as_str())
        .bind(t.to.as_str())
        .bind(failed_step)
        .bind(reason)
        .bind(queue_step)
        .bind(queue_attempt)
        .bind(t.claim_for.map(|(w, _)| w))
        .bind(t.claim_for.map(|(_, lease)| lease.as_secs_f64()).unwrap_or(0.0))
        .fetch_one(&self.pool)
        .await?;
        let inserted = crate::Claimed::from_inserted(&row);
        let queued = inserted.is_some();
        let claimed = inserted.filter(|_| t.claim_for.is_some());
        Ok(Applied {
            applied: row.get::<i64, _>("applied") > 0,
            queued,
            claimed,
        })
    }
}

pub(crate) fn parse_state<T: std::str::FromStr<Err = String>>(s: String) -> Result<T> {
    s.parse().map_err(TrackerError::Corrupt)
}

/// PostgreSQL `text` cannot hold NUL bytes; module output can.
pub(crate) fn strip_nul(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_string()
    }
}
