//! Mirrors `crate::events` (PostgreSQL) for the embedded store: the same
//! statements, in the same order; where PostgreSQL writes several tables in
//! one statement (data-modifying CTEs), this is one `BEGIN IMMEDIATE`
//! transaction of several statements, with the same atomicity.

use super::{Embedded, now};
use crate::Result;
use crate::events::{AttemptRecord, DeliveryView, DueDelivery, EventRow, HeldGroup, NewEvent, Route};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{FromRow, SqliteConnection};
use std::time::Duration;
use uuid::Uuid;

const EVENT_COLUMNS: &str = "e.id, e.kind, e.at, e.sequence, e.run_id, e.step, e.attempt, e.schedule, e.slot_at, \
                             e.worker_id, e.message, e.detail";

/// Records an event on `conn`: inside a caller's transaction, so it commits
/// (or not) with the change that caused it. Returns its id.
pub(crate) async fn insert_on(conn: &mut sqlx::SqliteConnection, e: &NewEvent) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO events (kind, sequence, run_id, step, attempt, schedule, slot_at, worker_id, message, detail, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING id",
    )
    .bind(&e.kind)
    .bind(&e.sequence)
    .bind(e.run_id)
    .bind(e.step.map(|s| s as i32))
    .bind(e.attempt.map(|a| a as i32))
    .bind(&e.schedule)
    .bind(e.slot_at)
    .bind(e.worker_id)
    .bind(e.message.as_deref().map(crate::runs::strip_nul))
    .bind(if e.detail.is_null() {
        serde_json::json!({})
    } else {
        e.detail.clone()
    })
    .bind(now())
    .fetch_one(conn)
    .await?)
}

pub(crate) async fn record_event(t: &Embedded, event: &NewEvent) -> Result<i64> {
    t.write(async |c| insert_on(c, event).await).await
}

#[derive(FromRow)]
struct LostRow {
    id: Uuid,
    host: String,
    pid: i64,
    heartbeat_at: DateTime<Utc>,
}

/// Marks the workers silent for longer than `silent_for` (and not stopped)
/// as lost, once per silence, and records a `worker_lost` for each. Returns
/// them (id, host). PostgreSQL's one statement (an UPDATE and an INSERT in
/// CTEs) is one `BEGIN IMMEDIATE` transaction of both here: same atomicity.
pub(crate) async fn mark_lost_workers(t: &Embedded, silent_for: Duration) -> Result<Vec<(Uuid, String)>> {
    let now = now();
    let mut tx = t.begin().await?;
    let lost: Vec<LostRow> = sqlx::query_as(
        "UPDATE workers SET lost_at = ?1
          WHERE state <> 'stopped' AND heartbeat_at < ?2
            AND (lost_at IS NULL OR lost_at < heartbeat_at)
      RETURNING id, host, pid, heartbeat_at",
    )
    .bind(now)
    .bind(now - span(silent_for))
    .fetch_all(&mut *tx)
    .await?;
    for w in &lost {
        let runs = held_steps(&mut tx, w.id, None).await?;
        let event = NewEvent {
            kind: "worker_lost".into(),
            worker_id: Some(w.id),
            message: Some(format!("no heartbeat since {} UTC", w.heartbeat_at.format("%H:%M:%S"))),
            // "+00:00" as PostgreSQL's jsonb writes a timestamptz.
            detail: serde_json::json!({
                "host": w.host,
                "pid": w.pid,
                "heartbeat_at": w.heartbeat_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false),
                "runs": runs,
            }),
            ..Default::default()
        };
        insert_on(&mut tx, &event).await?;
    }
    tx.commit().await?;
    Ok(lost.into_iter().map(|w| (w.id, w.host)).collect())
}

/// The steps a worker holds (`running` executions; with `lease_ended_at`,
/// only those whose lease ended at that instant), as the `runs` of a
/// `worker_lost` event: run, sequence, step counted from 1, attempt; in
/// PostgreSQL's `jsonb_agg` order (run, step).
pub(crate) async fn held_steps(
    tx: &mut sqlx::SqliteConnection,
    worker_id: Uuid,
    lease_ended_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<serde_json::Value>> {
    let rows: Vec<(Uuid, String, i64, i64)> = sqlx::query_as(
        "SELECT x.run_id, r.sequence, x.step, x.attempt
           FROM executions x JOIN runs r ON r.id = x.run_id
          WHERE x.worker_id = ?1 AND x.state = 'running' AND (?2 IS NULL OR x.lease_until = ?2)
          ORDER BY x.run_id, x.step",
    )
    .bind(worker_id)
    .bind(lease_ended_at)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, sequence, step, attempt)| {
            serde_json::json!({"run_id": run_id, "sequence": sequence, "step": step + 1, "attempt": attempt})
        })
        .collect())
}

/// Takes or extends the single sender lease; false if another holds it.
pub(crate) async fn take_alert_lease(t: &Embedded, worker_id: Uuid, ttl: Duration) -> Result<bool> {
    let now = now();
    let done = t
        .write(async |c| {
            sqlx::query(
                "UPDATE alert_lease SET holder = ?1, until = ?2
          WHERE id = 1 AND (holder = ?1 OR until < ?3)",
            )
            .bind(worker_id)
            .bind(now + span(ttl))
            .bind(now)
            .execute(c)
            .await
        })
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The oldest events not routed yet.
pub(crate) async fn unrouted_events(t: &Embedded, limit: i64) -> Result<Vec<EventRow>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.routed_at IS NULL ORDER BY e.id LIMIT ?1");
    Ok(sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(&t.pool)
        .await?)
}

/// When the last delivery of each (target, kind, subject) was let go (at
/// once, or a held one when its period ended), answered yet or not. The
/// keys go in as one JSON array of triples (PostgreSQL: three arrays and
/// `unnest`).
pub(crate) async fn last_sent(
    t: &Embedded,
    keys: &[(String, String, String)],
) -> Result<Vec<(String, String, String, DateTime<Utc>)>> {
    Ok(sqlx::query_as(
        "SELECT target, kind, subject, released_at FROM (
            SELECT k.target, k.kind, k.subject,
                   (SELECT max(d.released_at) FROM alert_deliveries d
                     WHERE d.target = k.target AND d.kind = k.kind AND d.subject = k.subject
                       AND d.released_at IS NOT NULL) AS released_at
              FROM (SELECT value ->> 0 AS target, value ->> 1 AS kind, value ->> 2 AS subject
                      FROM json_each(?1)) k)
          WHERE released_at IS NOT NULL",
    )
    .bind(Json(keys))
    .fetch_all(&t.pool)
    .await?)
}

/// Writes the deliveries decided for `events` and marks them routed, in
/// one transaction. A delivery that goes now takes whatever was held for
/// its target, kind and subject, counted into it. A delivery that exists
/// already (another sender routed it) is left alone.
pub(crate) async fn route_events(t: &Embedded, events: &[i64], routes: &[Route]) -> Result<()> {
    let now = now();
    // BEGIN IMMEDIATE: a second sender routing the same events waits for
    // this one, then finds them routed.
    let mut tx = t.begin().await?;
    let mine: Vec<i64> = sqlx::query_scalar(
        "UPDATE events SET routed_at = ?1
          WHERE id IN (SELECT value FROM json_each(?2)) AND routed_at IS NULL RETURNING id",
    )
    .bind(now)
    .bind(Json(events))
    .fetch_all(&mut *tx)
    .await?;
    for r in routes.iter().filter(|r| mine.contains(&r.event_id)) {
        let inserted = sqlx::query(
            "INSERT INTO alert_deliveries (event_id, target, kind, subject, state, url, released_at, next_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN ?5 = 'pending' THEN ?7 END, ?7, ?7) ON CONFLICT DO NOTHING",
        )
        .bind(r.event_id)
        .bind(&r.target)
        .bind(&r.kind)
        .bind(&r.subject)
        .bind(if r.held { "held" } else { "pending" })
        .bind(&r.url)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 && !r.held {
            fold_held_into(&mut tx, &r.target, &r.kind, &r.subject, r.event_id, now).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Folds the held deliveries of (target, kind, subject) into the delivery
/// of event `into`, which counts them. PostgreSQL's one statement of CTEs
/// is three statements of the caller's transaction here; the count and the
/// oldest folded event's time are computed from what the first returns.
async fn fold_held_into(
    tx: &mut SqliteConnection,
    target: &str,
    kind: &str,
    subject: &str,
    into: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    // RETURNING may not name another table: the event's time comes from a
    // subquery.
    let folded: Vec<(DateTime<Utc>,)> = sqlx::query_as(
        "UPDATE alert_deliveries SET state = 'folded', folded_into = ?4, finished_at = ?5
          WHERE target = ?1 AND kind = ?2 AND subject = ?3 AND state = 'held' AND event_id <> ?4
      RETURNING (SELECT e.at FROM events e WHERE e.id = event_id)",
    )
    .bind(target)
    .bind(kind)
    .bind(subject)
    .bind(into)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let Some(since) = folded.iter().map(|(at,)| *at).min() else {
        return Ok(());
    };
    let n = folded.len() as i64;
    sqlx::query(
        "INSERT INTO alert_counts (target, outcome, n) VALUES (?1, 'folded', ?2)
         ON CONFLICT (target, outcome) DO UPDATE SET n = alert_counts.n + excluded.n",
    )
    .bind(target)
    .bind(n)
    .execute(&mut *tx)
    .await?;
    // min() of SQLite is NULL when either side is (PostgreSQL's least()
    // skips NULLs): hence the coalesce.
    sqlx::query(
        "UPDATE alert_deliveries SET folded = folded + ?3, folded_since = min(coalesce(folded_since, ?4), ?4)
          WHERE event_id = ?1 AND target = ?2",
    )
    .bind(into)
    .bind(target)
    .bind(n)
    .bind(since)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Every (target, kind, subject) with held deliveries, with when its last
/// delivery was let go.
pub(crate) async fn held_groups(t: &Embedded) -> Result<Vec<HeldGroup>> {
    Ok(sqlx::query_as::<_, HeldGroup>(
        "SELECT h.target, h.kind, h.subject, h.count,
                (SELECT max(released_at) FROM alert_deliveries d
                  WHERE d.target = h.target AND d.kind = h.kind AND d.subject = h.subject
                    AND d.released_at IS NOT NULL) AS last_sent
           FROM (SELECT target, kind, subject, count(*) AS count FROM alert_deliveries
                  WHERE state = 'held' GROUP BY 1, 2, 3) h",
    )
    .fetch_all(&t.pool)
    .await?)
}

/// Sends the newest held delivery of (target, kind, subject) with the
/// others counted into it. False if none was held any more. (PostgreSQL's
/// `FOR UPDATE SKIP LOCKED` is unnecessary: `BEGIN IMMEDIATE` makes this
/// transaction the only writer.)
pub(crate) async fn flush_held(t: &Embedded, target: &str, kind: &str, subject: &str) -> Result<bool> {
    let now = now();
    let mut tx = t.begin().await?;
    let newest: Option<i64> = sqlx::query_scalar(
        "UPDATE alert_deliveries SET state = 'pending', next_at = ?4, released_at = ?4
          WHERE (event_id, target) = (SELECT event_id, target FROM alert_deliveries
                                       WHERE target = ?1 AND kind = ?2 AND subject = ?3 AND state = 'held'
                                       ORDER BY event_id DESC LIMIT 1)
         RETURNING event_id",
    )
    .bind(target)
    .bind(kind)
    .bind(subject)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(newest) = newest else {
        return Ok(false);
    };
    fold_held_into(&mut tx, target, kind, subject, newest, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// Claims up to `limit` due deliveries for one attempt each: their attempt
/// count goes up and they are this worker's for `hold` (an attempt that
/// outlives it may be made again by another sender). PostgreSQL's UPDATE in
/// a CTE joined with the events is an UPDATE then a SELECT of what it
/// claimed, in one `BEGIN IMMEDIATE` transaction (which also makes
/// `FOR UPDATE SKIP LOCKED` unnecessary).
pub(crate) async fn claim_deliveries(
    t: &Embedded,
    worker_id: Uuid,
    limit: i64,
    hold: Duration,
) -> Result<Vec<DueDelivery>> {
    let now = now();
    let mut tx = t.begin().await?;
    let claimed: Vec<(i64, String)> = sqlx::query_as(
        "UPDATE alert_deliveries
            SET attempts = attempts + 1, claimed_by = ?1, claimed_until = ?3
          WHERE (event_id, target) IN (
                SELECT event_id, target FROM alert_deliveries
                 WHERE state = 'pending' AND next_at <= ?4
                   AND (claimed_until IS NULL OR claimed_until < ?4)
                 ORDER BY next_at LIMIT ?2)
      RETURNING event_id, target",
    )
    .bind(worker_id)
    .bind(limit)
    .bind(now + span(hold))
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {EVENT_COLUMNS}, d.target, d.attempts AS attempt, d.url, d.folded, d.folded_since
           FROM alert_deliveries d JOIN events e ON e.id = d.event_id
          WHERE (d.event_id, d.target) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1))
          ORDER BY e.id"
    );
    let due = sqlx::query_as::<_, DueDelivery>(sqlx::AssertSqlSafe(sql))
        .bind(Json(&claimed))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(due)
}

/// Records one attempt and its outcome, if the delivery is still this
/// worker's claim at that attempt (compare-and-set); counts it for
/// `/metrics` in the same transaction (PostgreSQL: the same statement).
/// False if the claim was lost.
pub(crate) async fn record_attempt(t: &Embedded, a: &AttemptRecord<'_>) -> Result<bool> {
    let now = now();
    let response = crate::runs::strip_nul(a.response);
    let mut tx = t.begin().await?;
    let done = sqlx::query(
        "UPDATE alert_deliveries SET
            state = CASE ?5 WHEN 'retry' THEN 'pending' ELSE ?5 END,
            next_at = CASE ?5 WHEN 'retry' THEN ?9 ELSE next_at END,
            sent_at = CASE ?5 WHEN 'sent' THEN ?8 END,
            finished_at = CASE ?5 WHEN 'retry' THEN NULL ELSE ?8 END,
            claimed_by = NULL, claimed_until = NULL,
            last_status = ?6, last_error = CASE ?5 WHEN 'sent' THEN NULL ELSE ?7 END
          WHERE event_id = ?1 AND target = ?2 AND claimed_by = ?3 AND attempts = ?4 AND state = 'pending'",
    )
    .bind(a.event_id)
    .bind(a.target)
    .bind(a.worker_id)
    .bind(a.attempt)
    .bind(a.outcome)
    .bind(a.status)
    .bind(&response)
    .bind(now)
    .bind(now + span(a.retry_in.unwrap_or_default()))
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO alert_attempts (event_id, target, attempt, outcome, status, response, elapsed_ms, worker_id, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .bind(a.event_id)
    .bind(a.target)
    .bind(a.attempt)
    .bind(a.outcome)
    .bind(a.status)
    .bind(&response)
    .bind(a.elapsed.as_secs_f64() * 1000.0)
    .bind(a.worker_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO alert_counts (target, outcome, n) VALUES (?1, ?2, 1)
         ON CONFLICT (target, outcome) DO UPDATE SET n = alert_counts.n + 1",
    )
    .bind(a.target)
    .bind(a.outcome)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The newest `limit` deliveries, newest first.
pub(crate) async fn recent_deliveries(t: &Embedded, limit: i64) -> Result<Vec<DeliveryView>> {
    Ok(sqlx::query_as::<_, DeliveryView>(
        "SELECT d.event_id, d.target, d.kind, d.subject, d.state, d.attempts, d.folded, d.created_at,
                d.sent_at, d.next_at, d.last_status, d.last_error, e.run_id, e.message
           FROM alert_deliveries d JOIN events e ON e.id = d.event_id
          ORDER BY d.created_at DESC, d.event_id DESC LIMIT ?1",
    )
    .bind(limit)
    .fetch_all(&t.pool)
    .await?)
}

/// Attempts by target and outcome, since the store was made.
pub(crate) async fn alert_counts(t: &Embedded) -> Result<Vec<(String, String, i64)>> {
    Ok(
        sqlx::query_as("SELECT target, outcome, n FROM alert_counts ORDER BY target, outcome")
            .fetch_all(&t.pool)
            .await?,
    )
}

/// A run's events, oldest first (tests and the run page).
pub(crate) async fn run_events(t: &Embedded, run_id: Uuid) -> Result<Vec<EventRow>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.run_id = ?1 ORDER BY e.id");
    Ok(sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(sql))
        .bind(run_id)
        .fetch_all(&t.pool)
        .await?)
}

/// The newest `limit` events of any kind, newest first.
pub(crate) async fn recent_events(t: &Embedded, limit: i64) -> Result<Vec<EventRow>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e ORDER BY e.id DESC LIMIT ?1");
    Ok(sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(&t.pool)
        .await?)
}

/// A `std` duration as chrono's, for `now + d` (saturating at a century).
fn span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(36_500))
}
