//! The operator's actions, shared by the pages and the API: the producer
//! starts, retries and cancels (the state machine decides, the same
//! compare-and-set writes as the workers' apply it); this file turns its
//! typed errors into answers. A decision that does not apply (the run moved
//! meanwhile, or the action makes no sense in its state) is a 409 with the
//! machine's reason; an unknown run a 404; a broken definition on disk a 422.

use crate::AppState;
use crate::error::Problem;
use axum::http::StatusCode;
use scheduler_core::DefinitionError;
use scheduler_producer::{ProducerError, ProjectError};
use uuid::Uuid;

/// Records and publishes a run of `sequence`; returns its id.
pub(crate) async fn start(state: &AppState, sequence: &str) -> Result<Uuid, Problem> {
    scheduler_producer::start_run(
        &state.project,
        &*state.store,
        &*state.transport,
        sequence,
        &state.config.queue,
        "ui",
    )
    .await
    .map(|recorded| recorded.run_id)
    .map_err(problem)
}

/// Retries a failed run from its failed step (a new attempt of that step;
/// the steps before it are not run again).
pub(crate) async fn retry(state: &AppState, run_id: Uuid) -> Result<(), Problem> {
    scheduler_producer::retry(&*state.store, &*state.transport, run_id)
        .await
        .map_err(problem)
}

/// Cancels a waiting, queued or running run. Recorded at once; the worker running
/// its step notices at its next heartbeat and kills the module's process
/// group.
pub(crate) async fn cancel(state: &AppState, run_id: Uuid) -> Result<(), Problem> {
    scheduler_producer::cancel(&*state.store, &*state.transport, run_id)
        .await
        .map_err(problem)
}

fn problem(e: ProducerError) -> Problem {
    match e {
        ProducerError::NoRun(id) => Problem::no_run(id),
        ProducerError::Conflict(why) => Problem::conflict(why),
        ProducerError::Definition(ProjectError::NoSuchSequence { .. }) => Problem::not_found(e.to_string()),
        ProducerError::Definition(ProjectError::Definition(DefinitionError::BadName { .. })) => {
            Problem::bad_request(e.to_string())
        }
        // The sequence or modules.json on disk is broken: the operator has
        // to fix the file, not the request.
        ProducerError::Definition(_) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        ProducerError::Store(e) => Problem::from(e),
        ProducerError::Publish { .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            format!("{e}. The change is recorded; a worker's recovery publishes it once RabbitMQ is back"),
        ),
    }
}
