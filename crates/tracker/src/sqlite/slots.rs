//! Mirrors `crate::slots` (PostgreSQL) for the embedded store: recording a
//! run, and the concurrency limit of its sequence. A slot is held by a run's
//! own state, never by a counter, exactly as there.
//!
//! PostgreSQL serialises a sequence's admissions with a per-sequence
//! advisory lock taken inside the transaction. SQLite has one writer: every
//! admission runs in a `BEGIN IMMEDIATE` transaction ([`Embedded::begin`]),
//! which holds the database's write lock from its first statement to its
//! commit, so the read of the sequence's holders and the write of the answer
//! are already serialised against every other admission (of any sequence):
//! there is no lock to take, and two starts at the same instant never both
//! get the last slot.

use super::{Embedded, inline, now};
use crate::apply::{Write, Written};
use crate::runs::strip_nul;
use crate::slots::{Admitted, NewRun};
use crate::{Result, TrackerError};
use chrono::{DateTime, Utc};
use scheduler_core::policy::{self, Admission, Concurrency, Holder, Occupancy};
use sqlx::SqliteConnection;
use sqlx::types::Json;
use uuid::Uuid;

/// Records a new run: `queued`, or as its sequence's concurrency policy
/// says; runs canceled to make room for it are canceled in the same
/// transaction.
pub(crate) async fn create_run(t: &Embedded, run: &NewRun) -> Result<Admitted> {
    if !run.snapshot.concurrency.is_limited() {
        // One statement: it takes the write lock when it starts.
        let mut conn = t.pool.acquire().await?;
        insert(&mut conn, run, "queued", None).await?;
        return Ok(Admitted::Queued);
    }
    let mut tx = t.begin().await?;
    let admitted = admit_in(&mut tx, run).await?;
    tx.commit().await?;
    Ok(admitted)
}

/// Records `run` inside the caller's transaction, as its sequence's policy
/// says. The caller's transaction must have begun with `BEGIN IMMEDIATE`
/// ([`Embedded::begin`]): that write lock, held to its commit, is what the
/// PostgreSQL side's per-sequence advisory lock is.
pub(crate) async fn admit_in(tx: &mut SqliteConnection, run: &NewRun) -> Result<Admitted> {
    let concurrency = run.snapshot.concurrency;
    if !concurrency.is_limited() {
        insert(tx, run, "queued", None).await?;
        return Ok(Admitted::Queued);
    }
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
    insert(tx, run, state, note).await?;
    Ok(admitted)
}

/// Moves the sequence's oldest waiting runs to `queued`, as many as there
/// are free slots (the policy of the oldest waiting run decides); returns
/// them with their queues, oldest first.
pub(crate) async fn admit_waiting(t: &Embedded, sequence: &str) -> Result<Vec<(Uuid, String)>> {
    let mut tx = t.begin().await?;
    let policy: Option<Json<Concurrency>> = sqlx::query_scalar(
        "SELECT json_extract(snapshot, '$.concurrency') FROM runs WHERE sequence = $1 AND state = 'waiting'
          ORDER BY created_at, id LIMIT 1",
    )
    .bind(sequence)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(Json(policy)) = policy else {
        return Ok(vec![]);
    };
    let held = occupancy_holders(&mut tx, sequence).await?.len();
    let free = policy::free_slots(&policy, held).min(1000) as i64;
    if free == 0 {
        return Ok(vec![]);
    }
    // `RETURNING` gives no order in SQLite: the oldest-first order is read
    // back from the rows returned.
    let mut admitted: Vec<(Uuid, String, String)> = sqlx::query_as(
        "UPDATE runs SET state = 'queued', note = NULL, updated_at = $3
          WHERE id IN (SELECT id FROM runs WHERE sequence = $1 AND state = 'waiting'
                        ORDER BY created_at, id LIMIT $2)
      RETURNING id, queue, created_at",
    )
    .bind(sequence)
    .bind(free)
    .bind(now())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    admitted.sort_by(|a, b| (&a.2, a.0).cmp(&(&b.2, b.0)));
    Ok(admitted.into_iter().map(|(id, queue, _)| (id, queue)).collect())
}

/// Sequences with runs waiting for a slot (recovery's backstop).
pub(crate) async fn waiting_sequences(t: &Embedded) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT sequence FROM runs WHERE state = 'waiting' LIMIT 1000")
            .fetch_all(&t.pool)
            .await?,
    )
}

/// Applies `write` (an operator's retry: `failed -> running`) only if the
/// run's sequence has a free slot, decided and written in one `BEGIN
/// IMMEDIATE` transaction like any start; `Ok(Err(why))` when it has none.
pub(crate) async fn apply_within_limit(t: &Embedded, w: &Write<'_>) -> Result<std::result::Result<Written, String>> {
    t.turn()
        .await
        .inline(|c| {
            // Rolled back when dropped uncommitted (no free slot).
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let run = inline::first(
                &tx,
                "SELECT sequence, json_extract(snapshot, '$.concurrency') FROM runs WHERE id = $1",
                &[inline::uuid(w.run_id)],
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?)),
            )?;
            if let Some((sequence, Some(policy))) = run {
                let policy: Concurrency =
                    serde_json::from_str(&policy).map_err(|e| TrackerError::Corrupt(format!("concurrency: {e}")))?;
                if let Some(max) = policy.max_concurrent {
                    let holders = inline::all(&tx, HOLDERS, &[inline::text(sequence.as_str())], |row| {
                        Ok(Holder {
                            run_id: inline::get_uuid(row, 0)?,
                            stopping: row.get(1)?,
                        })
                    })?;
                    if policy::free_slots(&policy, holders.len()) == 0 {
                        let held_by = holders.first().map(|h| h.run_id.to_string()).unwrap_or_default();
                        return Ok(Err(format!(
                            "{sequence} has no free slot (max_concurrent {max}; run {held_by} holds it): \
                             retry once it ends"
                        )));
                    }
                }
            }
            let written = super::apply::apply_on(&tx, w)?;
            tx.commit()?;
            Ok(Ok(written))
        })
        .await
}

/// Inserts run `$1` in state `$3`, noted `$8`, at `$9` (bound by [`insert`]
/// through sqlx, by [`insert_queued_inline`] on the inline connection).
const INSERT: &str =
    "INSERT INTO runs (id, sequence, state, queue, trigger, snapshot, step_count, note, created_at, updated_at,
                       finished_at, schedule, logical_date)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, CASE WHEN $3 = 'skipped' THEN $9 END, $10, $11)";

async fn insert(conn: &mut SqliteConnection, run: &NewRun, state: &str, note: Option<&str>) -> Result<()> {
    let snapshot = serde_json::to_string(&run.snapshot).map_err(|e| TrackerError::Corrupt(e.to_string()))?;
    // The time is taken once the write lock is held (as PostgreSQL's
    // `clock_timestamp()`): first-in-first-out by `created_at` is the order
    // of admission.
    let at = now();
    sqlx::query(INSERT)
        .bind(run.id)
        .bind(&run.snapshot.sequence)
        .bind(state)
        .bind(&run.queue)
        .bind(strip_nul(&run.trigger))
        .bind(snapshot)
        .bind(run.snapshot.steps.len() as i32)
        .bind(note)
        .bind(at)
        .bind(&run.schedule)
        .bind(run.logical_date)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// [`insert`] of a `queued` run on the inline connection, inside the
/// caller's `BEGIN IMMEDIATE` transaction, at `at` (taken holding the
/// write lock, as there): the same statement and values in sqlx's
/// encodings, so the row reads alike.
pub(crate) fn insert_queued_inline(c: &rusqlite::Connection, run: &NewRun, at: DateTime<Utc>) -> Result<()> {
    let snapshot = serde_json::to_string(&run.snapshot).map_err(|e| TrackerError::Corrupt(e.to_string()))?;
    let values = [
        inline::uuid(run.id),
        inline::text(run.snapshot.sequence.as_str()),
        inline::text("queued"),
        inline::text(run.queue.as_str()),
        inline::text(strip_nul(&run.trigger)),
        inline::text(snapshot),
        inline::int(run.snapshot.steps.len() as i64),
        inline::Value::Null,
        inline::time(at),
        inline::opt(run.schedule.as_deref(), inline::text),
        inline::opt(run.logical_date, inline::time),
    ];
    inline::execute(c, INSERT, &values)?;
    Ok(())
}

async fn occupancy(tx: &mut SqliteConnection, sequence: &str) -> Result<Occupancy> {
    let holders = occupancy_holders(tx, sequence).await?;
    let waiting: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM runs WHERE sequence = $1 AND state = 'waiting' ORDER BY created_at, id LIMIT 10000",
    )
    .bind(sequence)
    .fetch_all(&mut *tx)
    .await?;
    Ok(Occupancy { holders, waiting })
}

/// The runs holding a slot (`$1`: the sequence), in id order (UUIDv7:
/// oldest first; BLOBs compare byte by byte, as PostgreSQL compares
/// `uuid`), each with whether it is stopping (canceled, a module still
/// running).
const HOLDERS: &str = "SELECT id, 0 FROM runs WHERE sequence = $1 AND state IN ('queued', 'running')
         UNION ALL
         SELECT DISTINCT r.id, 1 FROM executions e JOIN runs r ON r.id = e.run_id
          WHERE e.state = 'running' AND r.sequence = $1 AND r.state = 'canceled'
         ORDER BY 1";

/// [`HOLDERS`] of `sequence`.
async fn occupancy_holders(tx: &mut SqliteConnection, sequence: &str) -> Result<Vec<Holder>> {
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(HOLDERS).bind(sequence).fetch_all(&mut *tx).await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, stopping)| Holder { run_id, stopping })
        .collect())
}

/// Cancels runs to make room (their queued executions with them). One run
/// at a time where PostgreSQL takes `id = ANY($1)`: a `uuid[]` has no SQLite
/// form, and the loop is inside the caller's transaction.
async fn cancel_runs(tx: &mut SqliteConnection, runs: &[Uuid], note: &str) -> Result<()> {
    let at = now();
    for run in runs {
        let canceled = sqlx::query(
            "UPDATE runs SET state = 'canceled', note = $2, finished_at = $3, updated_at = $3
              WHERE id = $1 AND state IN ('waiting', 'queued', 'running')",
        )
        .bind(run)
        .bind(note)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        if canceled.rows_affected() == 1 {
            sqlx::query(
                "UPDATE executions SET state = 'canceled', finished_at = $2 WHERE run_id = $1 AND state = 'queued'",
            )
            .bind(run)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}
