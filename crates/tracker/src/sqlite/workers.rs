//! Mirrors `crate::workers` (PostgreSQL) for the embedded store.

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

pub(crate) async fn register_worker(t: &Embedded, worker: &WorkerInfo) -> Result<()> {
    Err(unported("workers::register_worker"))
}

pub(crate) async fn heartbeat(
    t: &Embedded,
    worker_id: Uuid,
    draining: bool,
    lease: Duration,
    holding: &[ExecKey],
) -> Result<Vec<Held>> {
    Err(unported("workers::heartbeat"))
}

pub(crate) async fn worker_stopped(t: &Embedded, worker_id: Uuid) -> Result<()> {
    Err(unported("workers::worker_stopped"))
}

pub(crate) async fn worker_died(t: &Embedded, worker_id: Uuid) -> Result<u64> {
    Err(unported("workers::worker_died"))
}
