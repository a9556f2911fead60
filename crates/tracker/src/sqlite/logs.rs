//! Mirrors `crate::logs` (PostgreSQL) for the embedded store.

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

pub(crate) async fn append_logs(t: &Embedded, pieces: &[LogPiece]) -> Result<()> {
    Err(unported("logs::append_logs"))
}

pub(crate) async fn trim_log(t: &Embedded, key: ExecKey, head_end: i64, keep_from: i64) -> Result<u64> {
    Err(unported("logs::trim_log"))
}

pub(crate) async fn finish_log(t: &Embedded, key: ExecKey, total: i64) -> Result<()> {
    Err(unported("logs::finish_log"))
}

pub(crate) async fn read_log(t: &Embedded, key: ExecKey, from: i64, limit: i64) -> Result<Vec<LogRow>> {
    Err(unported("logs::read_log"))
}

pub(crate) async fn log_states(t: &Embedded, run_id: Uuid) -> Result<Vec<LogState>> {
    Err(unported("logs::log_states"))
}
