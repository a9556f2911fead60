//! What recovery (the reaper) reads and writes: work committed but never
//! published, executions whose lease expired, runs left with nothing in
//! flight. Every write is compare-and-set, so two reapers racing (which the
//! reaper lease already prevents) could only publish a duplicate, which the
//! handlers drop.

use crate::executions::ExecKey;
use crate::runs::parse_state;
use crate::{Result, Tracker};
use scheduler_core::machine::{LastExec, RunView};
use sqlx::Row;
use std::time::Duration;
use uuid::Uuid;

/// An execution whose worker stopped renewing its lease.
#[derive(Debug, Clone)]
pub struct Expired {
    pub key: ExecKey,
    pub run: RunView,
    pub queue: String,
    pub pid: Option<u32>,
    pub worker_id: Option<Uuid>,
    pub worker_host: Option<String>,
}

/// A running run with nothing queued or running.
#[derive(Debug, Clone)]
pub struct Stuck {
    pub run: RunView,
    pub queue: String,
    pub last: Option<LastExec>,
}

fn key_of(row: &sqlx::postgres::PgRow) -> ExecKey {
    ExecKey {
        run_id: row.get("run_id"),
        step: row.get::<i32, _>("step") as u32,
        attempt: row.get::<i32, _>("attempt") as u32,
    }
}

impl Tracker {
    /// Takes or extends the single reaper lease; false if another worker
    /// holds it.
    pub async fn take_reaper_lease(&self, worker_id: Uuid, ttl: Duration) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE reaper_lease SET holder = $1, until = now() + make_interval(secs => $2)
              WHERE id = 1 AND (holder = $1 OR until < now())",
        )
        .bind(worker_id)
        .bind(ttl.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Runs recorded as queued whose `start_etl` was never confirmed.
    pub async fn unpublished_runs(&self, older_than: Duration, limit: i64) -> Result<Vec<(Uuid, String)>> {
        let rows = sqlx::query(
            "SELECT id, queue FROM runs
              WHERE state = 'queued' AND published_at IS NULL
                AND created_at < now() - make_interval(secs => $1)
              ORDER BY created_at LIMIT $2",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get("id"), r.get("queue"))).collect())
    }

    /// Queued executions of running runs whose `exec_module` was never
    /// confirmed.
    pub async fn unpublished_executions(&self, older_than: Duration, limit: i64) -> Result<Vec<(ExecKey, String)>> {
        let rows = sqlx::query(
            "SELECT e.run_id, e.step, e.attempt, r.queue FROM executions e JOIN runs r ON r.id = e.run_id
              WHERE e.state = 'queued' AND e.published_at IS NULL AND r.state = 'running'
                AND e.queued_at < now() - make_interval(secs => $1)
              ORDER BY e.queued_at LIMIT $2",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (key_of(r), r.get("queue"))).collect())
    }

    /// Running executions whose lease expired.
    pub async fn expired_executions(&self, limit: i64) -> Result<Vec<Expired>> {
        let rows = sqlx::query(
            "SELECT e.run_id, e.step, e.attempt, e.pid, e.worker_id, w.host, r.state AS run_state, r.step_count, r.queue
               FROM executions e JOIN runs r ON r.id = e.run_id LEFT JOIN workers w ON w.id = e.worker_id
              WHERE e.state = 'running' AND e.lease_until < now()
              ORDER BY e.lease_until LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let key = key_of(r);
                Ok(Expired {
                    key,
                    run: RunView {
                        id: key.run_id,
                        state: parse_state(r.get("run_state"))?,
                        step_count: r.get::<i32, _>("step_count") as u32,
                    },
                    queue: r.get("queue"),
                    pid: r.get::<Option<i32>, _>("pid").map(|p| p as u32),
                    worker_id: r.get("worker_id"),
                    worker_host: r.get("host"),
                })
            })
            .collect()
    }

    /// Closes an expired execution as `abandoned` (only if its lease is still
    /// expired) and, in the same statement, queues `next` if the run is still
    /// running. Returns (abandoned, queued).
    pub async fn abandon_expired(&self, key: ExecKey, reason: &str, next: Option<(u32, u32)>) -> Result<(bool, bool)> {
        let (next_step, next_attempt) = match next {
            Some((s, a)) => (Some(s as i32), Some(a as i32)),
            None => (None, None),
        };
        let row = sqlx::query(
            "WITH done AS (
                UPDATE executions SET state = 'abandoned', finished_at = now(), error = $4, lease_until = NULL,
                       duration_ms = (extract(epoch FROM (now() - started_at)) * 1000)::bigint
                 WHERE run_id = $1 AND step = $2 AND attempt = $3 AND state = 'running' AND lease_until < now()
             RETURNING run_id
             ), r AS (
                SELECT id, snapshot FROM runs WHERE id IN (SELECT run_id FROM done) AND state = 'running'
             ), q AS (
                INSERT INTO executions (run_id, step, attempt, module, argv, timeout_secs, state)
                SELECT r.id, $5, $6, s->>'module_name', ARRAY(SELECT jsonb_array_elements_text(s->'argv')),
                       (s->>'timeout_secs')::bigint, 'queued'
                  FROM r CROSS JOIN LATERAL (SELECT r.snapshot->'steps'->($5::int) AS s) x
                 WHERE $5::int IS NOT NULL AND s IS NOT NULL
                ON CONFLICT DO NOTHING
             RETURNING step
             )
             SELECT (SELECT count(*) FROM done) AS abandoned, (SELECT count(*) FROM q) AS queued",
        )
        .bind(key.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .bind(reason)
        .bind(next_step)
        .bind(next_attempt)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.get::<i64, _>("abandoned") > 0, row.get::<i64, _>("queued") > 0))
    }

    /// Running runs with no execution queued or running, whose latest
    /// execution ended more than `older_than` ago (or that have none).
    pub async fn stuck_runs(&self, older_than: Duration, limit: i64) -> Result<Vec<Stuck>> {
        let rows = sqlx::query(
            "SELECT r.id, r.step_count, r.queue, l.step, l.attempt, l.state AS exec_state, l.error
               FROM runs r
               LEFT JOIN LATERAL (
                    SELECT e.step, e.attempt, e.state, e.error, e.finished_at FROM executions e
                     WHERE e.run_id = r.id ORDER BY e.step DESC, e.attempt DESC LIMIT 1) l ON true
              WHERE r.state = 'running'
                AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.run_id = r.id AND e.state IN ('queued', 'running'))
                AND coalesce(l.finished_at, r.started_at, r.created_at) < now() - make_interval(secs => $1)
              LIMIT $2",
        )
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let last = match r.get::<Option<i32>, _>("step") {
                    Some(step) => Some(LastExec {
                        step: step as u32,
                        attempt: r.get::<i32, _>("attempt") as u32,
                        state: parse_state(r.get("exec_state"))?,
                        error: r.get("error"),
                    }),
                    None => None,
                };
                let id: Uuid = r.get("id");
                Ok(Stuck {
                    run: RunView {
                        id,
                        state: scheduler_core::RunState::Running,
                        step_count: r.get::<i32, _>("step_count") as u32,
                    },
                    queue: r.get("queue"),
                    last,
                })
            })
            .collect()
    }

    /// Inserts a queued execution of a running run (from its snapshot).
    pub async fn queue_execution(&self, run_id: Uuid, step: u32, attempt: u32) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO executions (run_id, step, attempt, module, argv, timeout_secs, state)
             SELECT r.id, $2, $3, s->>'module_name', ARRAY(SELECT jsonb_array_elements_text(s->'argv')),
                    (s->>'timeout_secs')::bigint, 'queued'
               FROM runs r CROSS JOIN LATERAL (SELECT r.snapshot->'steps'->($2::int) AS s) x
              WHERE r.id = $1 AND r.state = 'running' AND s IS NOT NULL
             ON CONFLICT DO NOTHING",
        )
        .bind(run_id)
        .bind(step as i32)
        .bind(attempt as i32)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
