//! Mirrors `crate::slots` (PostgreSQL) for the embedded store.

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

pub(crate) async fn create_run(t: &Embedded, run: &NewRun) -> Result<Admitted> {
    Err(unported("slots::create_run"))
}

pub(crate) async fn admit_waiting(t: &Embedded, sequence: &str) -> Result<Vec<(Uuid, String)>> {
    Err(unported("slots::admit_waiting"))
}

pub(crate) async fn waiting_sequences(t: &Embedded) -> Result<Vec<String>> {
    Err(unported("slots::waiting_sequences"))
}

pub(crate) async fn apply_within_limit(
    t: &Embedded,
    write: &Write<'_>,
) -> Result<std::result::Result<Written, String>> {
    Err(unported("slots::apply_within_limit"))
}
