//! Mirrors `crate::ui_queries` (PostgreSQL) for the embedded store.

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

pub(crate) async fn last_runs_by_sequence(
    t: &Embedded,
    sequences: &[String],
    per_sequence: u32,
) -> Result<Vec<RunSummary>> {
    Err(unported("ui_queries::last_runs_by_sequence"))
}

pub(crate) async fn runs_fingerprint(t: &Embedded) -> Result<String> {
    Err(unported("ui_queries::runs_fingerprint"))
}

pub(crate) async fn run_fingerprint(t: &Embedded, run_id: Uuid) -> Result<Option<String>> {
    Err(unported("ui_queries::run_fingerprint"))
}

pub(crate) async fn state_counts(t: &Embedded, alive_within: Duration) -> Result<StateCounts> {
    Err(unported("ui_queries::state_counts"))
}

pub(crate) async fn ping(t: &Embedded) -> Result<()> {
    Err(unported("ui_queries::ping"))
}
