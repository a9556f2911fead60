//! Mirrors `crate::schedules` (PostgreSQL) for the embedded store.

#![allow(unused_imports, unused_variables)]

use super::{Embedded, unported};
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

pub(crate) async fn schedule_cursor(t: &Embedded, name: &str) -> Result<Cursor> {
    Err(unported("schedules::schedule_cursor"))
}

pub(crate) async fn register_schedules(t: &Embedded, names: &[String]) -> Result<()> {
    Err(unported("schedules::register_schedules"))
}

pub(crate) async fn schedule_cursors(t: &Embedded, names: &[String]) -> Result<Vec<(String, Cursor)>> {
    Err(unported("schedules::schedule_cursors"))
}

pub(crate) async fn record_slot(
    t: &Embedded,
    schedule: &str,
    slot: DateTime<Utc>,
    fate: &str,
    note: Option<&str>,
) -> Result<bool> {
    Err(unported("schedules::record_slot"))
}

pub(crate) async fn fire_slot(
    t: &Embedded,
    schedule: &str,
    slot: DateTime<Utc>,
    fate: &str,
    run: &NewRun,
) -> Result<Option<Admitted>> {
    Err(unported("schedules::fire_slot"))
}

pub(crate) async fn schedule_slots(t: &Embedded, schedule: &str, limit: i64) -> Result<Vec<SlotView>> {
    Err(unported("schedules::schedule_slots"))
}

pub(crate) async fn pause_schedule(t: &Embedded, name: &str, by: &str, note: &str) -> Result<bool> {
    Err(unported("schedules::pause_schedule"))
}

pub(crate) async fn resume_schedule(t: &Embedded, name: &str) -> Result<bool> {
    Err(unported("schedules::resume_schedule"))
}

pub(crate) async fn schedule_states(t: &Embedded) -> Result<Vec<ScheduleState>> {
    Err(unported("schedules::schedule_states"))
}

pub(crate) async fn flag_late_slots(t: &Embedded, after: Duration) -> Result<Vec<LateSlot>> {
    Err(unported("schedules::flag_late_slots"))
}
