//! Mirrors `crate::recovery` (PostgreSQL) for the embedded store. Times are
//! compared with cut-offs computed in Rust (`now - older_than`) and bound,
//! where PostgreSQL computes them with `now() - make_interval(..)`.

use super::{Embedded, now};
use crate::Result;
use crate::executions::ExecKey;
use crate::recovery::{Expired, Stuck};
use crate::runs::parse_state;
use chrono::{DateTime, Utc};
use scheduler_core::machine::{LastExec, RunView};
use std::time::Duration;
use uuid::Uuid;

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

/// `now - d`, or the dawn of time when `d` is absurdly long.
fn before(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Takes or extends the single reaper lease; false if another worker
/// holds it. One compare-and-set statement: SQLite's single writer orders
/// racing takers as PostgreSQL's row lock does.
pub(crate) async fn take_reaper_lease(t: &Embedded, worker_id: Uuid, ttl: Duration) -> Result<bool> {
    let now = now();
    let until = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let done = t
        .write(async |c| {
            sqlx::query(
                "UPDATE reaper_lease SET holder = ?1, until = ?2
          WHERE id = 1 AND (holder = ?1 OR until < ?3)",
            )
            .bind(worker_id)
            .bind(until)
            .bind(now)
            .execute(c)
            .await
        })
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Runs recorded as queued whose `start_etl` was never confirmed.
pub(crate) async fn unpublished_runs(t: &Embedded, older_than: Duration, limit: i64) -> Result<Vec<(Uuid, String)>> {
    Ok(sqlx::query_as(
        "SELECT id, queue FROM runs
          WHERE state = 'queued' AND published_at IS NULL AND created_at < ?1
          ORDER BY created_at LIMIT ?2",
    )
    .bind(before(now(), older_than))
    .bind(limit)
    .fetch_all(&t.pool)
    .await?)
}

/// Queued executions of running runs whose `exec_module` was never
/// confirmed: older than `older_than` (a publish may be in progress), or a
/// retry whose due time came (it is published only then). PostgreSQL's
/// `coalesce(due_at, queued_at + older_than) <= now()` is spelt as its two
/// cases, so that no time is computed in SQL.
pub(crate) async fn unpublished_executions(
    t: &Embedded,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<(ExecKey, String)>> {
    let now = now();
    let rows: Vec<(Uuid, i32, i32, String)> = sqlx::query_as(
        "SELECT e.run_id, e.step, e.attempt, coalesce(e.queue, r.queue) FROM executions e JOIN runs r ON r.id = e.run_id
          WHERE e.state = 'queued' AND e.published_at IS NULL AND r.state = 'running'
            AND CASE WHEN e.due_at IS NOT NULL THEN e.due_at <= ?1 ELSE e.queued_at <= ?2 END
          ORDER BY e.queued_at LIMIT ?3",
    )
    .bind(now)
    .bind(before(now, older_than))
    .bind(limit)
    .fetch_all(&t.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, step, attempt, queue)| (key(run_id, step, attempt), queue))
        .collect())
}

/// How long until the next queued retry is due (zero if one is overdue);
/// `None` when no retry waits. The earliest due time is read, the wait
/// computed in Rust.
///
/// Differs from PostgreSQL's today, on purpose: there `greatest(NULL, 0)`
/// is 0 (PostgreSQL's `greatest` skips NULLs), so with no retry waiting it
/// answers `Some(0)`, against its own contract, and the reaper then wakes
/// every `MIN_WAIT` instead of every pass. This follows the contract.
pub(crate) async fn next_retry_due(t: &Embedded) -> Result<Option<Duration>> {
    let due: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT min(e.due_at)
           FROM executions e JOIN runs r ON r.id = e.run_id
          WHERE e.state = 'queued' AND e.due_at IS NOT NULL AND e.published_at IS NULL AND r.state = 'running'",
    )
    .fetch_one(&t.pool)
    .await?;
    Ok(due.map(|due| (due - now()).to_std().unwrap_or(Duration::ZERO)))
}

/// Running executions whose lease expired.
pub(crate) async fn expired_executions(t: &Embedded, limit: i64) -> Result<Vec<Expired>> {
    let rows: Vec<ExpiredRow> = sqlx::query_as(
        "SELECT e.run_id, e.step, e.attempt, e.retry, e.pid, e.worker_id, w.host, r.state AS run_state, r.step_count, r.queue,
                (SELECT count(*) FROM executions x
                  WHERE x.run_id = e.run_id AND x.step = e.step AND x.state = 'abandoned' AND x.given_back = 0) AS lost_before
           FROM executions e JOIN runs r ON r.id = e.run_id LEFT JOIN workers w ON w.id = e.worker_id
          WHERE e.state = 'running' AND e.lease_until < ?1
          ORDER BY e.lease_until LIMIT ?2",
    )
    .bind(now())
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
/// PostgreSQL's `LEFT JOIN LATERAL (.. LIMIT 1)` is a join on the latest
/// execution's key, found by a correlated subquery on the primary key.
pub(crate) async fn stuck_runs(t: &Embedded, older_than: Duration, limit: i64) -> Result<Vec<Stuck>> {
    let rows: Vec<StuckRow> = sqlx::query_as(
        "SELECT r.id, r.step_count, r.queue, l.step, l.attempt, l.retry, l.state AS exec_state, l.error
           FROM runs r
           LEFT JOIN executions l ON l.run_id = r.id
                AND (l.step, l.attempt) = (SELECT e.step, e.attempt FROM executions e
                                            WHERE e.run_id = r.id ORDER BY e.step DESC, e.attempt DESC LIMIT 1)
          WHERE r.state = 'running'
            AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.run_id = r.id AND e.state IN ('queued', 'running'))
            AND coalesce(l.finished_at, r.started_at, r.created_at) < ?1
          LIMIT ?2",
    )
    .bind(before(now(), older_than))
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
