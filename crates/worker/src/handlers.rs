//! The quick messages: `start_etl`, `end_etl`, `error_handler`. Each loads
//! the run, asks the state machine, applies the decision as one
//! compare-and-set transition, publishes what follows, and only then
//! acknowledges the delivery.

use crate::worker::Ctx;
use scheduler_broker::{Broker, Incoming};
use scheduler_core::Message;
use scheduler_core::machine::{self, Decision, Plan};
use scheduler_tracker::{ExecKey, Tracker, Transition};
use std::time::Duration;
use uuid::Uuid;

/// What applying a decision did, for logs and for the CLI/UI actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// The state machine or a compare-and-set said there is nothing to do.
    Dropped(String),
}

pub async fn handle(ctx: &Ctx, incoming: Incoming, message: Message) {
    if let Message::StartEtl { run_id } = message
        && !ctx.is_draining()
    {
        return start_here(ctx, incoming, run_id).await;
    }
    match handle_message(&ctx.tracker, &ctx.broker, &ctx.config.queue, &message).await {
        Ok(Applied::Done) => tracing::debug!("handled"),
        Ok(Applied::Dropped(why)) => tracing::info!(why, "dropped"),
        Err(e) => {
            // The database (or broker) is unavailable: hand the message back
            // after a pause rather than lose it or spin on it.
            tracing::warn!(error = %e, "could not handle the message; requeueing it in 1s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(e) = incoming.requeue().await {
                tracing::warn!(error = %e, "could not requeue; the broker will redeliver it");
            }
            return;
        }
    }
    // Its effect is committed (or it had none): the delivery is done.
    if let Err(e) = incoming.ack().await {
        tracing::warn!(error = %e, "could not acknowledge; a redelivery will be dropped as a duplicate");
    }
}

/// `start_etl`, delivering the first step locally: the run's transition
/// inserts execution 0 already claimed by this worker (this delivery holds a
/// prefetch credit, so a slot is free), and the step runs here at once
/// instead of going back through the broker.
async fn start_here(ctx: &Ctx, incoming: Incoming, run_id: Uuid) {
    let decided = async {
        let Some(run) = ctx.tracker.run_view(run_id).await? else {
            return Ok::<_, anyhow::Error>(Err(format!("no run {run_id} is recorded (stale or foreign message)")));
        };
        let plan = match machine::on_start(run) {
            Decision::Apply(plan) => plan,
            Decision::Drop(why) => return Ok(Err(why.to_string())),
        };
        let Some((from, to)) = plan.run else {
            return Ok(Err("nothing to apply".into()));
        };
        let t = Transition {
            run_id,
            from,
            to,
            failure: None,
            queue: plan.queue,
            claim_for: Some((ctx.worker_id, ctx.config.lease)),
        };
        let applied = ctx.tracker.apply_transition(&t).await?;
        match (applied.applied, applied.claimed, plan.queue) {
            (true, Some(claimed), Some((step, attempt))) => Ok(Ok((ExecKey { run_id, step, attempt }, claimed))),
            _ => Ok(Err(format!("run left {from} before this {from} -> {to} applied"))),
        }
    };
    match decided.await {
        Ok(Ok((key, claimed))) => {
            tracing::info!(%run_id, "run started; running its first step here");
            crate::step::run_here(ctx, incoming, key, claimed).await;
        }
        Ok(Err(why)) => {
            tracing::info!(why, "dropped");
            let _ = incoming.ack().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not handle the message; requeueing it in 1s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = incoming.requeue().await;
        }
    }
}

async fn handle_message(tracker: &Tracker, broker: &Broker, queue: &str, message: &Message) -> anyhow::Result<Applied> {
    let run_id = message.run_id();
    let Some(run) = tracker.run_view(run_id).await? else {
        return Ok(Applied::Dropped(format!(
            "no run {run_id} is recorded (stale or foreign message)"
        )));
    };
    let decision = match message {
        Message::StartEtl { .. } => machine::on_start(run),
        Message::EndEtl { .. } => machine::on_end(run, tracker.last_step_succeeded(run_id).await?),
        Message::ErrorHandler { step, reason, .. } => {
            tracing::warn!(step, reason, "step failed; marking the run failed");
            machine::on_error(run, *step, reason)
        }
        Message::ExecModule { .. } => return Ok(Applied::Dropped("exec_module is not a quick message".into())),
    };
    apply(tracker, broker, queue, run_id, decision).await
}

/// Applies a decision: the transition (compare-and-set, with the execution
/// it queues in the same statement), then the publish, then notes the
/// publish. Used by the handlers and by operator actions (retry, cancel).
pub async fn apply(
    tracker: &Tracker,
    broker: &Broker,
    queue: &str,
    run_id: Uuid,
    decision: Decision,
) -> anyhow::Result<Applied> {
    let plan: Plan = match decision {
        Decision::Apply(plan) => plan,
        Decision::Drop(why) => return Ok(Applied::Dropped(why.to_string())),
    };
    if let Some((from, to)) = plan.run {
        let t = Transition {
            run_id,
            from,
            to,
            failure: plan.failure.clone(),
            queue: plan.queue,
            claim_for: None,
        };
        let applied = tracker.apply_transition(&t).await?;
        if !applied.applied {
            return Ok(Applied::Dropped(format!(
                "run left {from} before this {from} -> {to} applied"
            )));
        }
        if plan.queue.is_some() && !applied.queued {
            return Ok(Applied::Dropped("the execution to queue already existed".into()));
        }
        tracing::info!(%run_id, %from, %to, "run state changed");
    }
    if let Some(message) = plan.publish {
        publish_noted(tracker, broker, queue, &message).await?;
    }
    Ok(Applied::Done)
}

/// Publishes with confirm and then notes it on the record (the outbox
/// marker that recovery uses to find what was committed but never sent).
pub async fn publish_noted(tracker: &Tracker, broker: &Broker, queue: &str, message: &Message) -> anyhow::Result<()> {
    broker.publish(queue, message).await?;
    crate::failpoint::hit(crate::failpoint::AFTER_PUBLISH);
    let noted = match message {
        Message::ExecModule { run_id, step, attempt } => {
            tracker
                .mark_exec_published(ExecKey {
                    run_id: *run_id,
                    step: *step,
                    attempt: *attempt,
                })
                .await
        }
        Message::StartEtl { run_id } => tracker.mark_run_published(*run_id).await,
        _ => Ok(()),
    };
    if let Err(e) = noted {
        tracing::warn!(error = %e, "published, but could not note it; recovery may publish it again (harmless)");
    }
    Ok(())
}
