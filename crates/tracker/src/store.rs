//! [`Store`]: the record of truth as the rest of the scheduler sees it. The
//! worker, the producer, the UI and the CLI hold an `Arc<dyn Store>` and
//! never a concrete database type, so a second implementation (the embedded
//! SQLite store with its own queue) fills the same contract.
//!
//! The contract every implementation keeps:
//! - every state write is compare-and-set and says whether it applied; "did
//!   not apply" is a normal answer (a duplicate or stale message), never an
//!   error;
//! - [`Store::apply`] writes a whole decision atomically (one statement or
//!   one transaction): the closed execution, the run move, the queued
//!   execution, or none of what follows a part that did not apply;
//! - no call holds a transaction open across anything but its own SQL;
//! - a lease is judged by the store's own clock (one clock for every host).
//!
//! Why a trait object and not generics or an enum: the worker's context, the
//! UI's state and the producer's functions take `&dyn Store` and stay
//! non-generic (an enum would need every method forwarded per backend and
//! every crate rebuilt to add one). Each call costs one boxed future, tens of
//! nanoseconds against a database round trip of a hundred microseconds or
//! more.

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
use crate::ui_queries::StateCounts;
use crate::views::{QueueLoad, RunDetail, RunFilter, RunSummary, WorkerView};
use crate::workers::{Held, WorkerInfo};
use crate::{Result, Tracker};
use chrono::{DateTime, Utc};
use scheduler_core::machine::RunView;
use scheduler_core::{ExecState, RetryPolicy, RunState};
use std::time::Duration;
use uuid::Uuid;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The store itself, for a caller that does better with a given one
    /// (the embedded store's own queue records a run and its start in one
    /// transaction).
    fn as_any(&self) -> &dyn std::any::Any;

    // --- runs
    /// Records a new run: `queued` (the caller publishes `start_etl` after),
    /// or `waiting` / `skipped` as its sequence's concurrency policy says,
    /// decided atomically with every other start of the sequence.
    async fn create_run(&self, run: &NewRun) -> Result<Admitted>;
    /// Moves the sequence's oldest waiting runs to `queued`, one per free
    /// slot; returns them (id, queue) for the caller to publish.
    async fn admit_waiting(&self, sequence: &str) -> Result<Vec<(Uuid, String)>>;
    /// Sequences that have runs waiting for a slot.
    async fn waiting_sequences(&self) -> Result<Vec<String>>;

    /// Marks a running execution stalled (or no longer); false when that
    /// changed nothing.
    async fn mark_stalled(&self, key: ExecKey, stalled: bool) -> Result<bool>;

    // --- logs
    /// Records a batch of output pieces (of any executions) in one statement.
    async fn append_logs(&self, pieces: &[LogPiece]) -> Result<()>;
    /// Deletes a long log's middle: rows past `head_end` that end before `keep_from`.
    async fn trim_log(&self, key: ExecKey, head_end: i64, keep_from: i64) -> Result<u64>;
    /// Marks an execution's log complete: `total` bytes written.
    async fn finish_log(&self, key: ExecKey, total: i64) -> Result<()>;
    /// An execution's log rows from byte `from` on, at most `limit` rows.
    async fn read_log(&self, key: ExecKey, from: i64, limit: i64) -> Result<Vec<LogRow>>;
    /// Every execution of a run, with where its log stands.
    async fn log_states(&self, run_id: Uuid) -> Result<Vec<LogState>>;

    // --- schedules
    /// Where a schedule stands (registered on first sight).
    async fn schedule_cursor(&self, name: &str) -> Result<Cursor>;
    /// Registers schedules on first sight; the known ones are left alone.
    async fn register_schedules(&self, names: &[String]) -> Result<()>;
    /// The cursors of the registered schedules among `names`, in one query.
    async fn schedule_cursors(&self, names: &[String]) -> Result<Vec<(String, Cursor)>>;
    /// Records the fate of a slot that starts no run; false if recorded already.
    async fn record_slot(&self, schedule: &str, slot: DateTime<Utc>, fate: &str, note: Option<&str>) -> Result<bool>;
    /// Fires a slot: its ledger row and its run in one transaction; `None`
    /// when another scheduler fired it.
    async fn fire_slot(
        &self,
        schedule: &str,
        slot: DateTime<Utc>,
        fate: &str,
        run: &NewRun,
    ) -> Result<Option<Admitted>>;
    /// The newest `limit` slots of a schedule, newest first.
    async fn schedule_slots(&self, schedule: &str, limit: i64) -> Result<Vec<SlotView>>;
    /// Pauses a schedule, noting who and why; false if it was paused already.
    async fn pause_schedule(&self, name: &str, by: &str, note: &str) -> Result<bool>;
    /// Resumes a paused schedule; false if it was not paused.
    async fn resume_schedule(&self, name: &str) -> Result<bool>;
    /// Every schedule seen, with its newest slot.
    async fn schedule_states(&self) -> Result<Vec<ScheduleState>>;
    /// Flags (once) the slots whose run has not started `after` the slot
    /// was recorded; returns them.
    async fn flag_late_slots(&self, after: Duration) -> Result<Vec<LateSlot>>;
    /// [`Store::apply`] for a decision that restarts a run (an operator's
    /// retry): applied only if the run's sequence has a free slot, atomically
    /// with every start of the sequence; `Ok(Err(why))` when it has none.
    async fn apply_within_limit(&self, write: &Write<'_>) -> Result<std::result::Result<Written, String>>;
    /// Notes that the transport confirmed the run's `start_etl`, while the run
    /// is still `queued` (recovery looks for queued runs never published; a
    /// started run is not written again).
    async fn mark_run_published(&self, run_id: Uuid) -> Result<()>;
    async fn run_view(&self, run_id: Uuid) -> Result<Option<RunView>>;
    /// The queue a run's messages go to.
    async fn run_queue(&self, run_id: Uuid) -> Result<Option<String>>;
    /// Whether the latest attempt of the run's last step succeeded.
    async fn last_step_succeeded(&self, run_id: Uuid) -> Result<bool>;
    /// The failing step of a failed run and how many attempts it had.
    async fn failed_step_attempts(&self, run_id: Uuid) -> Result<Option<(u32, u32)>>;
    /// Writes one decision of the state machine, all of it or what applies.
    async fn apply(&self, write: &Write<'_>) -> Result<Written>;

    // --- executions
    /// Claims a queued execution of a running run (`queued -> running` with
    /// a lease). `None`: not claimable; [`Store::exec_states`] tells why.
    async fn claim(&self, key: ExecKey, worker_id: Uuid, lease: Duration) -> Result<Option<Claimed>>;
    /// The run's state and the execution's state (if it exists).
    async fn exec_states(&self, key: ExecKey) -> Result<Option<(RunState, Option<ExecState>)>>;
    /// Marks a queued execution of a run that ended as canceled.
    async fn cancel_queued(&self, key: ExecKey) -> Result<bool>;
    /// Records the module's pid (also its process group id).
    async fn record_pid(&self, key: ExecKey, worker_id: Uuid, pid: u32) -> Result<()>;
    /// Notes that the transport confirmed this execution's `exec_module`.
    async fn mark_exec_published(&self, key: ExecKey) -> Result<()>;
    /// The retry policy of a run's step (read when it failed).
    async fn retry_policy(&self, run_id: Uuid, step: u32) -> Result<RetryPolicy>;

    // --- workers
    async fn register_worker(&self, worker: &WorkerInfo) -> Result<()>;
    /// Marks the worker alive and renews the lease of each execution of
    /// `holding` still recorded as its own, in one write; returns those.
    async fn heartbeat(
        &self,
        worker_id: Uuid,
        draining: bool,
        lease: Duration,
        holding: &[ExecKey],
    ) -> Result<Vec<Held>>;
    async fn worker_stopped(&self, worker_id: Uuid) -> Result<()>;
    /// The worker is gone and its modules are stopped (its keeper says so):
    /// end the leases it held now, so recovery takes its steps over at once,
    /// and (unless it had stopped) mark it lost and record `worker_lost`
    /// with the steps it held, in the same statement.
    async fn worker_died(&self, worker_id: Uuid) -> Result<u64>;

    // --- recovery
    /// Takes or extends the single reaper lease; false if another holds it.
    async fn take_reaper_lease(&self, worker_id: Uuid, ttl: Duration) -> Result<bool>;
    /// Runs recorded as queued whose `start_etl` was never confirmed, with
    /// their queue.
    async fn unpublished_runs(&self, older_than: Duration, limit: i64) -> Result<Vec<(Uuid, String)>>;
    /// Queued executions of running runs whose `exec_module` was never
    /// confirmed (older than `older_than`), and retries that came due, with
    /// their run's queue.
    async fn unpublished_executions(&self, older_than: Duration, limit: i64) -> Result<Vec<(ExecKey, String)>>;
    /// How long until the next waiting retry is due (zero if overdue);
    /// `None` when no retry waits. Recovery wakes for it.
    async fn next_retry_due(&self) -> Result<Option<Duration>>;
    /// Running executions whose lease expired.
    async fn expired_executions(&self, limit: i64) -> Result<Vec<Expired>>;
    /// Running runs with nothing queued or running for `older_than`.
    async fn stuck_runs(&self, older_than: Duration, limit: i64) -> Result<Vec<Stuck>>;

    // --- reads for the CLI and the UI
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>>;
    async fn run_detail(&self, run_id: Uuid) -> Result<Option<RunDetail>>;
    async fn list_workers(&self) -> Result<Vec<WorkerView>>;
    /// Every queue with work waiting on it or a live worker serving it.
    async fn queue_loads(&self) -> Result<Vec<QueueLoad>>;
    /// The newest `per_sequence` runs of each of `sequences`.
    async fn last_runs_by_sequence(&self, sequences: &[String], per_sequence: u32) -> Result<Vec<RunSummary>>;
    /// Changes whenever a runs listing could show something different.
    async fn runs_fingerprint(&self) -> Result<String>;
    /// Changes whenever the run's page would; `None`: no such run.
    async fn run_fingerprint(&self, run_id: Uuid) -> Result<Option<String>>;
    async fn state_counts(&self, alive_within: Duration) -> Result<StateCounts>;
    /// What happened within `within` (runs ended, retries, stalls, step
    /// durations and peak memory by module, bucketed by the bounds) and the
    /// missed and skipped slots of every schedule.
    async fn activity(
        &self,
        within: Duration,
        duration_bounds_ms: &[i64],
        memory_bounds_kib: &[i64],
    ) -> Result<Activity>;
    /// A sequence's newest `limit` runs and its steps' figures over them.
    async fn sequence_history(&self, sequence: &str, limit: u32) -> Result<SequenceHistory>;
    /// Whether the store answers.
    async fn ping(&self) -> Result<()>;
    async fn close(&self);

    // --- retention
    /// Deletes (or, `dry_run`, counts) one batch of at most `limit` runs of
    /// `retention`, after `from` (`None`: from the oldest), with their
    /// executions and logs, in one short statement; never a run that is not
    /// final, checked under the row lock. Call again with `next` until it
    /// is `None`.
    async fn prune_batch(
        &self,
        retention: &Retention,
        from: Option<PruneCursor>,
        limit: u32,
        dry_run: bool,
    ) -> Result<PruneBatch>;
    /// Deletes (or, `dry_run`, counts) one batch of at most `limit` alert
    /// events recorded more than `older_than` ago, after `from` (`None`:
    /// from the oldest), whose deliveries are all sent, given up or folded
    /// (never one pending or held), with those deliveries and their
    /// attempts. Call again with `next` until it is `None`.
    async fn prune_events_batch(
        &self,
        older_than: Duration,
        from: Option<EventCursor>,
        limit: u32,
        dry_run: bool,
    ) -> Result<EventPruneBatch>;
    /// How much is stored (runs, executions, logs), cheap at any size.
    async fn storage_figures(&self) -> Result<StorageFigures>;

    // --- events and alerts (`events.rs`)
    /// Records an event on its own. A state change that causes one records
    /// it in its own statement or transaction instead (`events::insert_on`),
    /// so the event commits with the change.
    async fn record_event(&self, event: &NewEvent) -> Result<i64>;
    /// Marks the workers silent for `silent_for` as lost (once per silence)
    /// and records `worker_lost` for each in the same statement.
    async fn mark_lost_workers(&self, silent_for: Duration) -> Result<Vec<(Uuid, String)>>;
    /// Takes or extends the single alert-sender lease; false if another holds it.
    async fn take_alert_lease(&self, worker_id: Uuid, ttl: Duration) -> Result<bool>;
    /// The oldest events not routed to targets yet.
    async fn unrouted_events(&self, limit: i64) -> Result<Vec<EventRow>>;
    /// When the last delivery of each (target, kind, subject) was let go
    /// (what a target's `max_frequency` counts from).
    async fn last_sent(
        &self,
        keys: &[(String, String, String)],
    ) -> Result<Vec<(String, String, String, DateTime<Utc>)>>;
    /// Records the deliveries decided for `events` and marks them routed.
    async fn route_events(&self, events: &[i64], routes: &[Route]) -> Result<()>;
    /// The held deliveries, grouped by target, kind and subject.
    async fn held_groups(&self) -> Result<Vec<HeldGroup>>;
    /// Sends the newest held delivery of a group, the others counted into it.
    async fn flush_held(&self, target: &str, kind: &str, subject: &str) -> Result<bool>;
    /// Claims due deliveries for one attempt each (`FOR UPDATE SKIP LOCKED`).
    async fn claim_deliveries(&self, worker_id: Uuid, limit: i64, hold: Duration) -> Result<Vec<DueDelivery>>;
    /// Records an attempt if the claim is still this worker's; false if not.
    async fn record_attempt(&self, attempt: &AttemptRecord<'_>) -> Result<bool>;
    /// The newest deliveries, newest first.
    async fn recent_deliveries(&self, limit: i64) -> Result<Vec<DeliveryView>>;
    /// Attempts by target and outcome (`/metrics`).
    async fn alert_counts(&self) -> Result<Vec<(String, String, i64)>>;
    /// A run's events, oldest first.
    async fn run_events(&self, run_id: Uuid) -> Result<Vec<EventRow>>;
    /// The newest events, newest first.
    async fn recent_events(&self, limit: i64) -> Result<Vec<EventRow>>;
}

#[async_trait::async_trait]
impl Store for Tracker {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn create_run(&self, run: &NewRun) -> Result<Admitted> {
        crate::slots::create_run(self, run).await
    }
    async fn admit_waiting(&self, sequence: &str) -> Result<Vec<(Uuid, String)>> {
        crate::slots::admit_waiting(self, sequence).await
    }
    async fn waiting_sequences(&self) -> Result<Vec<String>> {
        crate::slots::waiting_sequences(self).await
    }
    async fn mark_stalled(&self, key: ExecKey, stalled: bool) -> Result<bool> {
        crate::executions::mark_stalled(self, key, stalled).await
    }
    async fn append_logs(&self, pieces: &[LogPiece]) -> Result<()> {
        crate::logs::append_logs(self, pieces).await
    }
    async fn trim_log(&self, key: ExecKey, head_end: i64, keep_from: i64) -> Result<u64> {
        crate::logs::trim_log(self, key, head_end, keep_from).await
    }
    async fn finish_log(&self, key: ExecKey, total: i64) -> Result<()> {
        crate::logs::finish_log(self, key, total).await
    }
    async fn read_log(&self, key: ExecKey, from: i64, limit: i64) -> Result<Vec<LogRow>> {
        crate::logs::read_log(self, key, from, limit).await
    }
    async fn log_states(&self, run_id: Uuid) -> Result<Vec<LogState>> {
        crate::logs::log_states(self, run_id).await
    }
    async fn schedule_cursor(&self, name: &str) -> Result<Cursor> {
        crate::schedules::schedule_cursor(self, name).await
    }
    async fn register_schedules(&self, names: &[String]) -> Result<()> {
        crate::schedules::register_schedules(self, names).await
    }
    async fn schedule_cursors(&self, names: &[String]) -> Result<Vec<(String, Cursor)>> {
        crate::schedules::schedule_cursors(self, names).await
    }
    async fn record_slot(&self, schedule: &str, slot: DateTime<Utc>, fate: &str, note: Option<&str>) -> Result<bool> {
        crate::schedules::record_slot(self, schedule, slot, fate, note).await
    }
    async fn fire_slot(
        &self,
        schedule: &str,
        slot: DateTime<Utc>,
        fate: &str,
        run: &NewRun,
    ) -> Result<Option<Admitted>> {
        crate::schedules::fire_slot(self, schedule, slot, fate, run).await
    }
    async fn schedule_slots(&self, schedule: &str, limit: i64) -> Result<Vec<SlotView>> {
        crate::schedules::schedule_slots(self, schedule, limit).await
    }
    async fn pause_schedule(&self, name: &str, by: &str, note: &str) -> Result<bool> {
        crate::schedules::pause_schedule(self, name, by, note).await
    }
    async fn resume_schedule(&self, name: &str) -> Result<bool> {
        crate::schedules::resume_schedule(self, name).await
    }
    async fn schedule_states(&self) -> Result<Vec<ScheduleState>> {
        crate::schedules::schedule_states(self).await
    }
    async fn flag_late_slots(&self, after: Duration) -> Result<Vec<LateSlot>> {
        crate::schedules::flag_late_slots(self, after).await
    }
    async fn apply_within_limit(&self, write: &Write<'_>) -> Result<std::result::Result<Written, String>> {
        crate::slots::apply_within_limit(self, write).await
    }
    async fn mark_run_published(&self, run_id: Uuid) -> Result<()> {
        crate::runs::mark_run_published(self, run_id).await
    }
    async fn run_view(&self, run_id: Uuid) -> Result<Option<RunView>> {
        crate::runs::run_view(self, run_id).await
    }
    async fn run_queue(&self, run_id: Uuid) -> Result<Option<String>> {
        crate::runs::run_queue(self, run_id).await
    }
    async fn last_step_succeeded(&self, run_id: Uuid) -> Result<bool> {
        crate::runs::last_step_succeeded(self, run_id).await
    }
    async fn failed_step_attempts(&self, run_id: Uuid) -> Result<Option<(u32, u32)>> {
        crate::runs::failed_step_attempts(self, run_id).await
    }
    async fn apply(&self, write: &Write<'_>) -> Result<Written> {
        crate::apply::apply_write(self, write).await
    }
    async fn claim(&self, key: ExecKey, worker_id: Uuid, lease: Duration) -> Result<Option<Claimed>> {
        crate::executions::claim(self, key, worker_id, lease).await
    }
    async fn exec_states(&self, key: ExecKey) -> Result<Option<(RunState, Option<ExecState>)>> {
        crate::executions::exec_states(self, key).await
    }
    async fn cancel_queued(&self, key: ExecKey) -> Result<bool> {
        crate::executions::cancel_queued(self, key).await
    }
    async fn record_pid(&self, key: ExecKey, worker_id: Uuid, pid: u32) -> Result<()> {
        crate::executions::record_pid(self, key, worker_id, pid).await
    }
    async fn mark_exec_published(&self, key: ExecKey) -> Result<()> {
        crate::executions::mark_exec_published(self, key).await
    }
    async fn retry_policy(&self, run_id: Uuid, step: u32) -> Result<RetryPolicy> {
        crate::executions::retry_policy(self, run_id, step).await
    }
    async fn register_worker(&self, worker: &WorkerInfo) -> Result<()> {
        crate::workers::register_worker(self, worker).await
    }
    async fn heartbeat(
        &self,
        worker_id: Uuid,
        draining: bool,
        lease: Duration,
        holding: &[ExecKey],
    ) -> Result<Vec<Held>> {
        crate::workers::heartbeat(self, worker_id, draining, lease, holding).await
    }
    async fn worker_stopped(&self, worker_id: Uuid) -> Result<()> {
        crate::workers::worker_stopped(self, worker_id).await
    }
    async fn worker_died(&self, worker_id: Uuid) -> Result<u64> {
        crate::workers::worker_died(self, worker_id).await
    }
    async fn take_reaper_lease(&self, worker_id: Uuid, ttl: Duration) -> Result<bool> {
        crate::recovery::take_reaper_lease(self, worker_id, ttl).await
    }
    async fn unpublished_runs(&self, older_than: Duration, limit: i64) -> Result<Vec<(Uuid, String)>> {
        crate::recovery::unpublished_runs(self, older_than, limit).await
    }
    async fn unpublished_executions(&self, older_than: Duration, limit: i64) -> Result<Vec<(ExecKey, String)>> {
        crate::recovery::unpublished_executions(self, older_than, limit).await
    }
    async fn next_retry_due(&self) -> Result<Option<Duration>> {
        crate::recovery::next_retry_due(self).await
    }
    async fn expired_executions(&self, limit: i64) -> Result<Vec<Expired>> {
        crate::recovery::expired_executions(self, limit).await
    }
    async fn stuck_runs(&self, older_than: Duration, limit: i64) -> Result<Vec<Stuck>> {
        crate::recovery::stuck_runs(self, older_than, limit).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>> {
        crate::views::list_runs(self, filter).await
    }
    async fn run_detail(&self, run_id: Uuid) -> Result<Option<RunDetail>> {
        crate::views::run_detail(self, run_id).await
    }
    async fn queue_loads(&self) -> Result<Vec<QueueLoad>> {
        crate::views::queue_loads(self).await
    }
    async fn list_workers(&self) -> Result<Vec<WorkerView>> {
        crate::views::list_workers(self).await
    }
    async fn last_runs_by_sequence(&self, sequences: &[String], per_sequence: u32) -> Result<Vec<RunSummary>> {
        crate::ui_queries::last_runs_by_sequence(self, sequences, per_sequence).await
    }
    async fn runs_fingerprint(&self) -> Result<String> {
        crate::ui_queries::runs_fingerprint(self).await
    }
    async fn run_fingerprint(&self, run_id: Uuid) -> Result<Option<String>> {
        crate::ui_queries::run_fingerprint(self, run_id).await
    }
    async fn state_counts(&self, alive_within: Duration) -> Result<StateCounts> {
        crate::ui_queries::state_counts(self, alive_within).await
    }
    async fn activity(
        &self,
        within: Duration,
        duration_bounds_ms: &[i64],
        memory_bounds_kib: &[i64],
    ) -> Result<Activity> {
        crate::activity::activity(self, within, duration_bounds_ms, memory_bounds_kib).await
    }
    async fn sequence_history(&self, sequence: &str, limit: u32) -> Result<SequenceHistory> {
        crate::history::sequence_history(self, sequence, limit).await
    }
    async fn ping(&self) -> Result<()> {
        crate::ui_queries::ping(self).await
    }
    async fn close(&self) {
        Tracker::close(self).await
    }

    // --- retention
    async fn prune_batch(
        &self,
        retention: &Retention,
        from: Option<PruneCursor>,
        limit: u32,
        dry_run: bool,
    ) -> Result<PruneBatch> {
        crate::retention::prune_batch(self, retention, from, limit, dry_run).await
    }
    async fn prune_events_batch(
        &self,
        older_than: Duration,
        from: Option<EventCursor>,
        limit: u32,
        dry_run: bool,
    ) -> Result<EventPruneBatch> {
        crate::retention::prune_events_batch(self, older_than, from, limit, dry_run).await
    }
    async fn storage_figures(&self) -> Result<StorageFigures> {
        crate::retention::storage_figures(self).await
    }

    // --- events and alerts
    async fn record_event(&self, event: &NewEvent) -> Result<i64> {
        crate::events::record_event(self, event).await
    }
    async fn mark_lost_workers(&self, silent_for: Duration) -> Result<Vec<(Uuid, String)>> {
        crate::events::mark_lost_workers(self, silent_for).await
    }
    async fn take_alert_lease(&self, worker_id: Uuid, ttl: Duration) -> Result<bool> {
        crate::events::take_alert_lease(self, worker_id, ttl).await
    }
    async fn unrouted_events(&self, limit: i64) -> Result<Vec<EventRow>> {
        crate::events::unrouted_events(self, limit).await
    }
    async fn last_sent(
        &self,
        keys: &[(String, String, String)],
    ) -> Result<Vec<(String, String, String, DateTime<Utc>)>> {
        crate::events::last_sent(self, keys).await
    }
    async fn route_events(&self, events: &[i64], routes: &[Route]) -> Result<()> {
        crate::events::route_events(self, events, routes).await
    }
    async fn held_groups(&self) -> Result<Vec<HeldGroup>> {
        crate::events::held_groups(self).await
    }
    async fn flush_held(&self, target: &str, kind: &str, subject: &str) -> Result<bool> {
        crate::events::flush_held(self, target, kind, subject).await
    }
    async fn claim_deliveries(&self, worker_id: Uuid, limit: i64, hold: Duration) -> Result<Vec<DueDelivery>> {
        crate::events::claim_deliveries(self, worker_id, limit, hold).await
    }
    async fn record_attempt(&self, attempt: &AttemptRecord<'_>) -> Result<bool> {
        crate::events::record_attempt(self, attempt).await
    }
    async fn recent_deliveries(&self, limit: i64) -> Result<Vec<DeliveryView>> {
        crate::events::recent_deliveries(self, limit).await
    }
    async fn alert_counts(&self) -> Result<Vec<(String, String, i64)>> {
        crate::events::alert_counts(self).await
    }
    async fn run_events(&self, run_id: Uuid) -> Result<Vec<EventRow>> {
        crate::events::run_events(self, run_id).await
    }
    async fn recent_events(&self, limit: i64) -> Result<Vec<EventRow>> {
        crate::events::recent_events(self, limit).await
    }
}
