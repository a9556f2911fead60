//! Schedule state and the slot ledger. A slot (schedule, fire time) is one
//! row whose primary key makes it fire once, however many schedulers run:
//! the row is written in the same transaction as the run it starts.

use crate::slots::{Admitted, NewRun, admit_in};
use crate::{Result, Tracker};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

/// Where a schedule stands, as every scheduler instance reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// When a scheduler first saw it: slots before are not caught up.
    pub first_seen: DateTime<Utc>,
    /// The newest slot with a fate recorded.
    pub last_slot: Option<DateTime<Utc>>,
    pub paused: bool,
}

/// One row of the ledger.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct SlotView {
    pub schedule: String,
    pub slot_at: DateTime<Utc>,
    pub fate: String,
    pub run_id: Option<Uuid>,
    pub note: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// The schedule's cursor, registering the schedule on first sight.
pub(crate) async fn schedule_cursor(t: &Tracker, name: &str) -> Result<Cursor> {
    let (first_seen, paused, last_slot): (DateTime<Utc>, bool, Option<DateTime<Utc>>) = sqlx::query_as(
        "WITH ins AS (
            INSERT INTO schedules (name) VALUES ($1) ON CONFLICT (name) DO NOTHING
         RETURNING first_seen, paused
         )
         SELECT coalesce((SELECT first_seen FROM ins), s.first_seen),
                coalesce((SELECT paused FROM ins), s.paused),
                (SELECT max(slot_at) FROM schedule_slots WHERE schedule = $1)
           FROM (SELECT 1) one LEFT JOIN schedules s ON s.name = $1",
    )
    .bind(name)
    .fetch_one(&t.pool)
    .await?;
    Ok(Cursor {
        first_seen,
        last_slot,
        paused,
    })
}

/// Records a slot that starts no run (coalesced, missed, paused); false if
/// its fate was recorded already.
pub(crate) async fn record_slot(
    t: &Tracker,
    schedule: &str,
    slot: DateTime<Utc>,
    fate: &str,
    note: Option<&str>,
) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO schedule_slots (schedule, slot_at, fate, note) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(schedule)
    .bind(slot)
    .bind(fate)
    .bind(note)
    .execute(&t.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Fires a slot: its ledger row and its run (admitted by the sequence's
/// concurrency policy) in one transaction. `None`: another scheduler fired
/// it already; nothing was written. A run the policy skips records the slot
/// as `skipped` with the reason.
pub(crate) async fn fire_slot(
    t: &Tracker,
    schedule: &str,
    slot: DateTime<Utc>,
    fate: &str,
    run: &NewRun,
) -> Result<Option<Admitted>> {
    let mut tx = t.pool.begin().await?;
    let claimed =
        sqlx::query("INSERT INTO schedule_slots (schedule, slot_at, fate) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(schedule)
            .bind(slot)
            .bind(fate)
            .execute(&mut *tx)
            .await?;
    if claimed.rows_affected() == 0 {
        return Ok(None);
    }
    let admitted = admit_in(&mut tx, run).await?;
    let (fate, note) = match &admitted {
        Admitted::Skipped(note) => ("skipped", Some(note.as_str())),
        _ => (fate, None),
    };
    sqlx::query("UPDATE schedule_slots SET fate = $3, note = $4, run_id = $5 WHERE schedule = $1 AND slot_at = $2")
        .bind(schedule)
        .bind(slot)
        .bind(fate)
        .bind(note)
        .bind(run.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(admitted))
}

/// The newest `limit` slots of a schedule, newest first.
pub(crate) async fn schedule_slots(t: &Tracker, schedule: &str, limit: i64) -> Result<Vec<SlotView>> {
    Ok(sqlx::query_as::<_, SlotView>(
        "SELECT schedule, slot_at, fate, run_id, note, recorded_at FROM schedule_slots
          WHERE schedule = $1 ORDER BY slot_at DESC LIMIT $2",
    )
    .bind(schedule)
    .bind(limit)
    .fetch_all(&t.pool)
    .await?)
}
