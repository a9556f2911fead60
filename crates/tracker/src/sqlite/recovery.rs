//! Mirrors `crate::recovery` (PostgreSQL) for the embedded store.

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

pub(crate) async fn take_reaper_lease(t: &Embedded, worker_id: Uuid, ttl: Duration) -> Result<bool> {
    Err(unported("recovery::take_reaper_lease"))
}

pub(crate) async fn unpublished_runs(t: &Embedded, older_than: Duration, limit: i64) -> Result<Vec<(Uuid, String)>> {
    Err(unported("recovery::unpublished_runs"))
}

pub(crate) async fn unpublished_executions(
    t: &Embedded,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<(ExecKey, String)>> {
    Err(unported("recovery::unpublished_executions"))
}

pub(crate) async fn next_retry_due(t: &Embedded) -> Result<Option<Duration>> {
    Err(unported("recovery::next_retry_due"))
}

pub(crate) async fn expired_executions(t: &Embedded, limit: i64) -> Result<Vec<Expired>> {
    Err(unported("recovery::expired_executions"))
}

pub(crate) async fn stuck_runs(t: &Embedded, older_than: Duration, limit: i64) -> Result<Vec<Stuck>> {
    Err(unported("recovery::stuck_runs"))
}
