//! Mirrors `crate::views` (PostgreSQL) for the embedded store.

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

pub(crate) async fn list_runs(t: &Embedded, filter: &RunFilter) -> Result<Vec<RunSummary>> {
    Err(unported("views::list_runs"))
}

pub(crate) async fn run_detail(t: &Embedded, run_id: Uuid) -> Result<Option<RunDetail>> {
    Err(unported("views::run_detail"))
}

pub(crate) async fn queue_loads(t: &Embedded) -> Result<Vec<QueueLoad>> {
    Err(unported("views::queue_loads"))
}

pub(crate) async fn list_workers(t: &Embedded) -> Result<Vec<WorkerView>> {
    Err(unported("views::list_workers"))
}
