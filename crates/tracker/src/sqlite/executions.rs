//! Mirrors `crate::executions` (PostgreSQL) for the embedded store.

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

pub(crate) async fn mark_stalled(t: &Embedded, key: ExecKey, stalled: bool) -> Result<bool> {
    Err(unported("executions::mark_stalled"))
}

pub(crate) async fn claim(t: &Embedded, key: ExecKey, worker_id: Uuid, lease: Duration) -> Result<Option<Claimed>> {
    Err(unported("executions::claim"))
}

pub(crate) async fn exec_states(t: &Embedded, key: ExecKey) -> Result<Option<(RunState, Option<ExecState>)>> {
    Err(unported("executions::exec_states"))
}

pub(crate) async fn cancel_queued(t: &Embedded, key: ExecKey) -> Result<bool> {
    Err(unported("executions::cancel_queued"))
}

pub(crate) async fn record_pid(t: &Embedded, key: ExecKey, worker_id: Uuid, pid: u32) -> Result<()> {
    Err(unported("executions::record_pid"))
}

pub(crate) async fn mark_exec_published(t: &Embedded, key: ExecKey) -> Result<()> {
    Err(unported("executions::mark_exec_published"))
}

pub(crate) async fn retry_policy(t: &Embedded, run_id: Uuid, step: u32) -> Result<RetryPolicy> {
    Err(unported("executions::retry_policy"))
}
