//! The operator's actions, shared by the pages and the API. Each asks the
//! pure state machine what the action means for the run as recorded, and
//! applies that decision with the worker's own `apply` (compare-and-set, then
//! publish). A decision that does not apply (the run moved meanwhile, or the
//! action makes no sense in its state) is a 409 with the machine's reason.

use crate::AppState;
use crate::error::Problem;
use axum::http::StatusCode;
use scheduler_core::machine;
use scheduler_worker::handlers::{self, Applied};
use scheduler_worker::{ProjectError, TriggerError};
use uuid::Uuid;

/// Records and publishes a run of `sequence`; returns its id.
pub(crate) async fn start(state: &AppState, sequence: &str) -> Result<Uuid, Problem> {
    let started = scheduler_worker::start_run(
        &state.project,
        &state.tracker,
        &state.broker,
        sequence,
        &state.config.queue,
        "ui",
    )
    .await;
    started.map_err(|e| match e {
        TriggerError::Definition(ProjectError::NoSuchSequence { .. }) => Problem::not_found(e.to_string()),
        TriggerError::Definition(ProjectError::Definition(scheduler_core::DefinitionError::BadName { .. })) => {
            Problem::bad_request(e.to_string())
        }
        // The sequence or modules.json on disk is broken: the operator has
        // to fix the file, not the request.
        TriggerError::Definition(_) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        TriggerError::Database(e) => Problem::from(e),
        TriggerError::Publish { .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            format!("{e}. The run is recorded; the worker's recovery publishes it once RabbitMQ is back"),
        ),
    })
}

/// Retries a failed run from its failed step (a new attempt of that step;
/// the steps before it are not run again).
pub(crate) async fn retry(state: &AppState, run_id: Uuid) -> Result<(), Problem> {
    let run = state
        .tracker
        .run_view(run_id)
        .await?
        .ok_or_else(|| Problem::no_run(run_id))?;
    let failed = state.tracker.failed_step_attempts(run_id).await?;
    let decision = machine::on_retry(run, failed.map(|(step, _)| step), failed.map_or(0, |(_, n)| n));
    let queue = run_queue(state, run_id).await?;
    if matches!(decision, machine::Decision::Apply(_)) {
        // The step is published to the run's queue, which may not have been
        // declared by this process yet (publishes are `mandatory`).
        state
            .broker
            .declare(&queue)
            .await
            .map_err(|e| broker_problem(e.to_string()))?;
    }
    applied(handlers::apply(&state.tracker, &state.broker, &queue, run_id, decision).await)
}

/// Cancels a queued or running run. Recorded in PostgreSQL at once; the
/// worker running its step notices at its next heartbeat and kills the
/// module's process group.
pub(crate) async fn cancel(state: &AppState, run_id: Uuid) -> Result<(), Problem> {
    let run = state
        .tracker
        .run_view(run_id)
        .await?
        .ok_or_else(|| Problem::no_run(run_id))?;
    let queue = run_queue(state, run_id).await?;
    applied(handlers::apply(&state.tracker, &state.broker, &queue, run_id, machine::on_cancel(run)).await)
}

async fn run_queue(state: &AppState, run_id: Uuid) -> Result<String, Problem> {
    state
        .tracker
        .run_queue(run_id)
        .await?
        .ok_or_else(|| Problem::no_run(run_id))
}

fn applied(result: anyhow::Result<Applied>) -> Result<(), Problem> {
    match result {
        Ok(Applied::Done) => Ok(()),
        Ok(Applied::Dropped(why)) => Err(Problem::conflict(why)),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "applying an operator action failed");
            Err(broker_problem(format!("{e:#}")))
        }
    }
}

fn broker_problem(detail: String) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the action could not be completed: {detail}. Check that PostgreSQL and RabbitMQ are up, then try again"
        ),
    )
}
