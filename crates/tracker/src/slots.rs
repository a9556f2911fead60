//! Recording a run, and the concurrency limit of its sequence. A slot is held
//! by a run's own state, never by a counter: `queued` and `running` runs
//! (waiting for a retry included) and canceled runs whose module is still
//! stopping hold one. Admission (a new run, or a waiting run when a slot
//! frees) reads the sequence's holders and writes its answer in one
//! transaction under a per-sequence advisory lock, taken by a statement of
//! its own before the read: under READ COMMITTED each later statement then
//! sees every admission that committed before the lock was granted, so two
//! starts on two hosts at the same instant never both get the last slot.
//! Runs of sequences without a limit take none of this: one insert.

use crate::apply::{Write, Written};
use crate::runs::strip_nul;
use crate::{Result, Tracker, TrackerError};
use scheduler_core::policy::{self, Admission, Concurrency, Holder, Occupancy};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// A run about to be recorded, as `scheduler start` (or the UI) builds it.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: Uuid,
    /// The run's queue (its run-level messages; steps carry their own in
    /// the snapshot).
    pub queue: String,
    pub trigger: String,
    pub snapshot: scheduler_core::Snapshot,
    /// The schedule that started it, if one did.
    pub schedule: Option<String>,
    /// The slot (or the date asked for) the run is for.
    pub logical_date: Option<chrono::DateTime<chrono::Utc>>,
}

/// How a new run was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// `queued`: publish its `start_etl`.
    Queued,
    /// `waiting` for a slot, with why.
    Waiting(String),
    /// `skipped` (final), with why.
    Skipped(String),
}

/// Records a new run: `queued`, or as its sequence's concurrency policy
/// says; runs canceled to make room for it are canceled in the same
/// transaction (their modules are stopped by their workers' heartbeats).
pub(crate) async fn create_run(t: &Tracker, run: &NewRun) -> Result<Admitted> {
    if !run.snapshot.concurrency.is_limited() {
        insert(&t.pool, run, "queued", None).await?;
        return Ok(Admitted::Queued);
    }
    let mut tx = t.pool.begin().await?;
    let admitted = admit_in(&mut tx, run).await?;
    tx.commit().await?;
    Ok(admitted)
}

/// Records `run` inside the caller's transaction, as its sequence's policy
/// says (the lock is held to the end of that transaction).
pub(crate) async fn admit_in(tx: &mut Transaction<'_, Postgres>, run: &NewRun) -> Result<Admitted> {
    let concurrency = run.snapshot.concurrency;
    if !concurrency.is_limited() {
        insert(&mut **tx, run, "queued", None).await?;
        return Ok(Admitted::Queued);
    }
    lock(tx, &run.snapshot.sequence).await?;
    let occupancy = occupancy(tx, &run.snapshot.sequence).await?;
    let admitted = match policy::admit(&concurrency, &occupancy) {
        Admission::Start => Admitted::Queued,
        Admission::Wait { note } => Admitted::Waiting(note),
        Admission::Skip { note } => Admitted::Skipped(note),
        Admission::Cancel { runs, note } => {
            cancel_runs(tx, &runs, &policy::replaced_note(run.id)).await?;
            // A canceled run with no module running frees its slot at once.
            let held = occupancy_holders(tx, &run.snapshot.sequence).await?.len();
            if policy::free_slots(&concurrency, held) > 0 {
                Admitted::Queued
            } else {
                Admitted::Waiting(note)
            }
        }
    };
    let (state, note) = match &admitted {
        Admitted::Queued => ("queued", None),
        Admitted::Waiting(n) => ("waiting", Some(n.as_str())),
        Admitted::Skipped(n) => ("skipped", Some(n.as_str())),
    };
    insert(&mut **tx, run, state, note).await?;
    Ok(admitted)
}

/// Moves the sequence's oldest waiting runs to `queued`, as many as there
/// are free slots (the policy of the oldest waiting run decides); returns
/// them with their queues, oldest first, for the caller to publish. Their
/// `start_etl` is unpublished until then, so recovery publishes it if the
/// caller cannot.
pub(crate) async fn admit_waiting(t: &Tracker, sequence: &str) -> Result<Vec<(Uuid, String)>> {
    let mut tx = t.pool.begin().await?;
    lock(&mut tx, sequence).await?;
    let policy: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT snapshot->'concurrency' FROM runs WHERE sequence = $1 AND state = 'waiting'
          ORDER BY created_at, id LIMIT 1",
    )
    .bind(sequence)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(policy) = policy else {
        return Ok(vec![]);
    };
    let policy: Concurrency = serde_json::from_value(policy).map_err(|e| TrackerError::Corrupt(e.to_string()))?;
    let held = occupancy_holders(&mut tx, sequence).await?.len();
    let free = policy::free_slots(&policy, held).min(1000) as i64;
    if free == 0 {
        return Ok(vec![]);
    }
    let admitted: Vec<(Uuid, String)> = sqlx::query_as(
        "UPDATE runs SET state = 'queued', note = NULL, updated_at = now()
          WHERE id IN (SELECT id FROM runs WHERE sequence = $1 AND state = 'waiting'
                        ORDER BY created_at, id LIMIT $2)
      RETURNING id, queue",
    )
    .bind(sequence)
    .bind(free)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(admitted)
}

/// Applies `write` (an operator's retry: `failed -> running`) only if the
/// run's sequence has a free slot, decided and written under the sequence's
/// lock like any start; `Ok(Err(why))` when it has none.
pub(crate) async fn apply_within_limit(t: &Tracker, w: &Write<'_>) -> Result<std::result::Result<Written, String>> {
    let mut tx = t.pool.begin().await?;
    let run: Option<(String, Option<serde_json::Value>)> =
        sqlx::query_as("SELECT sequence, snapshot->'concurrency' FROM runs WHERE id = $1")
            .bind(w.run_id)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((sequence, Some(policy))) = run {
        let policy: Concurrency = serde_json::from_value(policy).map_err(|e| TrackerError::Corrupt(e.to_string()))?;
        if let Some(max) = policy.max_concurrent {
            lock(&mut tx, &sequence).await?;
            let holders = occupancy_holders(&mut tx, &sequence).await?;
            if policy::free_slots(&policy, holders.len()) == 0 {
                let held_by = holders.first().map(|h| h.run_id.to_string()).unwrap_or_default();
                return Ok(Err(format!(
                    "{sequence} has no free slot (max_concurrent {max}; run {held_by} holds it): \
                     retry once it ends"
                )));
            }
        }
    }
    let written = crate::apply::apply_on(&mut *tx, w).await?;
    tx.commit().await?;
    Ok(Ok(written))
}

/// Sequences with runs waiting for a slot (recovery's backstop).
pub(crate) async fn waiting_sequences(t: &Tracker) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT sequence FROM runs WHERE state = 'waiting' LIMIT 1000")
            .fetch_all(&t.pool)
            .await?,
    )
}

async fn insert<'e>(executor: impl sqlx::PgExecutor<'e>, run: &NewRun, state: &str, note: Option<&str>) -> Result<()> {
    let snapshot = serde_json::to_value(&run.snapshot).map_err(|e| TrackerError::Corrupt(e.to_string()))?;
    sqlx::query(
        // `clock_timestamp()`, not the transaction's start: a run that
        // waited for the sequence's lock is newer than the one that held it,
        // so first-in-first-out by `created_at` is the order of admission.
        "INSERT INTO runs (id, sequence, state, queue, trigger, snapshot, step_count, note, created_at, finished_at,
                           schedule, logical_date)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp(),
                 CASE WHEN $3 = 'skipped' THEN clock_timestamp() END, $9, $10)",
    )
    .bind(run.id)
    .bind(&run.snapshot.sequence)
    .bind(state)
    .bind(&run.queue)
    .bind(strip_nul(&run.trigger))
    .bind(snapshot)
    .bind(run.snapshot.steps.len() as i32)
    .bind(note)
    .bind(&run.schedule)
    .bind(run.logical_date)
    .execute(executor)
    .await?;
    Ok(())
}

/// The per-sequence lock, held to the end of the transaction.
async fn lock(tx: &mut Transaction<'_, Postgres>, sequence: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('scheduler.sequence:' || $1, 0))")
        .bind(sequence)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn occupancy(tx: &mut Transaction<'_, Postgres>, sequence: &str) -> Result<Occupancy> {
    let holders = occupancy_holders(tx, sequence).await?;
    let waiting: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM runs WHERE sequence = $1 AND state = 'waiting' ORDER BY created_at, id LIMIT 10000",
    )
    .bind(sequence)
    .fetch_all(&mut **tx)
    .await?;
    Ok(Occupancy { holders, waiting })
}

/// The runs holding a slot, oldest first.
async fn occupancy_holders(tx: &mut Transaction<'_, Postgres>, sequence: &str) -> Result<Vec<Holder>> {
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(
        "SELECT id, false FROM runs WHERE sequence = $1 AND state IN ('queued', 'running')
         UNION ALL
         SELECT DISTINCT r.id, true FROM executions e JOIN runs r ON r.id = e.run_id
          WHERE e.state = 'running' AND r.sequence = $1 AND r.state = 'canceled'
         ORDER BY 1",
    )
    .bind(sequence)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, stopping)| Holder { run_id, stopping })
        .collect())
}

/// Cancels runs to make room (their queued executions with them); their
/// running modules are stopped by their workers, who learn it at their
/// next heartbeat.
async fn cancel_runs(tx: &mut Transaction<'_, Postgres>, runs: &[Uuid], note: &str) -> Result<()> {
    sqlx::query(
        "WITH c AS (
            UPDATE runs SET state = 'canceled', note = $2, finished_at = now(), updated_at = now()
             WHERE id = ANY($1) AND state IN ('waiting', 'queued', 'running')
         RETURNING id
         )
         UPDATE executions SET state = 'canceled', finished_at = now()
          WHERE run_id IN (SELECT id FROM c) AND state = 'queued'",
    )
    .bind(runs)
    .bind(note)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
