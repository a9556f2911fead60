//! Mirrors `crate::events` (PostgreSQL) for the embedded store.

#![allow(unused_imports, unused_variables)]

use super::{Embedded, now, unported};
use crate::Result;
use crate::activity::Activity;
use crate::apply::{Write, Written};
use crate::events::{AttemptRecord, DeliveryView, DueDelivery, EventRow, HeldGroup, NewEvent, Route};
use crate::executions::{Claimed, ExecKey};
use crate::history::SequenceHistory;
use crate::logs::{LogPiece, LogRow, LogState};
use crate::recovery::{Expired, Stuck};
use crate::retention::{PruneBatch, PruneCursor, Retention, StorageFigures};
use crate::schedules::{Cursor, LateSlot, ScheduleState, SlotView};
use crate::slots::{Admitted, NewRun};
use crate::ui_queries::StateCounts;
use crate::views::{QueueLoad, RunDetail, RunFilter, RunSummary, WorkerView};
use crate::workers::{Held, WorkerInfo};
use chrono::{DateTime, Utc};
use scheduler_core::machine::RunView;
use scheduler_core::{ExecState, RetryPolicy, RunState};
use std::time::Duration;
use uuid::Uuid;

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
    Err(unported("events::record_event"))
}

pub(crate) async fn mark_lost_workers(t: &Embedded, silent_for: Duration) -> Result<Vec<(Uuid, String)>> {
    Err(unported("events::mark_lost_workers"))
}

pub(crate) async fn take_alert_lease(t: &Embedded, worker_id: Uuid, ttl: Duration) -> Result<bool> {
    Err(unported("events::take_alert_lease"))
}

pub(crate) async fn unrouted_events(t: &Embedded, limit: i64) -> Result<Vec<EventRow>> {
    Err(unported("events::unrouted_events"))
}

pub(crate) async fn last_sent(
    t: &Embedded,
    keys: &[(String, String, String)],
) -> Result<Vec<(String, String, String, DateTime<Utc>)>> {
    Err(unported("events::last_sent"))
}

pub(crate) async fn route_events(t: &Embedded, events: &[i64], routes: &[Route]) -> Result<()> {
    Err(unported("events::route_events"))
}

pub(crate) async fn held_groups(t: &Embedded) -> Result<Vec<HeldGroup>> {
    Err(unported("events::held_groups"))
}

pub(crate) async fn flush_held(t: &Embedded, target: &str, kind: &str, subject: &str) -> Result<bool> {
    Err(unported("events::flush_held"))
}

pub(crate) async fn claim_deliveries(
    t: &Embedded,
    worker_id: Uuid,
    limit: i64,
    hold: Duration,
) -> Result<Vec<DueDelivery>> {
    Err(unported("events::claim_deliveries"))
}

pub(crate) async fn record_attempt(t: &Embedded, attempt: &AttemptRecord<'_>) -> Result<bool> {
    Err(unported("events::record_attempt"))
}

pub(crate) async fn recent_deliveries(t: &Embedded, limit: i64) -> Result<Vec<DeliveryView>> {
    Err(unported("events::recent_deliveries"))
}

pub(crate) async fn alert_counts(t: &Embedded) -> Result<Vec<(String, String, i64)>> {
    Err(unported("events::alert_counts"))
}

pub(crate) async fn run_events(t: &Embedded, run_id: Uuid) -> Result<Vec<EventRow>> {
    Err(unported("events::run_events"))
}

pub(crate) async fn recent_events(t: &Embedded, limit: i64) -> Result<Vec<EventRow>> {
    Err(unported("events::recent_events"))
}
