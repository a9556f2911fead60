//! `Store` for the embedded SQLite store: every call goes to the module of
//! `sqlite/` that mirrors the PostgreSQL module of the same name, so the two
//! backends can be compared statement by statement.

use super::Embedded;
use crate::Result;
use crate::activity::Activity;
use crate::apply::{Write, Written};
use crate::events::{AttemptRecord, DeliveryView, DueDelivery, EventRow, HeldGroup, NewEvent, Route};
use crate::executions::{Claimed, ExecKey};
use crate::history::SequenceHistory;
use crate::logs::{LogPiece, LogRow, LogState};
use crate::recovery::{Expired, Stuck};
use crate::retention::{EventCursor, EventPruneBatch, PruneBatch, PruneCursor, Retention, StorageFigures};
use crate::schedules::{Cursor, LateSlot, ScheduleState, SlotView};
use crate::slots::{Admitted, NewRun};
use crate::store::Store;
use crate::ui_queries::StateCounts;
use crate::views::{QueueLoad, RunDetail, RunFilter, RunSummary, WorkerView};
use crate::workers::{Held, WorkerInfo};
use chrono::{DateTime, Utc};
use scheduler_core::machine::RunView;
use scheduler_core::{ExecState, RetryPolicy, RunState};
use std::time::Duration;
use uuid::Uuid;

#[async_trait::async_trait]
impl Store for Embedded {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn create_run(&self, run: &NewRun) -> Result<Admitted> {
        crate::sqlite::slots::create_run(self, run).await
    }
    async fn admit_waiting(&self, sequence: &str) -> Result<Vec<(Uuid, String)>> {
        crate::sqlite::slots::admit_waiting(self, sequence).await
    }
    async fn waiting_sequences(&self) -> Result<Vec<String>> {
        crate::sqlite::slots::waiting_sequences(self).await
    }
    async fn mark_stalled(&self, key: ExecKey, stalled: bool) -> Result<bool> {
        crate::sqlite::executions::mark_stalled(self, key, stalled).await
    }
    async fn append_logs(&self, pieces: &[LogPiece]) -> Result<()> {
        crate::sqlite::logs::append_logs(self, pieces).await
    }
    async fn trim_log(&self, key: ExecKey, head_end: i64, keep_from: i64) -> Result<u64> {
        crate::sqlite::logs::trim_log(self, key, head_end, keep_from).await
    }
    async fn finish_log(&self, key: ExecKey, total: i64) -> Result<()> {
        crate::sqlite::logs::finish_log(self, key, total).await
    }
    async fn read_log(&self, key: ExecKey, from: i64, limit: i64) -> Result<Vec<LogRow>> {
        crate::sqlite::logs::read_log(self, key, from, limit).await
    }
    async fn log_states(&self, run_id: Uuid) -> Result<Vec<LogState>> {
        crate::sqlite::logs::log_states(self, run_id).await
    }
    async fn schedule_cursor(&self, name: &str) -> Result<Cursor> {
        crate::sqlite::schedules::schedule_cursor(self, name).await
    }
    async fn register_schedules(&self, names: &[String]) -> Result<()> {
        crate::sqlite::schedules::register_schedules(self, names).await
    }
    async fn schedule_cursors(&self, names: &[String]) -> Result<Vec<(String, Cursor)>> {
        crate::sqlite::schedules::schedule_cursors(self, names).await
    }
    async fn record_slot(&self, schedule: &str, slot: DateTime<Utc>, fate: &str, note: Option<&str>) -> Result<bool> {
        crate::sqlite::schedules::record_slot(self, schedule, slot, fate, note).await
    }
    async fn fire_slot(
        &self,
        schedule: &str,
        slot: DateTime<Utc>,
        fate: &str,
        run: &NewRun,
    ) -> Result<Option<Admitted>> {
        crate::sqlite::schedules::fire_slot(self, schedule, slot, fate, run).await
    }
    async fn schedule_slots(&self, schedule: &str, limit: i64) -> Result<Vec<SlotView>> {
        crate::sqlite::schedules::schedule_slots(self, schedule, limit).await
    }
    async fn pause_schedule(&self, name: &str, by: &str, note: &str) -> Result<bool> {
        crate::sqlite::schedules::pause_schedule(self, name, by, note).await
    }
    async fn resume_schedule(&self, name: &str) -> Result<bool> {
        crate::sqlite::schedules::resume_schedule(self, name).await
    }
    async fn schedule_states(&self) -> Result<Vec<ScheduleState>> {
        crate::sqlite::schedules::schedule_states(self).await
    }
    async fn flag_late_slots(&self, after: Duration) -> Result<Vec<LateSlot>> {
        crate::sqlite::schedules::flag_late_slots(self, after).await
    }
    async fn apply_within_limit(&self, write: &Write<'_>) -> Result<std::result::Result<Written, String>> {
        crate::sqlite::slots::apply_within_limit(self, write).await
    }
    async fn mark_run_published(&self, run_id: Uuid) -> Result<()> {
        crate::sqlite::runs::mark_run_published(self, run_id).await
    }
    async fn run_view(&self, run_id: Uuid) -> Result<Option<RunView>> {
        crate::sqlite::runs::run_view(self, run_id).await
    }
    async fn run_queue(&self, run_id: Uuid) -> Result<Option<String>> {
        crate::sqlite::runs::run_queue(self, run_id).await
    }
    async fn last_step_succeeded(&self, run_id: Uuid) -> Result<bool> {
        crate::sqlite::runs::last_step_succeeded(self, run_id).await
    }
    async fn failed_step_attempts(&self, run_id: Uuid) -> Result<Option<(u32, u32)>> {
        crate::sqlite::runs::failed_step_attempts(self, run_id).await
    }
    async fn apply(&self, write: &Write<'_>) -> Result<Written> {
        crate::sqlite::apply::apply_write(self, write).await
    }
    async fn claim(&self, key: ExecKey, worker_id: Uuid, lease: Duration) -> Result<Option<Claimed>> {
        crate::sqlite::executions::claim(self, key, worker_id, lease).await
    }
    async fn exec_states(&self, key: ExecKey) -> Result<Option<(RunState, Option<ExecState>)>> {
        crate::sqlite::executions::exec_states(self, key).await
    }
    async fn cancel_queued(&self, key: ExecKey) -> Result<bool> {
        crate::sqlite::executions::cancel_queued(self, key).await
    }
    async fn record_pid(&self, key: ExecKey, worker_id: Uuid, pid: u32) -> Result<()> {
        crate::sqlite::executions::record_pid(self, key, worker_id, pid).await
    }
    async fn mark_exec_published(&self, key: ExecKey) -> Result<()> {
        crate::sqlite::executions::mark_exec_published(self, key).await
    }
    async fn retry_policy(&self, run_id: Uuid, step: u32) -> Result<RetryPolicy> {
        crate::sqlite::executions::retry_policy(self, run_id, step).await
    }
    async fn register_worker(&self, worker: &WorkerInfo) -> Result<()> {
        crate::sqlite::workers::register_worker(self, worker).await
    }
    async fn heartbeat(
        &self,
        worker_id: Uuid,
        draining: bool,
        lease: Duration,
        holding: &[ExecKey],
    ) -> Result<Vec<Held>> {
        crate::sqlite::workers::heartbeat(self, worker_id, draining, lease, holding).await
    }
    async fn worker_stopped(&self, worker_id: Uuid) -> Result<()> {
        crate::sqlite::workers::worker_stopped(self, worker_id).await
    }
    async fn worker_died(&self, worker_id: Uuid) -> Result<u64> {
        crate::sqlite::workers::worker_died(self, worker_id).await
    }
    async fn take_reaper_lease(&self, worker_id: Uuid, ttl: Duration) -> Result<bool> {
        crate::sqlite::recovery::take_reaper_lease(self, worker_id, ttl).await
    }
    async fn unpublished_runs(&self, older_than: Duration, limit: i64) -> Result<Vec<(Uuid, String)>> {
        crate::sqlite::recovery::unpublished_runs(self, older_than, limit).await
    }
    async fn unpublished_executions(&self, older_than: Duration, limit: i64) -> Result<Vec<(ExecKey, String)>> {
        crate::sqlite::recovery::unpublished_executions(self, older_than, limit).await
    }
    async fn next_retry_due(&self) -> Result<Option<Duration>> {
        crate::sqlite::recovery::next_retry_due(self).await
    }
    async fn expired_executions(&self, limit: i64) -> Result<Vec<Expired>> {
        crate::sqlite::recovery::expired_executions(self, limit).await
    }
    async fn stuck_runs(&self, older_than: Duration, limit: i64) -> Result<Vec<Stuck>> {
        crate::sqlite::recovery::stuck_runs(self, older_than, limit).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        crate::sqlite::views::list_runs(self, filter).await
    }
    async fn run_detail(&self, run_id: Uuid) -> Result<Option<RunDetail>> {
        crate::sqlite::views::run_detail(self, run_id).await
    }
    async fn queue_loads(&self) -> Result<Vec<QueueLoad>> {
        crate::sqlite::views::queue_loads(self).await
    }
    async fn list_workers(&self) -> Result<Vec<WorkerView>> {
        crate::sqlite::views::list_workers(self).await
    }
    async fn last_runs_by_sequence(&self, sequences: &[String], per_sequence: u32) -> Result<Vec<RunSummary>> {
        crate::sqlite::ui_queries::last_runs_by_sequence(self, sequences, per_sequence).await
    }
    async fn runs_fingerprint(&self) -> Result<String> {
        crate::sqlite::ui_queries::runs_fingerprint(self).await
    }
    async fn run_fingerprint(&self, run_id: Uuid) -> Result<Option<String>> {
        crate::sqlite::ui_queries::run_fingerprint(self, run_id).await
    }
    async fn state_counts(&self, alive_within: Duration) -> Result<StateCounts> {
        crate::sqlite::ui_queries::state_counts(self, alive_within).await
    }
    async fn activity(
        &self,
        within: Duration,
        duration_bounds_ms: &[i64],
        memory_bounds_kib: &[i64],
    ) -> Result<Activity> {
        crate::sqlite::activity::activity(self, within, duration_bounds_ms, memory_bounds_kib).await
    }
    async fn sequence_history(&self, sequence: &str, limit: u32) -> Result<SequenceHistory> {
        crate::sqlite::history::sequence_history(self, sequence, limit).await
    }
    async fn ping(&self) -> Result<()> {
        crate::sqlite::ui_queries::ping(self).await
    }
    async fn close(&self) {
        Embedded::close(self).await
    }

    // --- retention
    async fn prune_batch(
        &self,
        retention: &Retention,
        from: Option<PruneCursor>,
        limit: u32,
        dry_run: bool,
    ) -> Result<PruneBatch> {
        crate::sqlite::retention::prune_batch(self, retention, from, limit, dry_run).await
    }
    async fn prune_events_batch(
        &self,
        older_than: Duration,
        from: Option<EventCursor>,
        limit: u32,
        dry_run: bool,
    ) -> Result<EventPruneBatch> {
        crate::sqlite::retention::prune_events_batch(self, older_than, from, limit, dry_run).await
    }
    async fn storage_figures(&self) -> Result<StorageFigures> {
        crate::sqlite::retention::storage_figures(self).await
    }

    // --- events and alerts
    async fn record_event(&self, event: &NewEvent) -> Result<i64> {
        crate::sqlite::events::record_event(self, event).await
    }
    async fn mark_lost_workers(&self, silent_for: Duration) -> Result<Vec<(Uuid, String)>> {
        crate::sqlite::events::mark_lost_workers(self, silent_for).await
    }
    async fn take_alert_lease(&self, worker_id: Uuid, ttl: Duration) -> Result<bool> {
        crate::sqlite::events::take_alert_lease(self, worker_id, ttl).await
    }
    async fn unrouted_events(&self, limit: i64) -> Result<Vec<EventRow>> {
        crate::sqlite::events::unrouted_events(self, limit).await
    }
    async fn last_sent(
        &self,
        keys: &[(String, String, String)],
    ) -> Result<Vec<(String, String, String, DateTime<Utc>)>> {
        crate::sqlite::events::last_sent(self, keys).await
    }
    async fn route_events(&self, events: &[i64], routes: &[Route]) -> Result<()> {
        crate::sqlite::events::route_events(self, events, routes).await
    }
    async fn held_groups(&self) -> Result<Vec<HeldGroup>> {
        crate::sqlite::events::held_groups(self).await
    }
    async fn flush_held(&self, target: &str, kind: &str, subject: &str) -> Result<bool> {
        crate::sqlite::events::flush_held(self, target, kind, subject).await
    }
    async fn claim_deliveries(&self, worker_id: Uuid, limit: i64, hold: Duration) -> Result<Vec<DueDelivery>> {
        crate::sqlite::events::claim_deliveries(self, worker_id, limit, hold).await
    }
    async fn record_attempt(&self, attempt: &AttemptRecord<'_>) -> Result<bool> {
        crate::sqlite::events::record_attempt(self, attempt).await
    }
    async fn recent_deliveries(&self, limit: i64) -> Result<Vec<DeliveryView>> {
        crate::sqlite::events::recent_deliveries(self, limit).await
    }
    async fn alert_counts(&self) -> Result<Vec<(String, String, i64)>> {
        crate::sqlite::events::alert_counts(self).await
    }
    async fn run_events(&self, run_id: Uuid) -> Result<Vec<EventRow>> {
        crate::sqlite::events::run_events(self, run_id).await
    }
    async fn recent_events(&self, limit: i64) -> Result<Vec<EventRow>> {
        crate::sqlite::events::recent_events(self, limit).await
    }
}
