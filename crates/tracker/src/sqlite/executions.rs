//! Mirrors `crate::executions` (PostgreSQL) for the embedded store: claiming
//! an execution (compare-and-set `queued -> running` with its lease),
//! recording its pid and publish marker, its stall mark.

use super::apply::after;
use super::{Durability, Embedded, now};
use crate::Result;
use crate::executions::{Claimed, ExecKey, ModuleEnv, StepDef, env_pairs};
use crate::runs::parse_state;
use scheduler_core::{ExecState, RetryPolicy, RunState};
use sqlx::types::Json;
use std::time::Duration;
use uuid::Uuid;

/// The execution's half of [`Claimed`] (`argv` is a JSON array here).
#[derive(sqlx::FromRow)]
struct ExecPart {
    module: String,
    argv: Json<Vec<String>>,
    timeout_secs: Option<i64>,
    retry: i32,
}

/// The run's half of [`Claimed`], from its snapshot.
#[derive(sqlx::FromRow)]
struct RunPart {
    sequence: String,
    step_count: i32,
    logical_date: Option<String>,
    schedule: Option<String>,
    cwd: Option<String>,
    env: Option<ModuleEnv>,
    step_def: Option<StepDef>,
}

/// Claims a queued execution of a running run. `None` means it was not
/// claimable; [`crate::Store::exec_states`] tells why.
///
/// PostgreSQL does it in one `UPDATE ... FROM runs ... RETURNING` reading
/// both tables; SQLite's `RETURNING` cannot name the `FROM` table, so here
/// it is the update, then the read of the run, in one `BEGIN IMMEDIATE`
/// transaction (the run cannot change in between).
pub(crate) async fn claim(t: &Embedded, key: ExecKey, worker_id: Uuid, lease: Duration) -> Result<Option<Claimed>> {
    let now = now();
    let mut tx = t.begin().await?;
    let exec: Option<ExecPart> = sqlx::query_as(
        "UPDATE executions
            SET state = 'running', worker_id = $4, started_at = $5, lease_until = $6
          WHERE run_id = $1 AND step = $2 AND attempt = $3 AND state = 'queued'
            AND EXISTS (SELECT 1 FROM runs r WHERE r.id = executions.run_id AND r.state = 'running')
      RETURNING module, argv, timeout_secs, retry",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .bind(worker_id)
    .bind(now)
    .bind(after(now, lease))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(exec) = exec else {
        return Ok(None);
    };
    let run: RunPart = sqlx::query_as(
        "SELECT sequence, step_count,
                json_extract(snapshot, '$.logical_date') AS logical_date,
                json_extract(snapshot, '$.schedule') AS schedule,
                json_extract(snapshot, '$.steps[' || $2 || '].cwd') AS cwd,
                json_extract(snapshot, '$.steps[' || $2 || '].env') AS env,
                json_extract(snapshot, '$.steps[' || $2 || ']') AS step_def
           FROM runs WHERE id = $1",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Claimed {
        module: exec.module,
        argv: exec.argv.0,
        timeout_secs: exec.timeout_secs.map(|t| t.max(0) as u64),
        sequence: run.sequence,
        step_count: run.step_count.max(0) as u32,
        retry: exec.retry.max(0) as u32,
        logical_date: run.logical_date,
        schedule: run.schedule,
        cwd: run.cwd,
        env: env_pairs(run.env),
        watch: run.step_def.map(|d| d.0).unwrap_or_default(),
    }))
}

/// The run's state and the execution's state (if it exists).
pub(crate) async fn exec_states(t: &Embedded, key: ExecKey) -> Result<Option<(RunState, Option<ExecState>)>> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT r.state AS run_state, e.state AS exec_state
           FROM runs r LEFT JOIN executions e ON e.run_id = r.id AND e.step = $2 AND e.attempt = $3
          WHERE r.id = $1",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .fetch_optional(&t.pool)
    .await?;
    row.map(|(run, exec)| Ok((parse_state(run)?, exec.map(parse_state).transpose()?)))
        .transpose()
}

/// Marks a queued execution of a run that ended as canceled.
pub(crate) async fn cancel_queued(t: &Embedded, key: ExecKey) -> Result<bool> {
    let done = t
        .write(async |c| {
            sqlx::query(
                "UPDATE executions SET state = 'canceled', finished_at = $4
          WHERE run_id = $1 AND step = $2 AND attempt = $3 AND state = 'queued'",
            )
            .bind(key.run_id)
            .bind(key.step as i32)
            .bind(key.attempt as i32)
            .bind(now())
            .execute(c)
            .await
        })
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the module's pid (also its process group id). Without a flush
/// of its own, as PostgreSQL's `synchronous_commit = off` (the keeper and
/// recovery find a module by its environment, not by this pid).
pub(crate) async fn record_pid(t: &Embedded, key: ExecKey, worker_id: Uuid, pid: u32) -> Result<()> {
    t.write_as(Durability::Logged, async |c| {
        sqlx::query(
            "UPDATE executions SET pid = $5
          WHERE run_id = $1 AND step = $2 AND attempt = $3 AND worker_id = $4 AND state = 'running'",
        )
        .bind(key.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .bind(worker_id)
        .bind(pid as i32)
        .execute(c)
        .await
    })
    .await?;
    Ok(())
}

/// Notes that the queue took this execution's `exec_module` (without a
/// flush of its own, as [`mark_run_published`](super::runs::mark_run_published)).
pub(crate) async fn mark_exec_published(t: &Embedded, key: ExecKey) -> Result<()> {
    t.write_as(Durability::Logged, async |c| {
        sqlx::query(
            "UPDATE executions SET published_at = coalesce(published_at, $4)
          WHERE run_id = $1 AND step = $2 AND attempt = $3",
        )
        .bind(key.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .bind(now())
        .execute(c)
        .await
    })
    .await?;
    Ok(())
}

/// The retry policy of a run's step, from its snapshot; runs recorded
/// before retries existed have none: the defaults (no retry).
pub(crate) async fn retry_policy(t: &Embedded, run_id: Uuid, step: u32) -> Result<RetryPolicy> {
    let policy: Option<Option<Json<RetryPolicy>>> =
        sqlx::query_scalar("SELECT json_extract(snapshot, '$.steps[' || $2 || '].retry') FROM runs WHERE id = $1")
            .bind(run_id)
            .bind(step as i32)
            .fetch_optional(&t.pool)
            .await?;
    Ok(policy.flatten().map(|p| p.0).unwrap_or_default())
}

/// Marks a running execution stalled, or no longer stalled once it writes
/// again. False when it is not running (any more) or already so marked.
///
/// Marking it stalled records `step_stalled` with it: PostgreSQL's one
/// statement of two CTEs is here the mark, then the event only if the mark
/// applied, in one `BEGIN IMMEDIATE` transaction.
pub(crate) async fn mark_stalled(t: &Embedded, key: ExecKey, stalled: bool) -> Result<bool> {
    let now = now();
    let mut tx = t.begin().await?;
    let marked: Option<(String,)> = sqlx::query_as(
        "UPDATE executions SET stalled_at = CASE WHEN $4 THEN $5 END
          WHERE run_id = $1 AND step = $2 AND attempt = $3 AND state = 'running'
            AND (stalled_at IS NULL) = $4
      RETURNING module",
    )
    .bind(key.run_id)
    .bind(key.step as i32)
    .bind(key.attempt as i32)
    .bind(stalled)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((module,)) = marked else {
        return Ok(false);
    };
    if stalled {
        sqlx::query(
            "INSERT INTO events (kind, sequence, run_id, step, attempt, message, detail, at)
             SELECT 'step_stalled', r.sequence, r.id, $2, $3,
                    'no output for ' || coalesce(json_extract(s.def, '$.stall_secs'), '?') || ' s'
                        || CASE WHEN json_extract(s.def, '$.on_stall') = 'kill'
                                THEN '; stopped, handled as a failure' ELSE '' END,
                    json_patch('{}', json_object('module', $4, 'stall_secs', json_extract(s.def, '$.stall_secs'),
                                                 'on_stall', json_extract(s.def, '$.on_stall'))),
                    $5
               FROM runs r CROSS JOIN (SELECT json_extract(snapshot, '$.steps[' || $2 || ']') AS def
                                         FROM runs WHERE id = $1) s
              WHERE r.id = $1",
        )
        .bind(key.run_id)
        .bind(key.step as i32)
        .bind(key.attempt as i32)
        .bind(module)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}
