//! What can go wrong when starting, retrying or cancelling a run, typed so
//! that each caller answers it properly (the UI: 404, 409, 422, 502, 503;
//! the CLI: a sentence and an exit code).

use crate::project::ProjectError;
use scheduler_broker::BrokerError;
use scheduler_tracker::TrackerError;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The sequence or `modules.json` is missing or invalid.
    #[error(transparent)]
    Definition(#[from] ProjectError),
    #[error("no run {0} is recorded; check the id (`scheduler runs` lists them)")]
    NoRun(Uuid),
    /// The state machine (or a compare-and-set that lost a race) says the
    /// action does not apply to the run as recorded.
    #[error("{0}")]
    Conflict(String),
    /// The store is unreachable or failed.
    #[error(transparent)]
    Store(#[from] TrackerError),
    /// Recorded, but the transport did not take the message; recovery
    /// publishes it once the transport is back.
    #[error("run {run_id}: the change is recorded, but its message could not be published: {source}")]
    Publish { run_id: Uuid, source: BrokerError },
}
