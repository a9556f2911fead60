//! `exec_module`: the hot path. Take a module permit (`permits.rs`), claim
//! the step in the store (compare-and-set `queued -> running`, with a
//! lease), run the module and give the permit back, decide what follows,
//! record the result and queue the next step in one statement, publish it
//! (or continue here).
//!
//! The delivery is acknowledged right after the claim: from then on the step
//! is held by its lease in PostgreSQL, not by the broker, so a module may run
//! for hours without tripping RabbitMQ's `consumer_timeout`.
//!
//! Local continuation: when a step succeeds and the state machine queues the
//! next one, the worker records the result and claims the next step for
//! itself in the same statement, and runs it in the place its run holds
//! (its module takes a permit again: `permits.rs`). The decision
//! is the state machine's (the `exec_module` it would publish); only its
//! delivery is local, because it would come back to a worker of the same
//! queue anyway. This takes the broker out of the per-step path, and keeps a
//! run's intermediate files on the machine that wrote them. A draining
//! worker does not continue: it queues and publishes the next step for
//! another worker.

use crate::permit_queue::Waiter;
use crate::worker::{Active, Ctx, StopReason};
use crate::{module, stall};
use scheduler_broker::Incoming;
use scheduler_core::RetryPolicy;
use scheduler_core::machine::{self, Claim, Decision, NO_RETRY, Plan, Retry, RunView, StepOutcome};
use scheduler_core::{ExecState, RunState};
use scheduler_producer::{failpoint, publish_written};
use scheduler_tracker::{ClaimFor, Claimed, Close, ExecKey, ExecResult, Write, Written};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A module still running this long after its spawn has its pid recorded
/// while it runs; every module has it recorded with its result.
const PID_WRITE_AFTER: Duration = Duration::from_millis(200);

pub async fn handle(ctx: &Ctx, incoming: Incoming, key: ExecKey) {
    // A module slot before the claim: a step claimed here runs here.
    let Some(permit) = ctx.permits.acquire(Waiter::Fresh).await else {
        return requeue_unclaimed(incoming).await;
    };
    let claimed = match ctx.store.claim(key, ctx.worker_id, ctx.config.lease).await {
        Ok(Some(claimed)) => claimed,
        Ok(None) => return refuse(ctx, incoming, key).await,
        // Not claimed, so nobody runs it: give it back to the queue.
        Err(e) => return crate::handlers::requeue_later(incoming, &e).await,
    };
    run_here(ctx, incoming, key, claimed, permit).await;
}

/// A delivery that found no free module slot in time goes back to its
/// queue unclaimed, for another worker (or this one, once a slot frees);
/// the embedded queue does not count it toward its delivery limit.
pub(crate) async fn requeue_unclaimed(incoming: Incoming) {
    if let Err(e) = incoming.put_back().await {
        tracing::warn!(error = %e, "could not requeue; the broker will redeliver it");
    }
}

/// Runs a step this worker has claimed, and the steps it continues into,
/// in the place its delivery holds; each module in a permit of its own.
///
/// The delivery stays unsettled while the run is short: it is what counts
/// against the inbox's slots (RabbitMQ's prefetch), so nothing changes on
/// the broker, and acknowledging it when the run leaves the slot lets the
/// next message in at once. Taking a slot instead (`Slots::take`) replaces
/// the consumer: a cancel before the first module and a new consumer after
/// the run, a wait of 1 to 10 ms on a quorum queue at each end. A run still
/// in the slot after [`HOLD_AT_MOST`] takes a slot and acknowledges its
/// delivery then, so a module may run for hours without tripping
/// RabbitMQ's `consumer_timeout` (the step is held by its lease in the
/// store, not by the delivery, from its claim on).
pub(crate) async fn run_here(ctx: &Ctx, incoming: Incoming, key: ExecKey, claimed: Claimed, permit: Permit) {
    failpoint::hit(failpoint::AFTER_CLAIM);
    let left = CancellationToken::new();
    let replaced = ctx.slots.replaced();
    let holding = tokio::spawn(hold(ctx.slots.clone(), incoming, left.clone(), replaced));
    let (mut key, mut claimed, mut permit) = (key, claimed, permit);
    loop {
        let span = tracing::info_span!("step", step = key.step, attempt = key.attempt, module = %claimed.module);
        match execute(ctx, key, claimed, permit).instrument(span).await {
            Some((next_key, next, next_permit)) => (key, claimed, permit) = (next_key, next, next_permit),
            None => break,
        }
    }
    left.cancel();
    // Only after the slot was taken (if it was): never free it first.
    if holding.await.unwrap_or(false)
        && let Err(e) = ctx.slots.free().await
    {
        tracing::warn!(error = %e, "could not adjust the prefetch after the step");
    }
}

/// How long a run may keep its delivery unsettled before it takes a slot
/// and acknowledges it: far below RabbitMQ's `consumer_timeout` (30 min by
/// default) and the embedded queue's consumer TTL (15 s), and long enough
/// that a slot change costs a long run nothing that shows.
pub const HOLD_AT_MOST: Duration = Duration::from_secs(5);

/// Settles a running run's delivery: when the run leaves the slot (`left`),
/// or, if that is later than [`HOLD_AT_MOST`] or the channel is `replaced`
/// first, by taking a slot and acknowledging it then. Returns whether it
/// took a slot (to be freed).
async fn hold(
    slots: scheduler_broker::Slots,
    incoming: Incoming,
    left: CancellationToken,
    replaced: impl std::future::Future<Output = ()>,
) -> bool {
    let took = tokio::select! {
        _ = left.cancelled() => false,
        // The channel was replaced: the delivery went back to its queue (its
        // redelivery is dropped as already claimed) and no longer counts.
        _ = replaced => true,
        _ = tokio::time::sleep(HOLD_AT_MOST) => true,
    };
    if took && let Err(e) = slots.take(&incoming).await {
        tracing::warn!(error = %e, "could not adjust the prefetch; continuing");
    }
    if let Err(e) = incoming.ack().await {
        tracing::warn!(error = %e, "could not acknowledge; a redelivery will be dropped as already claimed");
    }
    took
}

/// The step was not claimable: find out why, act on it, drop the message.
async fn refuse(ctx: &Ctx, incoming: Incoming, key: ExecKey) {
    match ctx.store.exec_states(key).await {
        Ok(states) => {
            let (run, exec) = match states {
                Some((run, exec)) => (run, exec),
                None => (RunState::Canceled, None),
            };
            match machine::on_exec(run, exec) {
                Claim::CancelQueued => {
                    if let Err(e) = ctx.store.cancel_queued(key).await {
                        tracing::warn!(error = %e, "could not mark the step canceled");
                    }
                    tracing::info!(step = key.step, %run, "run is no longer running; step canceled without running");
                }
                Claim::Drop(why) => tracing::info!(step = key.step, attempt = key.attempt, why, "dropped"),
                // Became claimable between the two reads (e.g. a retry): let
                // the broker hand it out again.
                Claim::Take => {
                    let _ = incoming.requeue().await;
                    return;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read why the step is not claimable; dropping the duplicate"),
    }
    let _ = incoming.ack().await;
}

/// A module slot (`permits.rs`).
pub(crate) type Permit = crate::permit_queue::Permit;

/// Runs one claimed step and records it; returns the next step when this
/// worker claimed it to continue locally, with the module slot it will run
/// in. A continuation that finds no slot in time is handed back.
async fn execute(ctx: &Ctx, key: ExecKey, claimed: Claimed, permit: Permit) -> Option<(ExecKey, Claimed, Permit)> {
    let (result, outcome) = run_module(ctx, key, &claimed, permit).await;
    let (next_key, next) = conclude(ctx, key, &claimed, &result, &outcome, true).await?;
    match ctx.permits.acquire(Waiter::Continuation).await {
        Some(permit) => Some((next_key, next, permit)),
        None => {
            hand_back(ctx, next_key, &next).await;
            None
        }
    }
}

/// A continuation claimed here that found no free module slot: recorded as
/// an attempt that did not start, and handed back to its queue as the next
/// attempt (as a step given up at shutdown is), for any worker.
async fn hand_back(ctx: &Ctx, key: ExecKey, claimed: &Claimed) {
    let reason = format!(
        "step {} ({}) was not started: this worker had no free module slot within {:?}; handed back to its queue as attempt {}",
        key.step + 1,
        claimed.module,
        crate::permits::WAIT_AT_MOST,
        key.attempt + 1
    );
    tracing::warn!(step = key.step, attempt = key.attempt, "{reason}");
    let result = ExecResult {
        error: Some(reason),
        ..ExecResult::new(ExecState::Abandoned)
    };
    conclude(ctx, key, claimed, &result, &StepOutcome::Interrupted, false).await;
}

/// Records how a step ended and what follows it, and publishes that (or,
/// with `may_continue` and a next step due now, claims it for this worker
/// in the same write and returns it).
async fn conclude(
    ctx: &Ctx,
    key: ExecKey,
    claimed: &Claimed,
    result: &ExecResult,
    outcome: &StepOutcome,
    may_continue: bool,
) -> Option<(ExecKey, Claimed)> {
    let plan = follow_up(ctx, key, claimed, result, outcome).await;
    // The run's end is delivered here too, unless draining: the write that
    // records the last step (or the failed one) moves the run, instead of
    // an `end_etl` / `error_handler` through the broker and another write.
    let plan = match ctx.is_draining() {
        true => plan,
        false => machine::settle_here(running_view(key, claimed), plan),
    };
    // Continue here unless draining: the next step is inserted claimed by
    // this worker, in the statement that records this one. A retry waits for
    // its delay instead: recovery publishes it when due, to any worker.
    let now = plan.queue.is_some_and(|q| q.delay.is_none());
    let chain = (now && may_continue && !ctx.is_draining()).then_some(ClaimFor {
        worker_id: ctx.worker_id,
        lease: ctx.config.lease,
        queues: &ctx.config.queues,
    });
    let written = record(ctx, key, result, &plan, chain).await;
    // Held (its lease renewed) until its result is recorded or given up.
    ctx.active.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    let written = written?;
    if !written.closed {
        tracing::warn!("the step was taken away from this worker (lease lost); its result is not recorded");
        return None;
    }
    module::log_result(key, &claimed.module, result);
    if let Some(retry) = plan.queue.filter(|q| q.delay.is_some() && written.queued) {
        publish_when_due(ctx, key.run_id, retry);
    }
    let ended = plan.run.filter(|m| m.to.is_final() && written.run);
    if let Some(m) = ended {
        match &plan.failure {
            Some(f) => tracing::warn!(step = f.step, reason = f.reason, "step failed; marking the run failed"),
            None => tracing::info!(to = %m.to, "run ended"),
        }
    }
    // The run ended (canceled) while its module ran, or this write ended
    // it: its slot is free for a run waiting on it.
    if (!written.run || (ended.is_some() && written.limited))
        && let Err(e) = scheduler_producer::admit_waiting(&*ctx.store, &*ctx.transport, &claimed.sequence).await
    {
        tracing::warn!(error = %e, "could not start the run waiting for this slot; recovery will");
    }
    if let (Some(next), Some(q)) = (written.claimed.clone(), plan.queue) {
        let next_key = ExecKey {
            run_id: key.run_id,
            step: q.step,
            attempt: q.attempt,
        };
        return Some((next_key, next));
    }
    if plan.publish.is_some() {
        failpoint::hit(failpoint::AFTER_COMMIT);
    }
    if let Some(why) = written.not_applied(&plan) {
        tracing::info!(why, "nothing follows this step");
        return None;
    }
    if let Err(e) = publish_written(&*ctx.store, &*ctx.transport, key.run_id, &plan, &written).await {
        // Committed but not published: recovery finds it by its missing
        // published_at (or the run with nothing in flight) and publishes it.
        tracing::error!(error = %e, "could not publish what follows this step");
    }
    None
}

/// A retry's delay is kept by the worker that recorded it: it publishes the
/// retry once due, so the delay holds to within milliseconds without the
/// reaper polling. Recovery (on whichever worker holds its lease) stays the
/// backstop when this worker is gone by then; should both publish, the
/// claim takes one and drops the other.
fn publish_when_due(ctx: &Ctx, run_id: uuid::Uuid, retry: scheduler_core::machine::StepAttempt) {
    let Some(delay) = retry.delay else { return };
    let (store, transport) = (ctx.store.clone(), ctx.transport.clone());
    let key = ExecKey {
        run_id,
        step: retry.step,
        attempt: retry.attempt,
    };
    tokio::spawn(async move {
        // Due by the store's clock, a moment after this one's.
        tokio::time::sleep(delay + Duration::from_millis(20)).await;
        let due = match store.unpublished_executions(Duration::ZERO, 500).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, %run_id, "could not look up a due retry; recovery publishes it");
                return;
            }
        };
        for (_, queue) in due.into_iter().filter(|(k, _)| *k == key) {
            let message = scheduler_core::Message::ExecModule {
                run_id,
                step: key.step,
                attempt: key.attempt,
            };
            match scheduler_producer::publish_noted(&*store, &*transport, &queue, &message).await {
                Ok(()) => tracing::info!(%run_id, step = key.step, attempt = key.attempt, "retry due: published"),
                Err(e) => tracing::warn!(error = %e, %run_id, "could not publish a due retry; recovery will"),
            }
        }
    });
}

/// Spawns the module in its slot, records its pid, waits for it (or for a
/// stop), gives the slot back, and judges how it ended.
async fn run_module(ctx: &Ctx, key: ExecKey, claimed: &Claimed, permit: Permit) -> (ExecResult, StepOutcome) {
    let stop = CancellationToken::new();
    let reason = Arc::new(OnceLock::new());
    ctx.active.lock().unwrap_or_else(|p| p.into_inner()).insert(
        key,
        Active {
            stop: stop.clone(),
            reason: reason.clone(),
            since: ctx.clock.now(),
            pid: None,
        },
    );
    let started = ctx.clock.now();
    let started_wall = std::time::SystemTime::now();
    let w = &claimed.watch;
    let cwd = module::cwd(ctx, claimed);
    let mut warnings: Vec<String> = crate::contract::missing_input(&cwd, &w.input).into_iter().collect();
    let watch = w.stall_secs.map(|secs| {
        let output = crate::contract::is_local(&w.output).then(|| crate::contract::resolve(&cwd, &w.output));
        Watching {
            watch: stall::Watch::new(Duration::from_secs(secs), output),
            activity: Arc::new(stall::Activity::new()),
            kill: w.on_stall == scheduler_core::OnStall::Kill,
        }
    });
    let activity = watch.as_ref().map(|w| w.activity.clone());
    let ended = match scheduler_executor::spawn(module::spec(ctx, key, claimed, activity)).await {
        Err(e) => {
            drop(permit);
            tracing::warn!(error = %e, "module could not start");
            module::could_not_start(key, &claimed.module, &e, ctx.clock.now() - started)
        }
        Ok(running) => {
            let pid = running.pid();
            failpoint::hit(failpoint::AFTER_SPAWN);
            if let Some(a) = ctx.active.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&key) {
                a.pid = Some(pid);
            }
            // The pid is recorded with the result. A module still running
            // after `PID_WRITE_AFTER` has it recorded now too, for the pages
            // and for recovery; a short one costs no write of its own (the
            // keeper and recovery find a module by its environment, not by
            // its pid, so a crash before this write loses nothing). On its
            // own task: a database that stops answering must not keep the
            // worker from waiting on (and stopping) the module. A late write
            // after the result changes nothing (it applies only while the
            // execution is running).
            let (store, worker_id, ended) = (ctx.store.clone(), ctx.worker_id, CancellationToken::new());
            let ended_guard = ended.clone().drop_guard();
            tokio::spawn(async move {
                tokio::select! {
                    _ = ended.cancelled() => return,
                    _ = tokio::time::sleep(PID_WRITE_AFTER) => {}
                }
                if let Err(e) = store.record_pid(key, worker_id, pid).await {
                    tracing::warn!(error = %e, pid, "could not record the module's pid");
                }
            });
            let outcome = match watch {
                None => running.wait(stop).await,
                Some(watching) => watched(ctx, key, running, stop, &reason, watching).await,
            };
            drop(ended_guard);
            // The module is reaped: its slot is free while the step records.
            drop(permit);
            ctx.permits.ended(outcome.duration).await;
            let (mut result, mut step) = module::judge(key, &claimed.module, &outcome, reason.get().copied());
            result.pid = Some(pid);
            if step == StepOutcome::Succeeded && w.check_output && crate::contract::is_local(&w.output) {
                let (cwd, output) = (cwd.clone(), w.output.clone());
                let checked =
                    tokio::task::spawn_blocking(move || crate::contract::check_output(&cwd, &output, started_wall))
                        .await
                        .unwrap_or_else(|e| Err(format!("could not check its output: {e}")));
                match checked {
                    Ok(facts) => result.output = Some(facts),
                    Err(why) => {
                        let reason = format!("step {} ({}) {why}", key.step + 1, claimed.module);
                        result.state = ExecState::Failed;
                        result.error = Some(reason.clone());
                        step = StepOutcome::Failed {
                            reason,
                            exit_code: Some(0),
                        };
                    }
                }
            }
            (result, step)
        }
    };
    let ended = {
        let (mut result, step) = ended;
        warnings.append(&mut result.warnings);
        result.warnings = warnings;
        (result, step)
    };
    // The module is gone; the step stays held until it is recorded.
    if let Some(a) = ctx.active.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&key) {
        a.pid = None;
    }
    ended
}

/// A module's stall watch, what feeds it, and whether a stall stops it.
struct Watching {
    watch: stall::Watch,
    activity: Arc<stall::Activity>,
    kill: bool,
}

/// Waits for a module under its stall watch: marks it stalled (and back)
/// in the record, and stops it when its `on_stall` says so.
async fn watched(
    ctx: &Ctx,
    key: ExecKey,
    running: scheduler_executor::Running,
    stop: CancellationToken,
    reason: &OnceLock<StopReason>,
    watching: Watching,
) -> scheduler_executor::Outcome {
    let Watching {
        mut watch,
        activity,
        kill,
    } = watching;
    let activity = &*activity;
    let wait = running.wait(stop.clone());
    tokio::pin!(wait);
    loop {
        let ended = tokio::select! {
            outcome = &mut wait => Some(outcome),
            _ = tokio::time::sleep(watch.every()) => None,
        };
        let look = watch.look(activity, std::time::Instant::now());
        if let Some(outcome) = ended {
            // It wrote again just before it ended: lift the mark.
            if look == stall::Look::Resumed
                && let Err(e) = ctx.store.mark_stalled(key, false).await
            {
                tracing::warn!(error = %e, "could not lift the step's stall mark");
            }
            return outcome;
        }
        match look {
            stall::Look::Quiet => {}
            stall::Look::Stalled(quiet) => {
                tracing::warn!(
                    quiet_secs = quiet.as_secs(),
                    kill,
                    "module stalled: no output and no growth of its output file"
                );
                if let Err(e) = ctx.store.mark_stalled(key, true).await {
                    tracing::warn!(error = %e, "could not mark the step stalled");
                }
                if kill {
                    let _ = reason.set(StopReason::Stalled);
                    stop.cancel();
                }
            }
            stall::Look::Resumed => {
                tracing::info!("stalled module wrote again");
                if let Err(e) = ctx.store.mark_stalled(key, false).await {
                    tracing::warn!(error = %e, "could not lift the step's stall mark");
                }
            }
        }
    }
}

/// The run as the step was claimed: running.
fn running_view(key: ExecKey, claimed: &Claimed) -> RunView {
    RunView {
        id: key.run_id,
        state: RunState::Running,
        step_count: claimed.step_count,
    }
}

/// What follows the step, from the state machine. Decided from the run as
/// it was at claim time (running); the recording statement re-checks that
/// it still is before queuing anything. A step stopped because its run was
/// canceled is followed by nothing.
async fn follow_up(ctx: &Ctx, key: ExecKey, claimed: &Claimed, result: &ExecResult, outcome: &StepOutcome) -> Plan {
    if result.state == ExecState::Canceled {
        return Plan::default();
    }
    let run = running_view(key, claimed);
    // The policy matters only after a failure: read it then, off the hot path.
    let (policy, jitter) = match outcome {
        StepOutcome::Failed { .. } => (retry_policy(ctx, key).await, jitter()),
        _ => (NO_RETRY, 0.0),
    };
    let retry = Retry {
        policy: &policy,
        done: claimed.retry,
        jitter,
    };
    match machine::on_step_done(run, key.step, key.attempt, outcome, retry) {
        Decision::Apply(plan) => plan,
        Decision::Drop(_) => Plan::default(),
    }
}

/// The failed step's retry policy. The database may be restarting: a few
/// tries, then none (the run fails, saying why in the worker's log; an
/// operator's retry is still possible).
async fn retry_policy(ctx: &Ctx, key: ExecKey) -> RetryPolicy {
    let mut delay = Duration::from_millis(200);
    for _ in 0..5 {
        match ctx.store.retry_policy(key.run_id, key.step).await {
            Ok(policy) => return policy,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "could not read the step's retry policy; trying again");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    tracing::error!("could not read the step's retry policy; the failure is not retried");
    NO_RETRY
}

/// A uniform sample in `[-1, 1]` for a retry's jitter (from the
/// operating system's randomness, through a v4 UUID).
fn jitter() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() >> 64) as u64;
    bits as f64 / u64::MAX as f64 * 2.0 - 1.0
}

/// Records the result and what follows in one write. The database may be
/// restarting: keep trying for up to a lease, so a step that finished
/// meanwhile is recorded once it is back. After that, recovery has taken the
/// step over (the write would not apply anyway): `None`.
async fn record(
    ctx: &Ctx,
    key: ExecKey,
    result: &ExecResult,
    plan: &Plan,
    chain: Option<ClaimFor<'_>>,
) -> Option<Written> {
    let write = Write {
        run_id: key.run_id,
        close: Some(Close::Finish {
            key,
            worker_id: ctx.worker_id,
            result,
        }),
        plan,
        claim_for: chain,
    };
    let give_up = ctx.clock.now() + ctx.config.lease;
    let mut delay = Duration::from_millis(200);
    loop {
        match ctx.store.apply(&write).await {
            Ok(written) => return Some(written),
            Err(e) if ctx.clock.now() + delay < give_up => {
                tracing::warn!(error = %e, retry_in = ?delay, "could not record the step's result; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, "could not record the step's result; recovery will re-run it");
                return None;
            }
        }
    }
}
