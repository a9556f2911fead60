//! `exec_module`: the hot path. Claim the step in PostgreSQL (compare-and-set
//! `queued -> running`, with a lease), take a slot, acknowledge the delivery,
//! run the module, decide what follows, record the result and queue the next
//! step in one statement, publish it.
//!
//! The delivery is acknowledged right after the claim: from then on the step
//! is held by its lease in PostgreSQL, not by the broker, so a module may run
//! for hours without tripping RabbitMQ's `consumer_timeout`.
//!
//! Local continuation: when a step succeeds and the state machine queues the
//! next one, the worker records the result and claims the next step for
//! itself in the same statement, and runs it in the same slot. The decision
//! is the state machine's (the `exec_module` it would publish); only its
//! delivery is local, because it would come back to a worker of the same
//! queue anyway. This takes the broker out of the per-step path, and keeps a
//! run's intermediate files on the machine that wrote them. A draining
//! worker does not continue: it queues and publishes the next step for
//! another worker.

use crate::failpoint;
use crate::handlers::publish_noted;
use crate::worker::{Active, Ctx, StopReason};
use scheduler_broker::Incoming;
use scheduler_core::machine::{self, Claim, Decision, RunView, StepOutcome};
use scheduler_core::{ExecState, RunState};
use scheduler_executor::keeper::WORKER_ENV;
use scheduler_executor::{Ending, Outcome, Spec};
use scheduler_tracker::{Claimed, ExecKey, ExecResult};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub async fn handle(ctx: &Ctx, incoming: Incoming, key: ExecKey) {
    let claimed = match ctx.tracker.claim(key, ctx.worker_id, ctx.config.lease).await {
        Ok(Some(claimed)) => claimed,
        Ok(None) => return refuse(ctx, incoming, key).await,
        Err(e) => {
            tracing::warn!(error = %e, "could not claim the step; requeueing it in 1s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            // Not claimed, so nobody runs it: give it back to the queue.
            let _ = incoming.requeue().await;
            return;
        }
    };
    run_here(ctx, incoming, key, claimed).await;
}

/// Runs a step this worker has claimed: take a slot, release the delivery
/// (the lease in PostgreSQL holds the step now), run it and the steps it
/// continues into, free the slot.
pub(crate) async fn run_here(ctx: &Ctx, incoming: Incoming, key: ExecKey, claimed: Claimed) {
    failpoint::hit(failpoint::AFTER_CLAIM);
    if let Err(e) = ctx.slots.take().await {
        tracing::warn!(error = %e, "could not adjust the prefetch; continuing");
    }
    // The step is ours (lease in PostgreSQL): the delivery has done its job.
    if let Err(e) = incoming.ack().await {
        tracing::warn!(error = %e, "could not acknowledge; a redelivery will be dropped as already claimed");
    }
    let (mut key, mut claimed) = (key, claimed);
    loop {
        let span = tracing::info_span!("step", step = key.step, attempt = key.attempt, module = %claimed.module);
        match execute(ctx, key, claimed).instrument(span).await {
            Some((next_key, next)) => (key, claimed) = (next_key, next),
            None => break,
        }
    }
    if let Err(e) = ctx.slots.free().await {
        tracing::warn!(error = %e, "could not adjust the prefetch after the step");
    }
}

/// The step was not claimable: find out why, act on it, drop the message.
async fn refuse(ctx: &Ctx, incoming: Incoming, key: ExecKey) {
    match ctx.tracker.exec_states(key).await {
        Ok(states) => {
            let (run, exec) = match states {
                Some((run, exec)) => (run, exec),
                None => (RunState::Canceled, None),
            };
            match machine::on_exec(run, exec) {
                Claim::CancelQueued => {
                    if let Err(e) = ctx.tracker.cancel_queued(key).await {
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

/// Runs one claimed step and records it; returns the next step when this
/// worker claimed it to continue locally.
async fn execute(ctx: &Ctx, key: ExecKey, claimed: Claimed) -> Option<(ExecKey, Claimed)> {
    let stop = CancellationToken::new();
    let reason = Arc::new(OnceLock::new());
    ctx.active.lock().unwrap_or_else(|p| p.into_inner()).insert(
        key,
        Active {
            stop: stop.clone(),
            reason: reason.clone(),
            since: Instant::now(),
            pid: None,
        },
    );

    let started = Instant::now();
    let spec = Spec {
        argv: claimed.argv.clone(),
        cwd: ctx.project.dir().to_path_buf(),
        env: vec![
            ("ETL_RUN_ID".into(), key.run_id.to_string()),
            ("ETL_SEQUENCE".into(), claimed.sequence.clone()),
            ("ETL_STEP".into(), key.step.to_string()),
            ("ETL_MODULE".into(), claimed.module.clone()),
            ("ETL_ATTEMPT".into(), key.attempt.to_string()),
            (WORKER_ENV.into(), ctx.worker_id.to_string()),
        ],
        timeout: claimed
            .timeout_secs
            .map(Duration::from_secs)
            .or(ctx.config.default_timeout),
        kill_grace: ctx.config.kill_grace,
        tail_bytes: ctx.config.tail_bytes,
        log_label: format!("run={} step={} module={}", key.run_id, key.step, claimed.module),
    };
    let (result, outcome) = match scheduler_executor::spawn(spec).await {
        Err(e) => {
            tracing::warn!(error = %e, "module could not start");
            let reason = format!("step {} ({}) could not start: {e}", key.step + 1, claimed.module);
            let result = ExecResult {
                state: Some(ExecState::Failed),
                duration_ms: started.elapsed().as_millis() as i64,
                error: Some(reason.clone()),
                ..ExecResult::default()
            };
            (result, StepOutcome::Failed { reason })
        }
        Ok(running) => {
            let pid = running.pid();
            failpoint::hit(failpoint::AFTER_SPAWN);
            if let Some(a) = ctx.active.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&key) {
                a.pid = Some(pid);
            }
            if let Err(e) = ctx.tracker.record_pid(key, ctx.worker_id, pid).await {
                tracing::warn!(error = %e, pid, "could not record the module's pid");
            }
            let outcome = running.wait(stop).await;
            judge(key, &claimed.module, &outcome, reason.get().copied())
        }
    };
    ctx.active.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);

    // Decide from the run as it was at claim time (running); the recording
    // statement re-checks that it still is before queuing anything.
    let run = RunView {
        id: key.run_id,
        state: RunState::Running,
        step_count: claimed.step_count,
    };
    let plan = match result.state {
        Some(ExecState::Canceled) => None,
        _ => match machine::on_step_done(run, key.step, key.attempt, &outcome) {
            Decision::Apply(plan) => Some(plan),
            Decision::Drop(_) => None,
        },
    };
    let next = plan.as_ref().and_then(|p| p.queue);
    let chain = (next.is_some() && !ctx.is_draining()).then_some(ctx.config.lease);
    // The database may be restarting: keep trying for up to a lease, so a
    // step that finished meanwhile is recorded once it is back. After that,
    // recovery has taken the step over (the write would not apply anyway).
    let give_up = Instant::now() + ctx.config.lease;
    let mut delay = Duration::from_millis(200);
    let finished = loop {
        match ctx.tracker.finish(key, ctx.worker_id, &result, next, chain).await {
            Ok(f) => break f,
            Err(e) if Instant::now() + delay < give_up => {
                tracing::warn!(error = %e, retry_in = ?delay, "could not record the step's result; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, "could not record the step's result; recovery will re-run it");
                return None;
            }
        }
    };
    if !finished.recorded {
        tracing::warn!("the step was taken away from this worker (lease lost); its result is not recorded");
        return None;
    }
    log_result(key, &claimed.module, &result);
    if let (Some(next_claimed), Some((step, attempt))) = (finished.chained, next) {
        return Some((
            ExecKey {
                run_id: key.run_id,
                step,
                attempt,
            },
            next_claimed,
        ));
    }
    let message = plan.and_then(|p| p.publish)?;
    failpoint::hit(failpoint::AFTER_COMMIT);
    if next.is_some() && !finished.queued {
        tracing::info!("run is no longer running; not queuing the next step");
        return None;
    }
    if let Err(e) = publish_noted(&ctx.tracker, &ctx.broker, &ctx.config.queue, &message).await {
        // Committed but not published: recovery finds it by its missing
        // published_at and publishes it again.
        tracing::error!(error = %e, kind = message.kind(), "could not publish what follows this step");
    }
    None
}

/// Turns the module's outcome into the recorded result and the state
/// machine's view of it.
fn judge(key: ExecKey, module: &str, o: &Outcome, stop: Option<StopReason>) -> (ExecResult, StepOutcome) {
    let (state, outcome) = match (&o.ending, stop) {
        (_, _) if o.succeeded() => (ExecState::Succeeded, StepOutcome::Succeeded),
        (Ending::Canceled, Some(StopReason::RunCanceled)) => (
            ExecState::Canceled,
            StepOutcome::Failed {
                reason: "run canceled".into(),
            },
        ),
        // Shutdown past the drain bound, or the lease could not be renewed:
        // the module did not fail, it was stopped; hand the step back as its
        // next attempt (if recovery has not already: then this write does
        // not apply).
        (Ending::Canceled, _) => (ExecState::Abandoned, StepOutcome::Interrupted),
        _ => {
            let mut reason = format!("step {} ({}) failed: {}", key.step + 1, module, o.describe());
            if let Some(line) = o.stderr_tail.lines().rev().find(|l| !l.trim().is_empty()) {
                let line: String = line.chars().take(300).collect();
                reason.push_str(&format!(" — stderr: {line}"));
            }
            (ExecState::Failed, StepOutcome::Failed { reason })
        }
    };
    let mut error = match &outcome {
        StepOutcome::Failed { reason } => Some(reason.clone()),
        StepOutcome::Interrupted => Some(match stop {
            Some(StopReason::LeaseLost) => {
                "the worker could not renew its lease (database unreachable); stopped and handed back as a new attempt"
            }
            _ => "worker shut down before the module finished; handed back as a new attempt",
        }
        .into()),
        StepOutcome::Succeeded => None,
    };
    if let Some(leftover) = &o.leftover {
        error = Some(match error {
            Some(e) => format!("{e}; {leftover}"),
            None => leftover.clone(),
        });
    }
    let result = ExecResult {
        state: Some(state),
        duration_ms: o.duration.as_millis() as i64,
        exit_code: o.exit_code,
        signal: o.signal,
        error,
        stdout_tail: o.stdout_tail.clone(),
        stderr_tail: o.stderr_tail.clone(),
        stdout_bytes: o.stdout_bytes as i64,
        stderr_bytes: o.stderr_bytes as i64,
    };
    (result, outcome)
}

fn log_result(key: ExecKey, module: &str, r: &ExecResult) {
    let state = r.state.map(|s| s.as_str()).unwrap_or("failed");
    match &r.error {
        None => tracing::info!(
            step = key.step,
            module,
            state,
            duration_ms = r.duration_ms,
            "step finished"
        ),
        Some(error) => tracing::warn!(
            step = key.step,
            module,
            state,
            duration_ms = r.duration_ms,
            error,
            "step finished"
        ),
    }
}
