//! Mirrors `crate::runs` (PostgreSQL) for the embedded store.

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

pub(crate) async fn mark_run_published(t: &Embedded, run_id: Uuid) -> Result<()> {
    Err(unported("runs::mark_run_published"))
}

pub(crate) async fn run_view(t: &Embedded, run_id: Uuid) -> Result<Option<RunView>> {
    Err(unported("runs::run_view"))
}

pub(crate) async fn run_queue(t: &Embedded, run_id: Uuid) -> Result<Option<String>> {
    Err(unported("runs::run_queue"))
}

pub(crate) async fn last_step_succeeded(t: &Embedded, run_id: Uuid) -> Result<bool> {
    Err(unported("runs::last_step_succeeded"))
}

pub(crate) async fn failed_step_attempts(t: &Embedded, run_id: Uuid) -> Result<Option<(u32, u32)>> {
    Err(unported("runs::failed_step_attempts"))
}
