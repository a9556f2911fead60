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
    /// The last pause: from, and to (`None` while it lasts).
    pub paused_at: Option<DateTime<Utc>>,
    pub resumed_at: Option<DateTime<Utc>>,
}

impl Cursor {
    /// Whether `slot` falls in the schedule's (last) pause.
    pub fn in_pause(&self, slot: DateTime<Utc>) -> bool {
        match (self.paused, self.paused_at, self.resumed_at) {
            (true, _, _) => true,
            (false, Some(from), Some(to)) => slot > from && slot <= to,
            _ => false,
        }
    }
}

/// A schedule's recorded state, for `scheduler schedules` and the UI.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct ScheduleState {
    pub name: String,
    pub first_seen: DateTime<Utc>,
    pub paused: bool,
    pub paused_by: Option<String>,
    pub paused_note: Option<String>,
    pub paused_at: Option<DateTime<Utc>>,
    pub last_slot: Option<DateTime<Utc>>,
    pub last_fate: Option<String>,
    pub last_run: Option<Uuid>,
    /// The newest slot's run had not started a while after it fired.
    pub last_late: Option<bool>,
}

/// One row of the ledger.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct SlotView {
    pub schedule: String,
    pub slot_at: DateTime<Utc>,
    pub fate: String,
    pub run_id: Option<Uuid>,
    pub note: Option<String>,
    pub recorded_at: DateTime<Utc>,
    /// Its run had not started a while after the slot: flagged then.
    pub late_at: Option<DateTime<Utc>>,
}

/// Registers schedules on first sight (their `first_seen` is now: slots
/// before it are not caught up); those known already are left alone.
pub(crate) async fn register_schedules(t: &Tracker, names: &[String]) -> Result<()> {
    sqlx::query("INSERT INTO schedules (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING")
        .bind(names)
        .execute(&t.pool)
        .await?;
    Ok(())
}

/// The cursors of the registered schedules among `names`, in one query.
pub(crate) async fn schedule_cursors(t: &Tracker, names: &[String]) -> Result<Vec<(String, Cursor)>> {
    let rows: Vec<CursorRow> = sqlx::query_as(
        "SELECT s.name, s.first_seen, s.paused, s.paused_at, s.resumed_at,
                (SELECT max(slot_at) FROM schedule_slots WHERE schedule = s.name) AS last_slot
           FROM schedules s WHERE s.name = ANY($1)",
    )
    .bind(names)
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
pub(crate) async fn schedule_cursor(t: &Tracker, name: &str) -> Result<Cursor> {
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
pub(crate) async fn pause_schedule(t: &Tracker, name: &str, by: &str, note: &str) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO schedules (name, paused, paused_by, paused_note, paused_at, resumed_at)
         VALUES ($1, true, $2, $3, now(), NULL)
         ON CONFLICT (name) DO UPDATE SET paused = true, paused_by = $2, paused_note = $3,
                                          paused_at = now(), resumed_at = NULL
          WHERE schedules.paused = false",
    )
    .bind(name)
    .bind(by)
    .bind(note)
    .execute(&t.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Resumes a paused schedule; false if it was not paused.
pub(crate) async fn resume_schedule(t: &Tracker, name: &str) -> Result<bool> {
    let done = sqlx::query("UPDATE schedules SET paused = false, resumed_at = now() WHERE name = $1 AND paused")
        .bind(name)
        .execute(&t.pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Every schedule a scheduler has seen (or an operator paused), with its
/// newest slot.
pub(crate) async fn schedule_states(t: &Tracker) -> Result<Vec<ScheduleState>> {
    Ok(sqlx::query_as::<_, ScheduleState>(
        "SELECT s.name, s.first_seen, s.paused, s.paused_by, s.paused_note, s.paused_at,
                l.slot_at AS last_slot, l.fate AS last_fate, l.run_id AS last_run,
                l.late_at IS NOT NULL AS last_late
           FROM schedules s
           LEFT JOIN LATERAL (SELECT slot_at, fate, run_id, late_at FROM schedule_slots
                               WHERE schedule = s.name ORDER BY slot_at DESC LIMIT 1) l ON true
          ORDER BY s.name",
    )
    .fetch_all(&t.pool)
    .await?)
}

/// Records a slot that starts no run (coalesced, missed, paused); false if
/// its fate was recorded already. A missed slot records `slot_missed` in
/// the same statement, so it is told once, with the ledger row.
pub(crate) async fn record_slot(
    t: &Tracker,
    schedule: &str,
    slot: DateTime<Utc>,
    fate: &str,
    note: Option<&str>,
) -> Result<bool> {
    let (recorded,): (i64,) = sqlx::query_as(
        "WITH s AS (
            INSERT INTO schedule_slots (schedule, slot_at, fate, note) VALUES ($1, $2, $3, $4)
            ON CONFLICT DO NOTHING
         RETURNING schedule, slot_at
         ), ev AS (
            INSERT INTO events (kind, schedule, slot_at, message)
            SELECT 'slot_missed', schedule, slot_at, $4 FROM s WHERE $3 = 'missed'
         )
         SELECT count(*) FROM s",
    )
    .bind(schedule)
    .bind(slot)
    .bind(fate)
    .bind(note)
    .fetch_one(&t.pool)
    .await?;
    Ok(recorded == 1)
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
        crate::events::insert_on(&mut *tx, &event).await?;
    }
    tx.commit().await?;
    Ok(Some(admitted))
}

/// The newest `limit` slots of a schedule, newest first.
pub(crate) async fn schedule_slots(t: &Tracker, schedule: &str, limit: i64) -> Result<Vec<SlotView>> {
    Ok(sqlx::query_as::<_, SlotView>(
        "SELECT schedule, slot_at, fate, run_id, note, recorded_at, late_at FROM schedule_slots
          WHERE schedule = $1 ORDER BY slot_at DESC LIMIT $2",
    )
    .bind(schedule)
    .bind(limit)
    .fetch_all(&t.pool)
    .await?)
}

/// A slot flagged late: its run had not started `after` its recording.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LateSlot {
    pub schedule: String,
    pub slot_at: DateTime<Utc>,
    pub run_id: Uuid,
    pub state: String,
}

/// Flags (once) the slots whose run is still `queued` or `waiting` more
/// than `after` after the slot was recorded; returns them. It starts from
/// the runs that have not started (few), not from the ledger (every slot
/// ever fired).
pub(crate) async fn flag_late_slots(t: &Tracker, after: std::time::Duration) -> Result<Vec<LateSlot>> {
    Ok(sqlx::query_as::<_, LateSlot>(
        "UPDATE schedule_slots s SET late_at = now()
           FROM runs r
          WHERE r.state IN ('queued', 'waiting') AND r.schedule IS NOT NULL
            AND s.run_id = r.id AND s.late_at IS NULL
            AND s.fate IN ('started', 'backfilled')
            AND s.recorded_at < now() - make_interval(secs => $1)
      RETURNING s.schedule, s.slot_at, r.id AS run_id, r.state",
    )
    .bind(after.as_secs_f64())
    .fetch_all(&t.pool)
    .await?)
}
