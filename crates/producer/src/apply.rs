//! Applying a decision of the state machine: write all of it with one
//! [`Store::apply`], then, only if everything it follows was written,
//! publish its message to the run's queue and note the publish (the outbox
//! marker recovery looks for). The worker, recovery and the operator's
//! actions all apply plans through here.
//!
//! **Routing**, the one rule: an `exec_module` goes to its step's queue
//! (recorded with the execution, from the run's snapshot), every other
//! message of a run to the run's queue (`runs.queue`), whoever publishes
//! them; [`Written::queue_for`] answers from the same statement.
//!
//! **Slots**: a run of a sequence with `max_concurrent` that ends frees its
//! slot; [`apply`] then starts the sequence's next waiting run
//! ([`crate::admit_waiting`]). Recovery does the same at each pass, for the
//! slots a crash between the two left waiting.

use crate::{ProducerError, failpoint};
use scheduler_broker::Transport;
use scheduler_core::Message;
use scheduler_core::machine::{Decision, Plan};
use scheduler_tracker::{ExecKey, Store, Write, Written};
use uuid::Uuid;

/// What applying a decision came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Written, and its message (if any) published.
    Done,
    /// The state machine or a compare-and-set said there is nothing to do.
    Dropped(String),
}

/// Applies a decision about `run_id` that follows from nothing but the run
/// itself (no execution to close, no local claim): `end_etl`,
/// `error_handler`, retry, cancel, recovery's re-decisions.
pub async fn apply(
    store: &dyn Store,
    transport: &dyn Transport,
    run_id: Uuid,
    decision: Decision,
) -> Result<Effect, ProducerError> {
    apply_with(store, transport, run_id, decision, Limit::Ignore).await
}

/// Whether a decision must find a free slot of the run's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Ignore,
    /// It restarts the run (an operator's retry): only within the limit.
    Obey,
}

pub(crate) async fn apply_with(
    store: &dyn Store,
    transport: &dyn Transport,
    run_id: Uuid,
    decision: Decision,
    limit: Limit,
) -> Result<Effect, ProducerError> {
    let plan = match decision {
        Decision::Apply(plan) => plan,
        Decision::Drop(why) => return Ok(Effect::Dropped(why.to_string())),
    };
    let write = Write {
        run_id,
        close: None,
        plan: &plan,
        claim_for: None,
    };
    let written = match limit {
        Limit::Ignore => store.apply(&write).await?,
        Limit::Obey => match store.apply_within_limit(&write).await? {
            Ok(written) => written,
            Err(why) => return Ok(Effect::Dropped(why)),
        },
    };
    if let Some(why) = written.not_applied(&plan) {
        return Ok(Effect::Dropped(why));
    }
    if let Some(m) = plan.run {
        tracing::info!(%run_id, from = %m.from, to = %m.to, "run state changed");
    }
    publish_written(store, transport, run_id, &plan, &written).await?;
    if let (Some(m), Some(sequence)) = (plan.run, &written.sequence)
        && m.to.is_final()
        && written.limited
    {
        crate::admit_waiting(store, transport, sequence).await?;
    }
    Ok(Effect::Done)
}

/// Publishes the plan's message after its write, if the write was complete
/// and the message was not delivered locally (a claimed next execution).
pub async fn publish_written(
    store: &dyn Store,
    transport: &dyn Transport,
    run_id: Uuid,
    plan: &Plan,
    written: &Written,
) -> Result<(), ProducerError> {
    let Some(message) = &plan.publish else {
        return Ok(());
    };
    let Some(queue) = written.queue_for(message) else {
        return Ok(());
    };
    if !written.complete(plan) || written.claimed.is_some() {
        return Ok(());
    }
    publish_noted(store, transport, queue, message)
        .await
        .map_err(|e| match e {
            ProducerError::Publish { source, .. } => ProducerError::Publish { run_id, source },
            other => other,
        })
}

/// Publishes (waiting for the transport's confirm) and then notes it on the
/// record, so recovery does not publish it again. A lost note only means a
/// duplicate later, which the handlers drop.
pub async fn publish_noted(
    store: &dyn Store,
    transport: &dyn Transport,
    queue: &str,
    message: &Message,
) -> Result<(), ProducerError> {
    let published = match transport.publish(queue, message).await {
        // A step's queue that no worker and no start declared yet (or that
        // expired): declare it, then publish again, once.
        Err(scheduler_broker::BrokerError::Unroutable { .. }) => match transport.declare(queue).await {
            Ok(()) => transport.publish(queue, message).await,
            Err(e) => Err(e),
        },
        other => other,
    };
    published.map_err(|source| ProducerError::Publish {
        run_id: message.run_id(),
        source,
    })?;
    failpoint::hit(failpoint::AFTER_PUBLISH);
    let noted = match message {
        Message::ExecModule { run_id, step, attempt } => {
            store
                .mark_exec_published(ExecKey {
                    run_id: *run_id,
                    step: *step,
                    attempt: *attempt,
                })
                .await
        }
        Message::StartEtl { run_id } => store.mark_run_published(*run_id).await,
        _ => Ok(()),
    };
    if let Err(e) = noted {
        tracing::warn!(error = %e, "published, but could not note it; recovery may publish it again (harmless)");
    }
    Ok(())
}
