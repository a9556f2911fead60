//! Recovery. Every worker runs this loop; a lease in PostgreSQL
//! (`reaper_lease`) makes sure only one of them acts at a time. One pass,
//! [`reap_once`]:
//!
//! 1. publishes runs recorded as queued whose `start_etl` was never
//!    confirmed (a trigger while the broker was down);
//! 2. publishes queued executions whose `exec_module` was never confirmed (a
//!    crash between a commit and its publish);
//! 3. closes executions whose lease expired (their worker died or lost the
//!    database) as `abandoned` and queues the next attempt, or fails the run
//!    once the attempt limit is reached; a module left running by a dead
//!    worker on this host is killed first;
//! 4. decides again runs left `running` with nothing in flight (the message
//!    that should have followed their latest step was lost);
//! 5. (first) marks workers silent for a whole lease as lost, recording a
//!    `worker_lost` event with each.
//!
//! With a retention set (`worker --prune-older-than`), the lease holder also
//! prunes, every `prune_every` at most: [`prune_once`], a bounded number of
//! small batches, so a pass (and the recovery it delays) stays short.

use crate::worker::Ctx;
use scheduler_core::Message;
use scheduler_core::machine::{self, Decision, Plan};
use scheduler_producer::{Effect, ProducerError, publish_noted, publish_written};
use scheduler_tracker::{Close, Expired, PRUNE_BATCH, PRUNE_PAUSE, PruneCounts, PruneCursor, Retention, Write};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub republished_runs: usize,
    pub republished_steps: usize,
    pub requeued_steps: usize,
    pub failed_runs: usize,
    pub redecided_runs: usize,
    pub killed_orphans: usize,
    /// Waiting runs started because their sequence had a free slot that no
    /// one handed over (its holder's ending was not followed by the hand-over).
    pub admitted_runs: usize,
    /// Workers found silent for a whole lease (each recorded as `worker_lost`).
    pub lost_workers: usize,
}

impl Report {
    fn is_empty(&self) -> bool {
        *self == Report::default()
    }
}

pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut wait = std::time::Duration::ZERO;
    // When this worker last pruned (only ever while holding the lease),
    // and where the next pass goes on when the last one stopped at its
    // bound rather than at the end.
    let mut pruned_at: Option<std::time::Instant> = None;
    let mut prune_from: Option<PruneCursor> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            // A retry recorded here after the last pass looked for the next
            // one due: a pass now ends by waking for it.
            _ = ctx.retry_recorded.notified() => {}
        }
        wait = ctx.config.reap_every;
        match ctx
            .store
            .take_reaper_lease(ctx.worker_id, ctx.config.reap_every * 3)
            .await
        {
            Ok(true) => match reap_once(&ctx).await {
                Ok(report) => {
                    if !report.is_empty() {
                        tracing::warn!(?report, "recovery acted");
                    }
                    // After a pass that went through, the holder wakes for
                    // the next retry that comes due before its next pass,
                    // so a retry's delay is kept to within tens of
                    // milliseconds, not to within a pass. (After a failed
                    // pass it waits a whole pass: no hammering.)
                    if let Ok(Some(due)) = ctx.store.next_retry_due().await {
                        wait = wait.min(due.max(MIN_WAIT));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "recovery pass failed; retrying at the next tick"),
            },
            Ok(false) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "could not take the reaper lease");
                continue;
            }
        }
        // Holding the lease: prune too, when it is time.
        let Some(retention) = ctx.config.prune else { continue };
        if pruned_at.is_some_and(|at| ctx.clock.now().saturating_duration_since(at) < ctx.config.prune_every) {
            continue;
        }
        pruned_at = Some(ctx.clock.now());
        let pass = prune_once(&ctx, &retention, prune_from.take()).await;
        if let Ok((_, next)) = &pass {
            prune_from = *next;
        }
        match pass.map(|(counts, _)| counts) {
            Ok(c) if c.runs > 0 || c.events > 0 => tracing::info!(
                runs = c.runs,
                executions = c.executions,
                log_rows = c.log_rows,
                log_bytes = c.log_bytes,
                events = c.events,
                deliveries = c.deliveries,
                older_than_secs = retention.older_than.as_secs(),
                "retention: pruned finished runs"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed; trying again at the next one"),
        }
    }
}

/// Batches one retention pass runs at most ([`PRUNE_BATCH`] runs each, a
/// few hundred milliseconds in all): what is left goes at the next pass.
/// 5,000 runs every 5 minutes is 60,000 an hour, far more than a
/// deployment starts; a bigger backlog is `scheduler prune`'s job.
pub const PRUNE_BATCHES_PER_PASS: u32 = 10;

/// One retention pass: up to [`PRUNE_BATCHES_PER_PASS`] batches of
/// `retention`, oldest runs first from `from` (`None`: the oldest), a pause
/// between them; once the runs reached the end, the alert events of the
/// same age whose deliveries are over, in the batches left. Returns what
/// it deleted, and where the next pass goes on
/// (`None` when this one got to the end). Going on from there rather than
/// from the oldest again spares each pass a walk over the index entries of
/// the runs the previous ones deleted, which stay until vacuum; a pass that
/// got to the end starts over, for runs that became due behind it (kept
/// by `keep_last` until newer ones came, or skipped while locked).
pub async fn prune_once(
    ctx: &Ctx,
    retention: &Retention,
    mut from: Option<PruneCursor>,
) -> scheduler_tracker::Result<(PruneCounts, Option<PruneCursor>)> {
    let mut total = PruneCounts::default();
    let mut batches = 0;
    while batches < PRUNE_BATCHES_PER_PASS {
        if batches > 0 {
            tokio::time::sleep(PRUNE_PAUSE).await;
        }
        batches += 1;
        let done = ctx.store.prune_batch(retention, from, PRUNE_BATCH, false).await?;
        total += done.counts;
        from = done.next;
        if from.is_none() {
            break;
        }
    }
    // The runs done: the alert events of the same age whose deliveries are
    // over, from the oldest, in what is left of the pass's batches (few:
    // an event is one small row, and most passes find a handful).
    if from.is_none() {
        let mut events_from = None;
        while batches < PRUNE_BATCHES_PER_PASS {
            tokio::time::sleep(PRUNE_PAUSE).await;
            batches += 1;
            let done = ctx
                .store
                .prune_events_batch(retention.older_than, events_from, PRUNE_BATCH, false)
                .await?;
            total += done.counts;
            events_from = done.next;
            if events_from.is_none() {
                break;
            }
        }
    }
    Ok((total, from))
}

/// The shortest wait between two recovery passes, however soon a retry is due.
const MIN_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

pub async fn reap_once(ctx: &Ctx) -> Result<Report, ProducerError> {
    let mut report = Report::default();
    let grace = ctx.config.republish_after;
    let (store, transport) = (&*ctx.store, &*ctx.transport);

    // A worker silent for a whole lease is lost: marked once per silence,
    // its `worker_lost` event recorded in the same statement.
    for (worker_id, host) in store.mark_lost_workers(ctx.config.lease).await? {
        tracing::warn!(%worker_id, %host, "recovery: worker lost (no heartbeat for a whole lease)");
        report.lost_workers += 1;
    }

    for sequence in store.waiting_sequences().await? {
        report.admitted_runs += scheduler_producer::admit_waiting(store, transport, &sequence).await?;
    }

    for (run_id, queue) in store.unpublished_runs(grace, 500).await? {
        scheduler_producer::publish_start(store, transport, run_id, &queue).await?;
        tracing::warn!(%run_id, "recovery: published start_etl of a run recorded while the broker was unreachable");
        report.republished_runs += 1;
    }

    for (key, queue) in store.unpublished_executions(grace, 500).await? {
        let message = Message::ExecModule {
            run_id: key.run_id,
            step: key.step,
            attempt: key.attempt,
        };
        publish_noted(store, transport, &queue, &message).await?;
        tracing::warn!(run_id = %key.run_id, step = key.step, attempt = key.attempt, "recovery: published an exec_module that was committed but never sent");
        report.republished_steps += 1;
    }

    for expired in store.expired_executions(500).await? {
        report.killed_orphans += kill_leftovers(&expired);
        take_over(ctx, &expired, &mut report).await?;
    }

    for stuck in store.stuck_runs(grace, 500).await? {
        let decision = machine::on_stuck(stuck.run, stuck.last.as_ref());
        let kind = match &decision {
            Decision::Apply(Plan { publish: Some(m), .. }) => m.kind(),
            _ => continue,
        };
        if scheduler_producer::apply(store, transport, stuck.run.id, decision).await? == Effect::Done {
            tracing::warn!(run_id = %stuck.run.id, kind, "recovery: run had nothing in flight; publishing what follows its latest step");
            report.redecided_runs += 1;
        }
    }
    Ok(report)
}

/// Two copies of a step must never run at once: if the dead worker ran on
/// this host, kill what it left before the step runs again. Returns how
/// many process groups were killed.
fn kill_leftovers(expired: &Expired) -> usize {
    let key = expired.key;
    let host = scheduler_producer::hostname();
    if expired.worker_host.as_deref().is_some_and(|h| h != host) {
        return 0;
    }
    let run = key.run_id.to_string();
    let mut killed = 0;
    if let Some(pid) = expired.pid
        && scheduler_executor::kill_orphan_group(pid, &run)
    {
        killed += 1;
    }
    // A worker that died between the spawn and recording the pid: find the
    // module by the environment it was given.
    killed + scheduler_executor::kill_orphans_of(&run, key.step, key.attempt)
}

/// Closes an expired execution as `abandoned` and, in the same write,
/// queues its next attempt (or, at the attempt limit, nothing: the run
/// fails through `error_handler`); then publishes what follows.
async fn take_over(ctx: &Ctx, expired: &Expired, report: &mut Report) -> Result<(), ProducerError> {
    let key = expired.key;
    let plan = match machine::on_lease_expired(
        expired.run,
        key.step,
        key.attempt,
        expired.retry,
        expired.lost_before,
        ctx.config.max_attempts,
    ) {
        Decision::Apply(plan) => plan,
        Decision::Drop(_) => Plan::default(),
    };
    let reason = format!(
        "worker {} stopped renewing its lease (killed, or cut off from the database); step handed back",
        expired.worker_id.map(|w| w.to_string()).unwrap_or_else(|| "?".into())
    );
    let write = Write {
        run_id: key.run_id,
        close: Some(Close::Abandon { key, reason: &reason }),
        plan: &plan,
        claim_for: None,
    };
    let written = ctx.store.apply(&write).await?;
    if !written.closed {
        return Ok(());
    }
    tracing::warn!(run_id = %key.run_id, step = key.step, attempt = key.attempt, "recovery: lease expired; step abandoned");
    if !written.complete(&plan) {
        return Ok(());
    }
    match &plan.publish {
        Some(Message::ExecModule { .. }) => report.requeued_steps += 1,
        Some(_) => report.failed_runs += 1,
        None => return Ok(()),
    }
    publish_written(&*ctx.store, &*ctx.transport, key.run_id, &plan, &written).await
}
