//! What recovery (the reaper) reads and writes: work committed but never
//! published, executions whose lease expired, runs left with nothing in
//! flight. Every write is compare-and-set, so two reapers racing (which the
//! reaper lease already prevents) could only publish a duplicate, which the
//! handlers drop.

use crate::executions::ExecKey;
use crate::runs::parse_state;
use crate::{Result, Tracker};
use scheduler_core::machine::{LastExec, RunView};
use std::time::Duration;
use uuid::Uuid;

/// An execution whose worker stopped renewing its lease.
#[derive(Debug, Clone)]
pub struct Expired {
    pub key: ExecKey,
    /// Its retry number (attempts lost to workers keep it).
    pub retry: u32,
    /// Attempts of its step already lost before it: abandoned by recovery
    /// (their worker died or was cut off), not those their own worker gave
    /// back (`given_back`: a shutdown past the drain bound, no module slot
    /// in time).
    pub lost_before: u32,
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

#[derive(sqlx::FromRow)]
struct ExpiredRow {
    run_id: Uuid,
    step: i32,
    attempt: i32,
    retry: i32,
    lost_before: i64,
    pid: Option<i32>,
    worker_id: Option<Uuid>,
    host: Option<String>,
    run_state: String,
    step_count: i32,
    queue: String,
}

#[derive(sqlx::FromRow)]
struct StuckRow {
    id: Uuid,
    step_count: i32,
    queue: String,
    step: Option<i32>,
    attempt: Option<i32>,
    retry: Option<i32>,
    exec_state: Option<String>,
    error: Option<String>,
}

fn key(run_id: Uuid, step: i32, attempt: i32) -> ExecKey {
    ExecKey {
        run_id,
        step: step as u32,
        attempt: attempt as u32,
    }
}

/// Takes or extends the single reaper lease; false if another worker
/// holds it.
pub(crate) async fn take_reaper_lease(t: &Tracker, worker_id: Uuid, ttl: Duration) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE reaper_lease SET holder = $1, until = now() + make_interval(secs => $2)
          WHERE id = 1 AND (holder = $1 OR until < now())",
    )
    .bind(worker_id)
    .bind(ttl.as_secs_f64())
    .execute(&t.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Runs recorded as queued whose `start_etl` was never confirmed.
pub(crate) async fn unpublished_runs(t: &Tracker, older_than: Duration, limit: i64) -> Result<Vec<(Uuid, String)>> {
    Ok(sqlx::query_as(
        "SELECT id, queue FROM runs
          WHERE state = 'queued' AND published_at IS NULL
            AND created_at < now() - make_interval(secs => $1)
          ORDER BY created_at LIMIT $2",
    )
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .fetch_all(&t.pool)
    .await?)
}

/// Queued executions of running runs whose `exec_module` was never
/// confirmed: older than `older_than` (a publish may be in progress), or a
/// retry whose due time came (it is published only then).
pub(crate) async fn unpublished_executions(
    t: &Tracker,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<(ExecKey, String)>> {
    let rows: Vec<(Uuid, i32, i32, String)> = sqlx::query_as(
        "SELECT e.run_id, e.step, e.attempt, coalesce(e.queue, r.queue) FROM executions e JOIN runs r ON r.id = e.run_id
          WHERE e.state = 'queued' AND e.published_at IS NULL AND r.state = 'running'
            AND coalesce(e.due_at, e.queued_at + make_interval(secs => $1)) <= now()
          ORDER BY e.queued_at LIMIT $2",
    )
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .fetch_all(&t.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, step, attempt, queue)| (key(run_id, step, attempt), queue))
        .collect())
}

/// How long until the next queued retry is due (zero if one is overdue);
/// `None` when no retry waits.
pub(crate) async fn next_retry_due(t: &Tracker) -> Result<Option<Duration>> {
    // Clamped in Rust: `greatest(NULL, 0)` is 0 in PostgreSQL, which turned
    // "no retry waiting" into "one due now" and had the reaper look every
    // 20 ms on an idle system.
    let secs: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM (min(e.due_at) - now()))::float8
           FROM executions e JOIN runs r ON r.id = e.run_id
          WHERE e.state = 'queued' AND e.due_at IS NOT NULL AND e.published_at IS NULL AND r.state = 'running'",
    )
    .fetch_one(&t.pool)
    .await?;
    Ok(secs.map(|s| Duration::from_secs_f64(s.max(0.0))))
}

/// Running executions whose lease expired.
pub(crate) async fn expired_executions(t: &Tracker, limit: i64) -> Result<Vec<Expired>> {
    let rows: Vec<ExpiredRow> = sqlx::query_as(
        "SELECT e.run_id, e.step, e.attempt, e.retry, e.pid, e.worker_id, w.host, r.state AS run_state, r.step_count, r.queue,
                (SELECT count(*) FROM executions x
                  WHERE x.run_id = e.run_id AND x.step = e.step AND x.state = 'abandoned' AND NOT x.given_back) AS lost_before
           FROM executions e JOIN runs r ON r.id = e.run_id LEFT JOIN workers w ON w.id = e.worker_id
          WHERE e.state = 'running' AND e.lease_until < now()
          ORDER BY e.lease_until LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&t.pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Expired {
                key: key(r.run_id, r.step, r.attempt),
                retry: r.retry.max(0) as u32,
                lost_before: r.lost_before.max(0) as u32,
                run: RunView {
                    id: r.run_id,
                    state: parse_state(r.run_state)?,
                    step_count: r.step_count as u32,
                },
                queue: r.queue,
                pid: r.pid.map(|p| p as u32),
                worker_id: r.worker_id,
                worker_host: r.host,
            })
        })
        .collect()
}

/// Running runs with no execution queued or running, whose latest
/// execution ended more than `older_than` ago (or that have none).
pub(crate) async fn stuck_runs(t: &Tracker, older_than: Duration, limit: i64) -> Result<Vec<Stuck>> {
    let rows: Vec<StuckRow> = sqlx::query_as(
        "SELECT r.id, r.step_count, r.queue, l.step, l.attempt, l.retry, l.state AS exec_state, l.error
           FROM runs r
           LEFT JOIN LATERAL (
                SELECT e.step, e.attempt, e.retry, e.state, e.error, e.finished_at FROM executions e
                 WHERE e.run_id = r.id ORDER BY e.step DESC, e.attempt DESC LIMIT 1) l ON true
          WHERE r.state = 'running'
            AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.run_id = r.id AND e.state IN ('queued', 'running'))
            AND coalesce(l.finished_at, r.started_at, r.created_at) < now() - make_interval(secs => $1)
          LIMIT $2",
    )
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .fetch_all(&t.pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let last = match (r.step, r.attempt, r.exec_state) {
                (Some(step), Some(attempt), Some(state)) => Some(LastExec {
                    step: step as u32,
                    attempt: attempt as u32,
                    retry: r.retry.unwrap_or(0).max(0) as u32,
                    state: parse_state(state)?,
                    error: r.error,
                }),
                _ => None,
            };
            Ok(Stuck {
                run: RunView {
                    id: r.id,
                    state: scheduler_core::RunState::Running,
                    step_count: r.step_count as u32,
                },
                queue: r.queue,
                last,
            })
        })
        .collect()
}
