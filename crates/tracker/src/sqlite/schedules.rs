//! Mirrors `crate::schedules` (PostgreSQL) for the embedded store. The slot
//! ledger's primary key (schedule, slot_at) fires each slot once here too:
//! the ledger row and its run are written in one `BEGIN IMMEDIATE`
//! transaction.

use super::slots::admit_in;
use super::{Embedded, now};
use crate::Result;
use crate::schedules::{Cursor, LateSlot, ScheduleState, SlotView};
use crate::slots::{Admitted, NewRun};
use chrono::{DateTime, Utc};
use sqlx::FromRow;
use sqlx::types::Json;
use std::time::Duration;

/// Registers schedules on first sight (their `first_seen` is now: slots
/// before it are not caught up); those known already are left alone. The
/// names go in as one JSON array (PostgreSQL: `unnest` of an array).
pub(crate) async fn register_schedules(t: &Embedded, names: &[String]) -> Result<()> {
    // `WHERE true`: SQLite needs it to parse an upsert on an INSERT ... SELECT.
    t.write(async |c| {
        sqlx::query(
            "INSERT INTO schedules (name, first_seen) SELECT value, ?2 FROM json_each(?1) WHERE true
         ON CONFLICT (name) DO NOTHING",
        )
        .bind(Json(names))
        .bind(now())
        .execute(c)
        .await
    })
    .await?;
    Ok(())
}

/// The cursors of the registered schedules among `names`, in one query.
pub(crate) async fn schedule_cursors(t: &Embedded, names: &[String]) -> Result<Vec<(String, Cursor)>> {
    let rows: Vec<CursorRow> = sqlx::query_as(
        "SELECT s.name, s.first_seen, s.paused, s.paused_at, s.resumed_at,
                (SELECT max(slot_at) FROM schedule_slots WHERE schedule = s.name) AS last_slot
           FROM schedules s WHERE s.name IN (SELECT value FROM json_each(?1))",
    )
    .bind(Json(names))
    .fetch_all(&t.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let cursor = Cursor {
                first_seen: row.first_seen,
                last_slot: row.last_slot,
                paused: row.paused,
                paused_at: row.paused_at,
                resumed_at: row.resumed_at,
            };
            (row.name, cursor)
        })
        .collect())
}

/// One schedule's cursor, registering it on first sight.
pub(crate) async fn schedule_cursor(t: &Embedded, name: &str) -> Result<Cursor> {
    let names = [name.to_string()];
    register_schedules(t, &names).await?;
    let mut found = schedule_cursors(t, &names).await?;
    Ok(found.pop().map(|(_, c)| c).ok_or(sqlx::Error::RowNotFound)?)
}

#[derive(FromRow)]
struct CursorRow {
    name: String,
    first_seen: DateTime<Utc>,
    paused: bool,
    paused_at: Option<DateTime<Utc>>,
    resumed_at: Option<DateTime<Utc>>,
    last_slot: Option<DateTime<Utc>>,
}

/// Pauses a schedule (registering it if no scheduler saw it yet), noting
/// who and why; false if it was paused already.
pub(crate) async fn pause_schedule(t: &Embedded, name: &str, by: &str, note: &str) -> Result<bool> {
    let done = t
        .write(async |c| {
            sqlx::query(
                "INSERT INTO schedules (name, first_seen, paused, paused_by, paused_note, paused_at, resumed_at)
         VALUES (?1, ?4, 1, ?2, ?3, ?4, NULL)
         ON CONFLICT (name) DO UPDATE SET paused = 1, paused_by = ?2, paused_note = ?3,
                                          paused_at = ?4, resumed_at = NULL
          WHERE schedules.paused = 0",
            )
            .bind(name)
            .bind(by)
            .bind(note)
            .bind(now())
            .execute(c)
            .await
        })
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Resumes a paused schedule; false if it was not paused.
pub(crate) async fn resume_schedule(t: &Embedded, name: &str) -> Result<bool> {
    let done = t
        .write(async |c| {
            sqlx::query("UPDATE schedules SET paused = 0, resumed_at = ?2 WHERE name = ?1 AND paused")
                .bind(name)
                .bind(now())
                .execute(c)
                .await
        })
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Every schedule a scheduler has seen (or an operator paused), with its
/// newest slot. PostgreSQL's `LEFT JOIN LATERAL (.. LIMIT 1)` is a join on
/// the newest slot's key (its primary key).
pub(crate) async fn schedule_states(t: &Embedded) -> Result<Vec<ScheduleState>> {
    Ok(sqlx::query_as::<_, ScheduleState>(
        "SELECT s.name, s.first_seen, s.paused, s.paused_by, s.paused_note, s.paused_at,
                l.slot_at AS last_slot, l.fate AS last_fate, l.run_id AS last_run,
                l.late_at IS NOT NULL AS last_late
           FROM schedules s
           LEFT JOIN schedule_slots l
                  ON l.schedule = s.name
                 AND l.slot_at = (SELECT max(slot_at) FROM schedule_slots WHERE schedule = s.name)
          ORDER BY s.name",
    )
    .fetch_all(&t.pool)
    .await?)
}

/// Records a slot that starts no run (coalesced, missed, paused); false if
/// its fate was recorded already. A missed slot records `slot_missed` in
/// the same transaction (PostgreSQL: the same statement), so it is told
/// once, with the ledger row.
pub(crate) async fn record_slot(
    t: &Embedded,
    schedule: &str,
    slot: DateTime<Utc>,
    fate: &str,
    note: Option<&str>,
) -> Result<bool> {
    let mut tx = t.begin().await?;
    let recorded = sqlx::query(
        "INSERT INTO schedule_slots (schedule, slot_at, fate, note, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT DO NOTHING",
    )
    .bind(schedule)
    .bind(slot)
    .bind(fate)
    .bind(note)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    if recorded.rows_affected() == 0 {
        return Ok(false);
    }
    if fate == "missed" {
        let event = crate::events::NewEvent {
            kind: "slot_missed".into(),
            schedule: Some(schedule.to_string()),
            slot_at: Some(slot),
            message: note.map(str::to_string),
            ..Default::default()
        };
        super::events::insert_on(&mut tx, &event).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Fires a slot: its ledger row and its run (admitted by the sequence's
/// concurrency policy) in one transaction. `None`: another scheduler fired
/// it already; nothing was written. A run the policy skips records the slot
/// as `skipped` with the reason.
pub(crate) async fn fire_slot(
    t: &Embedded,
    schedule: &str,
    slot: DateTime<Utc>,
    fate: &str,
    run: &NewRun,
) -> Result<Option<Admitted>> {
    let mut tx = t.begin().await?;
    let claimed = sqlx::query(
        "INSERT INTO schedule_slots (schedule, slot_at, fate, recorded_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
    )
    .bind(schedule)
    .bind(slot)
    .bind(fate)
    .bind(now())
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
    sqlx::query("UPDATE schedule_slots SET fate = ?3, note = ?4, run_id = ?5 WHERE schedule = ?1 AND slot_at = ?2")
        .bind(schedule)
        .bind(slot)
        .bind(fate)
        .bind(note)
        .bind(run.id)
        .execute(&mut *tx)
        .await?;
    if let Admitted::Skipped(note) = &admitted {
        let event = crate::events::NewEvent {
            kind: "slot_skipped".into(),
            sequence: Some(run.snapshot.sequence.clone()),
            run_id: Some(run.id),
            schedule: Some(schedule.to_string()),
            slot_at: Some(slot),
            message: Some(note.clone()),
            ..Default::default()
        };
        super::events::insert_on(&mut tx, &event).await?;
    }
    tx.commit().await?;
    Ok(Some(admitted))
}

/// The newest `limit` slots of a schedule, newest first.
pub(crate) async fn schedule_slots(t: &Embedded, schedule: &str, limit: i64) -> Result<Vec<SlotView>> {
    Ok(sqlx::query_as::<_, SlotView>(
        "SELECT schedule, slot_at, fate, run_id, note, recorded_at, late_at FROM schedule_slots
          WHERE schedule = ?1 ORDER BY slot_at DESC LIMIT ?2",
    )
    .bind(schedule)
    .bind(limit)
    .fetch_all(&t.pool)
    .await?)
}

/// Flags (once) the slots whose run is still `queued` or `waiting` more
/// than `after` after the slot was recorded; returns them. It starts from
/// the runs that have not started (few), not from the ledger. SQLite's
/// RETURNING may not name the joined `runs`, so the run's state comes from
/// a subquery and the join is an `IN`.
pub(crate) async fn flag_late_slots(t: &Embedded, after: Duration) -> Result<Vec<LateSlot>> {
    let now = now();
    let cutoff = chrono::Duration::from_std(after)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    Ok(t.write(async |c| {
        sqlx::query_as::<_, LateSlot>(
            "UPDATE schedule_slots SET late_at = ?1
          WHERE run_id IN (SELECT id FROM runs WHERE state IN ('queued', 'waiting') AND schedule IS NOT NULL)
            AND late_at IS NULL
            AND fate IN ('started', 'backfilled')
            AND recorded_at < ?2
      RETURNING schedule, slot_at, run_id,
                (SELECT r.state FROM runs r WHERE r.id = schedule_slots.run_id) AS state",
        )
        .bind(now)
        .bind(cutoff)
        .fetch_all(c)
        .await
    })
    .await?)
}
