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
//!    that should have followed their latest step was lost).

use crate::handlers::publish_noted;
use crate::worker::Ctx;
use scheduler_core::Message;
use scheduler_core::machine::{self, Decision};
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
}

impl Report {
    fn is_empty(&self) -> bool {
        *self == Report::default()
    }
}

pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(ctx.config.reap_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match ctx
            .tracker
            .take_reaper_lease(ctx.worker_id, ctx.config.reap_every * 3)
            .await
        {
            Ok(true) => match reap_once(&ctx).await {
                Ok(report) if !report.is_empty() => tracing::warn!(?report, "recovery acted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "recovery pass failed; retrying at the next tick"),
            },
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "could not take the reaper lease"),
        }
    }
}

pub async fn reap_once(ctx: &Ctx) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let grace = ctx.config.republish_after;
    let (tracker, broker) = (&ctx.tracker, &ctx.broker);

    for (run_id, queue) in tracker.unpublished_runs(grace, 500).await? {
        broker.declare(&queue).await?;
        publish_noted(tracker, broker, &queue, &Message::StartEtl { run_id }).await?;
        tracing::warn!(%run_id, "recovery: published start_etl of a run recorded while the broker was unreachable");
        report.republished_runs += 1;
    }

    for (key, queue) in tracker.unpublished_executions(grace, 500).await? {
        let message = Message::ExecModule {
            run_id: key.run_id,
            step: key.step,
            attempt: key.attempt,
        };
        publish_noted(tracker, broker, &queue, &message).await?;
        tracing::warn!(run_id = %key.run_id, step = key.step, attempt = key.attempt, "recovery: published an exec_module that was committed but never sent");
        report.republished_steps += 1;
    }

    let host = crate::trigger::hostname();
    for expired in tracker.expired_executions(500).await? {
        let key = expired.key;
        // Two copies of a step must never run at once: if the dead worker ran
        // on this host, kill what it left before the step runs again.
        if expired.worker_host.as_deref().is_none_or(|h| h == host) {
            let run = key.run_id.to_string();
            if let Some(pid) = expired.pid
                && scheduler_executor::kill_orphan_group(pid, &run)
            {
                report.killed_orphans += 1;
            }
            // A worker that died between the spawn and recording the pid:
            // find the module by the environment it was given.
            report.killed_orphans += scheduler_executor::kill_orphans_of(&run, key.step, key.attempt);
        }
        let decision = machine::on_lease_expired(expired.run, key.step, key.attempt, ctx.config.max_attempts);
        let plan = match decision {
            Decision::Apply(plan) => Some(plan),
            Decision::Drop(_) => None,
        };
        let next = plan.as_ref().and_then(|p| p.queue);
        let reason = format!(
            "worker {} stopped renewing its lease (killed, or cut off from the database); step handed back",
            expired.worker_id.map(|w| w.to_string()).unwrap_or_else(|| "?".into())
        );
        let (abandoned, queued) = tracker.abandon_expired(key, &reason, next).await?;
        if !abandoned {
            continue;
        }
        tracing::warn!(run_id = %key.run_id, step = key.step, attempt = key.attempt, "recovery: lease expired; step abandoned");
        let Some(message) = plan.and_then(|p| p.publish) else {
            continue;
        };
        if next.is_some() && !queued {
            continue;
        }
        match &message {
            Message::ExecModule { .. } => report.requeued_steps += 1,
            _ => report.failed_runs += 1,
        }
        publish_noted(tracker, broker, &expired.queue, &message).await?;
    }

    for stuck in tracker.stuck_runs(grace, 500).await? {
        let Decision::Apply(plan) = machine::on_stuck(stuck.run, stuck.last.as_ref()) else {
            continue;
        };
        if let Some((step, attempt)) = plan.queue
            && !tracker.queue_execution(stuck.run.id, step, attempt).await?
        {
            continue;
        }
        if let Some(message) = plan.publish {
            tracing::warn!(run_id = %stuck.run.id, kind = message.kind(), "recovery: run had nothing in flight; publishing what follows its latest step");
            publish_noted(tracker, broker, &stuck.queue, &message).await?;
            report.redecided_runs += 1;
        }
    }
    Ok(report)
}
