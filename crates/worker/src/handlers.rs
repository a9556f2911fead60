//! The quick messages: `start_etl`, `end_etl`, `error_handler`. Each loads
//! the run, asks the state machine, applies the decision through the
//! producer (one compare-and-set write, then the publish), and only then
//! acknowledges the delivery.

use crate::worker::Ctx;
use scheduler_broker::Incoming;
use scheduler_core::Message;
use scheduler_core::machine::{self, Decision};
use scheduler_producer::{Effect, ProducerError};
use scheduler_tracker::{ClaimFor, Claimed, ExecKey, Write};
use std::time::Duration;
use uuid::Uuid;

pub async fn handle(ctx: &Ctx, incoming: Incoming, message: Message) {
    if let Message::StartEtl { run_id } = message
        && !ctx.is_draining()
    {
        return start_here(ctx, incoming, run_id).await;
    }
    match handle_message(ctx, &message).await {
        Ok(Effect::Done) => tracing::debug!("handled"),
        Ok(Effect::Dropped(why)) => tracing::info!(why, "dropped"),
        Err(e) => return requeue_later(incoming, &e).await,
    }
    // Its effect is committed (or it had none): the delivery is done.
    if let Err(e) = incoming.ack().await {
        tracing::warn!(error = %e, "could not acknowledge; a redelivery will be dropped as a duplicate");
    }
}

/// The store (or the transport) is unavailable: hand the message back after
/// a pause rather than lose it or spin on it. The pause doubles with each
/// return of the message (1 s to 30 s): a quorum queue dead-letters a
/// message returned more than its delivery limit, and 20 returns must span
/// minutes of a database outage (about 8), not 20 seconds.
pub(crate) async fn requeue_later(incoming: Incoming, e: &(dyn std::fmt::Display + Sync)) {
    let pause = requeue_pause(incoming.redeliveries());
    tracing::warn!(error = %e, ?pause, redeliveries = incoming.redeliveries(), "could not handle the message; requeueing it after a pause");
    tokio::time::sleep(pause).await;
    if let Err(e) = incoming.requeue().await {
        tracing::warn!(error = %e, "could not requeue; the broker will redeliver it");
    }
}

/// 1 s, doubling with each earlier return, at most 30 s.
pub fn requeue_pause(redeliveries: u32) -> Duration {
    Duration::from_secs(1u64 << redeliveries.min(5)).min(Duration::from_secs(30))
}

/// `start_etl`, delivering the first step locally when this worker serves
/// its queue: the run's transition inserts execution 0 already claimed by
/// this worker (this delivery holds a prefetch credit, so a slot is free),
/// and the step runs here at once instead of going back through the broker.
/// A first step on another queue is published there.
async fn start_here(ctx: &Ctx, incoming: Incoming, run_id: Uuid) {
    // A module slot before the first step is claimed here.
    let Some(permit) = ctx.permits.acquire(crate::permit_queue::Waiter::Fresh).await else {
        return crate::step::requeue_unclaimed(incoming).await;
    };
    match claim_start(ctx, run_id).await {
        Ok(Started::Here(key, claimed)) => {
            tracing::info!(%run_id, "run started; running its first step here");
            crate::step::run_here(ctx, incoming, key, *claimed, permit).await;
        }
        Ok(Started::Elsewhere) => {
            tracing::info!(%run_id, "run started; its first step went to its own queue");
            let _ = incoming.ack().await;
        }
        Ok(Started::Not(why)) => {
            tracing::info!(why, "dropped");
            let _ = incoming.ack().await;
        }
        Err(e) => requeue_later(incoming, &e).await,
    }
}

enum Started {
    /// The first step is claimed by this worker.
    Here(ExecKey, Box<Claimed>),
    /// The first step runs on a queue this worker does not serve: published.
    Elsewhere,
    /// Nothing to start.
    Not(String),
}

/// Moves the run `queued -> running` with its first step claimed by this
/// worker if it serves the step's queue, else published to that queue.
///
/// Decided as for a `queued` run, the state a `start_etl` almost always
/// finds, without reading it first: the write's compare-and-set on `queued`
/// is the check. Only when it does not apply is the run read, to say why.
async fn claim_start(ctx: &Ctx, run_id: Uuid) -> Result<Started, ProducerError> {
    // `on_start` reads only the state; the step count is not needed here.
    let assumed = machine::RunView {
        id: run_id,
        state: scheduler_core::RunState::Queued,
        step_count: 1,
    };
    let plan = match machine::on_start(assumed) {
        Decision::Apply(plan) => plan,
        Decision::Drop(why) => return Ok(Started::Not(why.to_string())),
    };
    let write = Write {
        run_id,
        close: None,
        plan: &plan,
        claim_for: Some(ClaimFor {
            worker_id: ctx.worker_id,
            lease: ctx.config.lease,
            queues: &ctx.config.queues,
        }),
    };
    let written = ctx.store.apply(&write).await?;
    if written.not_applied(&plan).is_some() {
        return Ok(Started::Not(why_not_started(ctx, run_id).await?));
    }
    match (written.claimed.clone(), plan.queue) {
        (Some(claimed), Some(q)) => Ok(Started::Here(
            ExecKey {
                run_id,
                step: q.step,
                attempt: q.attempt,
            },
            Box::new(claimed),
        )),
        (None, Some(_)) => {
            scheduler_producer::publish_written(&*ctx.store, &*ctx.transport, run_id, &plan, &written).await?;
            Ok(Started::Elsewhere)
        }
        _ => Ok(Started::Not("the start queued no step".into())),
    }
}

/// Why a `start_etl` did not start its run, from the run as recorded now.
async fn why_not_started(ctx: &Ctx, run_id: Uuid) -> Result<String, ProducerError> {
    Ok(match ctx.store.run_view(run_id).await? {
        None => format!("no run {run_id} is recorded (stale or foreign message)"),
        Some(run) => match machine::on_start(run) {
            Decision::Drop(why) => why.to_string(),
            // Admitted (waiting -> queued) between the write and this read:
            // the admission publishes a start_etl of its own.
            Decision::Apply(_) => {
                "the run was admitted while this start_etl was handled; its own start_etl follows".into()
            }
        },
    })
}

async fn handle_message(ctx: &Ctx, message: &Message) -> Result<Effect, ProducerError> {
    let run_id = message.run_id();
    let Some(run) = ctx.store.run_view(run_id).await? else {
        return Ok(Effect::Dropped(format!(
            "no run {run_id} is recorded (stale or foreign message)"
        )));
    };
    let decision = match message {
        Message::StartEtl { .. } => machine::on_start(run),
        Message::EndEtl { .. } => machine::on_end(run, ctx.store.last_step_succeeded(run_id).await?),
        Message::ErrorHandler { step, reason, .. } => {
            tracing::warn!(step, reason, "step failed; marking the run failed");
            machine::on_error(run, *step, reason)
        }
        Message::ExecModule { .. } => return Ok(Effect::Dropped("exec_module is not a quick message".into())),
    };
    scheduler_producer::apply(&*ctx.store, &*ctx.transport, run_id, decision).await
}

#[cfg(test)]
mod tests {
    use super::requeue_pause;
    use std::time::Duration;

    #[test]
    fn the_requeue_pause_doubles_to_30_s_so_the_delivery_limit_spans_minutes() {
        assert_eq!(requeue_pause(0), Duration::from_secs(1));
        assert_eq!(requeue_pause(4), Duration::from_secs(16));
        assert_eq!(requeue_pause(5), Duration::from_secs(30));
        assert_eq!(requeue_pause(u32::MAX), Duration::from_secs(30));
        let twenty: Duration = (0..20).map(requeue_pause).sum();
        assert!(twenty >= Duration::from_secs(8 * 60), "{twenty:?}");
    }
}
