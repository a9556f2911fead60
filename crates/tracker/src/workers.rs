//! Worker registration and heartbeats. A heartbeat is also the lease renewal
//! of every execution the worker runs, in the same statement, so "the worker
//! is alive" and "its steps are held" can never disagree for long.

use crate::executions::ExecKey;
use crate::{Result, Tracker};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub id: Uuid,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub concurrency: u32,
    pub queues: Vec<String>,
}

/// An execution whose lease a heartbeat renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub key: ExecKey,
    /// Its run was canceled: the worker must stop the module.
    pub canceled: bool,
}

pub(crate) async fn register_worker(t: &Tracker, w: &WorkerInfo) -> Result<()> {
    sqlx::query(
        "INSERT INTO workers (id, host, pid, version, concurrency, queues, state)
         VALUES ($1, $2, $3, $4, $5, $6, 'running')",
    )
    .bind(w.id)
    .bind(&w.host)
    .bind(w.pid as i32)
    .bind(&w.version)
    .bind(w.concurrency as i32)
    .bind(&w.queues)
    .execute(&t.pool)
    .await?;
    Ok(())
}

/// Marks the worker alive (`running` or `draining`) and extends the lease
/// of each of `holding` that is still recorded as its own and running;
/// returns those executions. Only what the worker says it still works on
/// is renewed: a step it gave up (it could not record the result) lets its
/// lease lapse, so recovery takes it over.
pub(crate) async fn heartbeat(
    t: &Tracker,
    worker_id: Uuid,
    draining: bool,
    lease: Duration,
    holding: &[ExecKey],
) -> Result<Vec<Held>> {
    let runs: Vec<Uuid> = holding.iter().map(|k| k.run_id).collect();
    let steps: Vec<i32> = holding.iter().map(|k| k.step as i32).collect();
    let attempts: Vec<i32> = holding.iter().map(|k| k.attempt as i32).collect();
    let rows: Vec<(Uuid, i32, i32, bool)> = sqlx::query_as(
        "WITH w AS (
            UPDATE workers SET heartbeat_at = now(), state = $2 WHERE id = $1 RETURNING id
         ), l AS (
            UPDATE executions SET lease_until = now() + make_interval(secs => $3)
             WHERE worker_id = $1 AND state = 'running'
               AND (run_id, step, attempt) IN (SELECT * FROM unnest($4::uuid[], $5::int[], $6::int[]))
         RETURNING run_id, step, attempt
         )
         SELECT l.run_id, l.step, l.attempt, r.state = 'canceled' AS canceled
           FROM l JOIN runs r ON r.id = l.run_id",
    )
    .bind(worker_id)
    .bind(if draining { "draining" } else { "running" })
    .bind(lease.as_secs_f64())
    .bind(runs)
    .bind(steps)
    .bind(attempts)
    .fetch_all(&t.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, step, attempt, canceled)| Held {
            key: ExecKey {
                run_id,
                step: step as u32,
                attempt: attempt as u32,
            },
            canceled,
        })
        .collect())
}

/// The worker is gone (its keeper saw it die and stopped its modules): the
/// leases of the executions it held end now, and so do the reaper and the
/// alert leases if it held them, so that recovery (on any other worker)
/// re-attempts its steps at its next pass instead of a lease later, and
/// another sender delivers the alerts. Unless it had said it stopped, it is
/// marked lost and `worker_lost` recorded in the same statement, naming the
/// steps it held (told now, not once a lease of silence has passed; recovery's
/// [`crate::events`] `mark_lost_workers` then finds it told already). Returns
/// how many leases ended.
pub(crate) async fn worker_died(t: &Tracker, worker_id: Uuid) -> Result<u64> {
    let (ended,): (i64,) = sqlx::query_as(
        "WITH reaper AS (
            UPDATE reaper_lease SET until = now() WHERE holder = $1 AND until > now()
         ), sender AS (
            UPDATE alert_lease SET until = now() WHERE holder = $1 AND until > now()
         ), ended AS (
            UPDATE executions e SET lease_until = now()
              FROM runs r
             WHERE e.worker_id = $1 AND e.state = 'running' AND e.lease_until > now() AND r.id = e.run_id
         RETURNING e.run_id, e.step, e.attempt, r.sequence
         ), lost AS (
            UPDATE workers SET lost_at = now()
             WHERE id = $1 AND state <> 'stopped' AND (lost_at IS NULL OR lost_at < heartbeat_at)
         RETURNING id, host, pid, heartbeat_at
         ), ev AS (
            INSERT INTO events (kind, worker_id, message, detail)
            SELECT 'worker_lost', l.id, 'the worker process died; its keeper stopped its modules',
                   jsonb_build_object('host', l.host, 'pid', l.pid, 'heartbeat_at', l.heartbeat_at,
                                      'runs', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                                   'run_id', x.run_id, 'sequence', x.sequence,
                                                   'step', x.step + 1, 'attempt', x.attempt)
                                                   ORDER BY x.run_id, x.step), '[]'::jsonb)
                                                 FROM ended x))
              FROM lost l
         )
         SELECT count(*) FROM ended",
    )
    .bind(worker_id)
    .fetch_one(&t.pool)
    .await?;
    Ok(ended as u64)
}

pub(crate) async fn worker_stopped(t: &Tracker, worker_id: Uuid) -> Result<()> {
    sqlx::query("UPDATE workers SET state = 'stopped', stopped_at = now(), heartbeat_at = now() WHERE id = $1")
        .bind(worker_id)
        .execute(&t.pool)
        .await?;
    Ok(())
}
