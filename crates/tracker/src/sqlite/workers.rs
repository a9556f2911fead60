//! Mirrors `crate::workers` (PostgreSQL) for the embedded store: worker
//! registration, and heartbeats that renew the leases of the worker's
//! executions in the same transaction.

use super::apply::after;
use super::{Embedded, now};
use crate::Result;
use crate::executions::ExecKey;
use crate::workers::{Held, WorkerInfo};
use sqlx::types::Json;
use std::time::Duration;
use uuid::Uuid;

pub(crate) async fn register_worker(t: &Embedded, w: &WorkerInfo) -> Result<()> {
    let now = now();
    t.write(async |c| {
        sqlx::query(
            "INSERT INTO workers (id, host, pid, version, concurrency, queues, state, started_at, heartbeat_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'running', $7, $7)",
        )
        .bind(w.id)
        .bind(&w.host)
        .bind(w.pid as i32)
        .bind(&w.version)
        .bind(w.concurrency as i32)
        .bind(Json(&w.queues))
        .bind(now)
        .execute(c)
        .await
    })
    .await?;
    Ok(())
}

/// Marks the worker alive (`running` or `draining`) and extends the lease
/// of each of `holding` that is still recorded as its own and running;
/// returns those executions, each saying whether its run was canceled.
///
/// PostgreSQL's one statement (the worker's row, then every lease through
/// `unnest` of three arrays) is here one `BEGIN IMMEDIATE` transaction: the
/// worker's row, then one compare-and-set per held execution (a worker
/// holds at most its concurrency's worth).
pub(crate) async fn heartbeat(
    t: &Embedded,
    worker_id: Uuid,
    draining: bool,
    lease: Duration,
    holding: &[ExecKey],
) -> Result<Vec<Held>> {
    let now = now();
    let mut tx = t.begin().await?;
    sqlx::query("UPDATE workers SET heartbeat_at = $2, state = $3 WHERE id = $1")
        .bind(worker_id)
        .bind(now)
        .bind(if draining { "draining" } else { "running" })
        .execute(&mut *tx)
        .await?;
    let until = after(now, lease);
    let mut held = Vec::with_capacity(holding.len());
    for key in holding {
        let canceled: Option<(bool,)> = sqlx::query_as(
            "UPDATE executions SET lease_until = $5
              WHERE worker_id = $1 AND state = 'running' AND run_id = $2 AND step = $3 AND attempt = $4
          RETURNING (SELECT r.state = 'canceled' FROM runs r WHERE r.id = executions.run_id)",
        )
        .bind(worker_id)
        .bind(key.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .bind(until)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((canceled,)) = canceled {
            held.push(Held { key: *key, canceled });
        }
    }
    tx.commit().await?;
    Ok(held)
}

/// The worker is gone (its keeper saw it die and stopped its modules): the
/// leases of the executions it held end now, and so does the reaper lease
/// if it held it. Returns how many leases ended. (PostgreSQL's two CTEs:
/// here two statements in one `BEGIN IMMEDIATE` transaction.)
pub(crate) async fn worker_died(t: &Embedded, worker_id: Uuid) -> Result<u64> {
    let now = now();
    let mut tx = t.begin().await?;
    sqlx::query("UPDATE reaper_lease SET until = $2 WHERE holder = $1 AND until > $2")
        .bind(worker_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE alert_lease SET until = $2 WHERE holder = $1 AND until > $2")
        .bind(worker_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let ended = sqlx::query(
        "UPDATE executions SET lease_until = $2
          WHERE worker_id = $1 AND state = 'running' AND lease_until > $2",
    )
    .bind(worker_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // PostgreSQL's `lost` and `ev` parts: the worker marked lost, unless it
    // stopped or was told lost already for this silence, and `worker_lost`
    // naming the steps whose leases just ended.
    let lost: Option<(Uuid, String, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "UPDATE workers SET lost_at = $2
          WHERE id = $1 AND state <> 'stopped' AND (lost_at IS NULL OR lost_at < heartbeat_at)
      RETURNING id, host, pid, heartbeat_at",
    )
    .bind(worker_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((id, host, pid, heartbeat_at)) = lost {
        let runs = crate::sqlite::events::held_steps(&mut tx, id, Some(now)).await?;
        let event = crate::events::NewEvent {
            kind: "worker_lost".into(),
            worker_id: Some(id),
            message: Some("the worker process died; its keeper stopped its modules".into()),
            detail: serde_json::json!({
                "host": host,
                "pid": pid,
                "heartbeat_at": heartbeat_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
                "runs": runs,
            }),
            ..Default::default()
        };
        crate::sqlite::events::insert_on(&mut tx, &event).await?;
    }
    tx.commit().await?;
    Ok(ended.rows_affected())
}

pub(crate) async fn worker_stopped(t: &Embedded, worker_id: Uuid) -> Result<()> {
    let now = now();
    t.write(async |c| {
        sqlx::query("UPDATE workers SET state = 'stopped', stopped_at = $2, heartbeat_at = $2 WHERE id = $1")
            .bind(worker_id)
            .bind(now)
            .execute(c)
            .await
    })
    .await?;
    Ok(())
}
