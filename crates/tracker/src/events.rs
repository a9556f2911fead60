//! Events and their deliveries: what alerts are made of. An event is
//! recorded in the same statement (or transaction) as the state change that
//! causes it: `apply.rs` for a failed run, a recovered sequence, a step
//! waiting to retry and the healthcheck pings of a run; `schedules.rs` for
//! a missed or skipped slot; [`mark_lost_workers`] for a lost worker; and
//! [`record_event`] / [`insert_on`] for any other (a stalled step, recorded
//! by whoever marks it stalled, inside its own statement or transaction).
//!
//! The sender (one worker at a time, under `alert_lease`) routes each new
//! event to the targets that want it (one `alert_deliveries` row per event
//! and target: the primary key is what delivers an event once per target,
//! however many senders run), then claims due deliveries with
//! `FOR UPDATE SKIP LOCKED` and records each attempt with a compare-and-set
//! on its claim.

use crate::{Result, Tracker};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use std::time::Duration;
use uuid::Uuid;

/// An event to record.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// `step_stalled`, `run_failed`, ... (the `events.kind` check lists them).
    pub kind: String,
    pub sequence: Option<String>,
    pub run_id: Option<Uuid>,
    pub step: Option<u32>,
    pub attempt: Option<u32>,
    pub schedule: Option<String>,
    pub slot_at: Option<DateTime<Utc>>,
    pub worker_id: Option<Uuid>,
    pub message: Option<String>,
    /// Anything else a message should say (`module`, ...).
    pub detail: serde_json::Value,
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, FromRow)]
pub struct EventRow {
    pub id: i64,
    pub kind: String,
    pub at: DateTime<Utc>,
    pub sequence: Option<String>,
    pub run_id: Option<Uuid>,
    pub step: Option<i32>,
    pub attempt: Option<i32>,
    pub schedule: Option<String>,
    pub slot_at: Option<DateTime<Utc>>,
    pub worker_id: Option<Uuid>,
    pub message: Option<String>,
    pub detail: serde_json::Value,
}

/// A delivery the sender decided on for a new event.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub event_id: i64,
    pub target: String,
    pub kind: String,
    pub subject: String,
    /// Held by the target's `max_frequency` (else sent).
    pub held: bool,
    /// A healthcheck ping's URL.
    pub url: Option<String>,
}

/// The events held for one target, kind and subject.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct HeldGroup {
    pub target: String,
    pub kind: String,
    pub subject: String,
    pub count: i64,
    /// When the last one of this kind and subject went to the target.
    pub last_sent: Option<DateTime<Utc>>,
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, FromRow)]
pub struct DueDelivery {
    #[sqlx(flatten)]
    pub event: EventRow,
    pub target: String,
    /// This attempt's number, from 1.
    pub attempt: i32,
    pub url: Option<String>,
    pub folded: i32,
    pub folded_since: Option<DateTime<Utc>>,
}

/// How an attempt went, to record.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    pub event_id: i64,
    pub target: &'a str,
    pub worker_id: Uuid,
    pub attempt: i32,
    /// `sent`, `retry` or `failed`.
    pub outcome: &'a str,
    pub status: Option<i32>,
    pub response: &'a str,
    pub elapsed: Duration,
    /// With `retry`: when to try again.
    pub retry_in: Option<Duration>,
}

/// One delivery as the CLI and the UI list it.
#[derive(Debug, Clone, Serialize, FromRow, utoipa::ToSchema)]
pub struct DeliveryView {
    pub event_id: i64,
    pub target: String,
    pub kind: String,
    pub subject: String,
    pub state: String,
    pub attempts: i32,
    pub folded: i32,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub next_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub run_id: Option<Uuid>,
    pub message: Option<String>,
}

const EVENT_COLUMNS: &str = "e.id, e.kind, e.at, e.sequence, e.run_id, e.step, e.attempt, e.schedule, e.slot_at, \
                             e.worker_id, e.message, e.detail";

/// Records an event on `executor`: inside a caller's transaction, so it
/// commits (or not) with the change that caused it. Returns its id.
pub async fn insert_on<'e>(executor: impl sqlx::PgExecutor<'e>, e: &NewEvent) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO events (kind, sequence, run_id, step, attempt, schedule, slot_at, worker_id, message, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
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
    .fetch_one(executor)
    .await?)
}

pub(crate) async fn record_event(t: &Tracker, e: &NewEvent) -> Result<i64> {
    insert_on(&t.pool, e).await
}

/// Marks the workers silent for longer than `silent_for` (and not stopped)
/// as lost, once per silence, and records a `worker_lost` for each in the
/// same statement, with the steps it still holds (`runs`: run, sequence,
/// step counted from 1, attempt). A worker whose keeper reported its death
/// was marked then (`workers::worker_died`) and is not told twice. Returns
/// them (id, host).
pub(crate) async fn mark_lost_workers(t: &Tracker, silent_for: Duration) -> Result<Vec<(Uuid, String)>> {
    Ok(sqlx::query_as(
        "WITH lost AS (
            UPDATE workers SET lost_at = now()
             WHERE state <> 'stopped' AND heartbeat_at < now() - make_interval(secs => $1)
               AND (lost_at IS NULL OR lost_at < heartbeat_at)
         RETURNING id, host, pid, heartbeat_at
         ), ev AS (
            INSERT INTO events (kind, worker_id, message, detail)
            SELECT 'worker_lost', l.id, 'no heartbeat since ' || to_char(l.heartbeat_at AT TIME ZONE 'UTC', 'HH24:MI:SS') || ' UTC',
                   jsonb_build_object('host', l.host, 'pid', l.pid, 'heartbeat_at', l.heartbeat_at,
                                      'runs', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                                   'run_id', x.run_id, 'sequence', r.sequence,
                                                   'step', x.step + 1, 'attempt', x.attempt)
                                                   ORDER BY x.run_id, x.step), '[]'::jsonb)
                                                 FROM executions x JOIN runs r ON r.id = x.run_id
                                                WHERE x.worker_id = l.id AND x.state = 'running'))
              FROM lost l
         )
         SELECT id, host FROM lost",
    )
    .bind(silent_for.as_secs_f64())
    .fetch_all(&t.pool)
    .await?)
}

/// Takes or extends the single sender lease; false if another holds it.
pub(crate) async fn take_alert_lease(t: &Tracker, worker_id: Uuid, ttl: Duration) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE alert_lease SET holder = $1, until = now() + make_interval(secs => $2)
          WHERE id = 1 AND (holder = $1 OR until < now())",
    )
    .bind(worker_id)
    .bind(ttl.as_secs_f64())
    .execute(&t.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The oldest events not routed yet.
pub(crate) async fn unrouted_events(t: &Tracker, limit: i64) -> Result<Vec<EventRow>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.routed_at IS NULL ORDER BY e.id LIMIT $1");
    Ok(sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(&t.pool)
        .await?)
}

/// When the last delivery of each (target, kind, subject) was let go (at
/// once, or a held one when its period ended), answered yet or not.
pub(crate) async fn last_sent(
    t: &Tracker,
    keys: &[(String, String, String)],
) -> Result<Vec<(String, String, String, DateTime<Utc>)>> {
    let (targets, kinds, subjects): (Vec<_>, Vec<_>, Vec<_>) = keys.iter().cloned().collect();
    Ok(sqlx::query_as(
        "SELECT k.target, k.kind, k.subject, s.released_at
           FROM unnest($1::text[], $2::text[], $3::text[]) AS k(target, kind, subject)
           JOIN LATERAL (SELECT released_at FROM alert_deliveries d
                          WHERE d.target = k.target AND d.kind = k.kind AND d.subject = k.subject
                            AND d.released_at IS NOT NULL
                          ORDER BY d.released_at DESC LIMIT 1) s ON true",
    )
    .bind(&targets)
    .bind(&kinds)
    .bind(&subjects)
    .fetch_all(&t.pool)
    .await?)
}

/// Writes the deliveries decided for `events` and marks them routed, in
/// one transaction. A delivery that goes now takes whatever was held for
/// its target, kind and subject, counted into it. A delivery that exists
/// already (another sender routed it) is left alone.
pub(crate) async fn route_events(t: &Tracker, events: &[i64], routes: &[Route]) -> Result<()> {
    let mut tx = t.pool.begin().await?;
    // Locks the events: a second sender routing them waits, then finds
    // them routed.
    let mine: Vec<i64> =
        sqlx::query_scalar("UPDATE events SET routed_at = now() WHERE id = ANY($1) AND routed_at IS NULL RETURNING id")
            .bind(events)
            .fetch_all(&mut *tx)
            .await?;
    for r in routes.iter().filter(|r| mine.contains(&r.event_id)) {
        let inserted = sqlx::query(
            "INSERT INTO alert_deliveries (event_id, target, kind, subject, state, url, released_at)
             VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $5 = 'pending' THEN now() END) ON CONFLICT DO NOTHING",
        )
        .bind(r.event_id)
        .bind(&r.target)
        .bind(&r.kind)
        .bind(&r.subject)
        .bind(if r.held { "held" } else { "pending" })
        .bind(&r.url)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 && !r.held {
            fold_held_into(&mut tx, &r.target, &r.kind, &r.subject, r.event_id).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Folds the held deliveries of (target, kind, subject) into the delivery
/// of event `into`, which counts them.
async fn fold_held_into(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    target: &str,
    kind: &str,
    subject: &str,
    into: i64,
) -> Result<()> {
    sqlx::query(
        "WITH f AS (
            UPDATE alert_deliveries d SET state = 'folded', folded_into = $4, finished_at = now()
              FROM events e
             WHERE d.target = $1 AND d.kind = $2 AND d.subject = $3 AND d.state = 'held'
               AND d.event_id <> $4 AND e.id = d.event_id
         RETURNING e.at
         ), n AS (
            SELECT count(*) AS n, min(at) AS since FROM f
         ), c AS (
            INSERT INTO alert_counts (target, outcome, n) SELECT $1, 'folded', n.n FROM n WHERE n.n > 0
            ON CONFLICT (target, outcome) DO UPDATE SET n = alert_counts.n + excluded.n
         )
         UPDATE alert_deliveries SET folded = folded + n.n, folded_since = least(folded_since, n.since)
           FROM n WHERE event_id = $4 AND target = $1 AND n.n > 0",
    )
    .bind(target)
    .bind(kind)
    .bind(subject)
    .bind(into)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Every (target, kind, subject) with held deliveries, with when its last
/// delivery was let go.
pub(crate) async fn held_groups(t: &Tracker) -> Result<Vec<HeldGroup>> {
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
/// others counted into it. False if none was held any more.
pub(crate) async fn flush_held(t: &Tracker, target: &str, kind: &str, subject: &str) -> Result<bool> {
    let mut tx = t.pool.begin().await?;
    let newest: Option<i64> = sqlx::query_scalar(
        "UPDATE alert_deliveries SET state = 'pending', next_at = now(), released_at = now()
          WHERE (event_id, target) = (SELECT event_id, target FROM alert_deliveries
                                       WHERE target = $1 AND kind = $2 AND subject = $3 AND state = 'held'
                                       ORDER BY event_id DESC LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING event_id",
    )
    .bind(target)
    .bind(kind)
    .bind(subject)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(newest) = newest else {
        return Ok(false);
    };
    fold_held_into(&mut tx, target, kind, subject, newest).await?;
    tx.commit().await?;
    Ok(true)
}

/// Claims up to `limit` due deliveries for one attempt each: their attempt
/// count goes up and they are this worker's for `hold` (an attempt that
/// outlives it may be made again by another sender).
pub(crate) async fn claim_deliveries(
    t: &Tracker,
    worker_id: Uuid,
    limit: i64,
    hold: Duration,
) -> Result<Vec<DueDelivery>> {
    let sql = format!(
        "WITH c AS (
            UPDATE alert_deliveries d
               SET attempts = d.attempts + 1, claimed_by = $1,
                   claimed_until = now() + make_interval(secs => $3)
             WHERE (d.event_id, d.target) IN (
                    SELECT event_id, target FROM alert_deliveries
                     WHERE state = 'pending' AND next_at <= now()
                       AND (claimed_until IS NULL OR claimed_until < now())
                     ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING d.event_id, d.target, d.attempts, d.url, d.folded, d.folded_since
         )
         SELECT {EVENT_COLUMNS}, c.target, c.attempts AS attempt, c.url, c.folded, c.folded_since
           FROM c JOIN events e ON e.id = c.event_id ORDER BY e.id"
    );
    Ok(sqlx::query_as::<_, DueDelivery>(sqlx::AssertSqlSafe(sql))
        .bind(worker_id)
        .bind(limit)
        .bind(hold.as_secs_f64())
        .fetch_all(&t.pool)
        .await?)
}

/// Records one attempt and its outcome, if the delivery is still this
/// worker's claim at that attempt (compare-and-set); counts it for
/// `/metrics` in the same statement. False if the claim was lost.
pub(crate) async fn record_attempt(t: &Tracker, a: &AttemptRecord<'_>) -> Result<bool> {
    let (applied,): (i64,) = sqlx::query_as(
        "WITH d AS (
            UPDATE alert_deliveries SET
                state = CASE $5 WHEN 'retry' THEN 'pending' ELSE $5 END,
                next_at = CASE $5 WHEN 'retry' THEN now() + make_interval(secs => $9) ELSE next_at END,
                sent_at = CASE $5 WHEN 'sent' THEN now() END,
                finished_at = CASE $5 WHEN 'retry' THEN NULL ELSE now() END,
                claimed_by = NULL, claimed_until = NULL,
                last_status = $6, last_error = CASE $5 WHEN 'sent' THEN NULL ELSE $7 END
             WHERE event_id = $1 AND target = $2 AND claimed_by = $3 AND attempts = $4 AND state = 'pending'
         RETURNING event_id
         ), a AS (
            INSERT INTO alert_attempts (event_id, target, attempt, outcome, status, response, elapsed_ms, worker_id)
            SELECT $1, $2, $4, $5, $6, $7, $8, $3 FROM d
         ), c AS (
            INSERT INTO alert_counts (target, outcome, n) SELECT $2, $5, 1 FROM d
            ON CONFLICT (target, outcome) DO UPDATE SET n = alert_counts.n + 1
         )
         SELECT count(*) FROM d",
    )
    .bind(a.event_id)
    .bind(a.target)
    .bind(a.worker_id)
    .bind(a.attempt)
    .bind(a.outcome)
    .bind(a.status)
    .bind(crate::runs::strip_nul(a.response))
    .bind(a.elapsed.as_secs_f64() * 1000.0)
    .bind(a.retry_in.unwrap_or_default().as_secs_f64())
    .fetch_one(&t.pool)
    .await?;
    Ok(applied == 1)
}

/// The newest `limit` deliveries, newest first.
pub(crate) async fn recent_deliveries(t: &Tracker, limit: i64) -> Result<Vec<DeliveryView>> {
    Ok(sqlx::query_as::<_, DeliveryView>(
        "SELECT d.event_id, d.target, d.kind, d.subject, d.state, d.attempts, d.folded, d.created_at,
                d.sent_at, d.next_at, d.last_status, d.last_error, e.run_id, e.message
           FROM alert_deliveries d JOIN events e ON e.id = d.event_id
          ORDER BY d.created_at DESC, d.event_id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&t.pool)
    .await?)
}

/// Attempts by target and outcome, since the database was made.
pub(crate) async fn alert_counts(t: &Tracker) -> Result<Vec<(String, String, i64)>> {
    Ok(
        sqlx::query_as("SELECT target, outcome, n FROM alert_counts ORDER BY target, outcome")
            .fetch_all(&t.pool)
            .await?,
    )
}

/// A run's events, oldest first (tests and the run page).
pub(crate) async fn run_events(t: &Tracker, run_id: Uuid) -> Result<Vec<EventRow>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e WHERE e.run_id = $1 ORDER BY e.id");
    Ok(sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(sql))
        .bind(run_id)
        .fetch_all(&t.pool)
        .await?)
}

/// The newest `limit` events of any kind, newest first.
pub(crate) async fn recent_events(t: &Tracker, limit: i64) -> Result<Vec<EventRow>> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events e ORDER BY e.id DESC LIMIT $1");
    Ok(sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(&t.pool)
        .await?)
}
