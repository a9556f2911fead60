//! The operator's actions on a recorded run, for the CLI and the UI: each
//! asks the state machine what the action means for the run as recorded
//! and applies that decision like any other.

use crate::ProducerError;
use crate::apply::{Effect, Limit, apply, apply_with};
use scheduler_broker::Transport;
use scheduler_core::machine;
use scheduler_tracker::Store;
use uuid::Uuid;

/// Retries a failed run from its failed step: a new attempt of that step;
/// the steps before it are not run again and every attempt stays recorded.
/// Like a start, it needs a free slot of its sequence's `max_concurrent`
/// (refused with a conflict that says which run holds it).
pub async fn retry(store: &dyn Store, transport: &dyn Transport, run_id: Uuid) -> Result<(), ProducerError> {
    let run = store.run_view(run_id).await?.ok_or(ProducerError::NoRun(run_id))?;
    let failed = store.failed_step_attempts(run_id).await?;
    let decision = machine::on_retry(run, failed.map(|(step, _)| step), failed.map_or(0, |(_, n)| n));
    if matches!(decision, machine::Decision::Apply(_)) {
        // Its queue may never have been declared by this process (publishes
        // are `mandatory`: an unknown queue is an error).
        let queue = store.run_queue(run_id).await?.ok_or(ProducerError::NoRun(run_id))?;
        transport
            .declare(&queue)
            .await
            .map_err(|source| ProducerError::Publish { run_id, source })?;
    }
    done(apply_with(store, transport, run_id, decision, Limit::Obey).await?)
}

/// Cancels a queued or running run. Recorded at once (its queued executions
/// with it); the worker running its step learns it at its next heartbeat
/// and stops the module.
pub async fn cancel(store: &dyn Store, transport: &dyn Transport, run_id: Uuid) -> Result<(), ProducerError> {
    let run = store.run_view(run_id).await?.ok_or(ProducerError::NoRun(run_id))?;
    done(apply(store, transport, run_id, machine::on_cancel(run)).await?)
}

fn done(effect: Effect) -> Result<(), ProducerError> {
    match effect {
        Effect::Done => Ok(()),
        Effect::Dropped(why) => Err(ProducerError::Conflict(why)),
    }
}
