//! `scheduler retry RUN` and `scheduler cancel RUN`: the operator's actions,
//! through the producer like the UI's buttons and the JSON API, so they
//! mean the same thing everywhere. Exit 0 when done; 1 when the run is not
//! recorded or the action does not apply to it (it says why); 3 when a
//! service is unreachable.

use crate::cli::Global;
use crate::connect;
use anyhow::Context;
use scheduler_producer::ProducerError;
use std::process::ExitCode;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Retry,
    Cancel,
}

impl Action {
    fn done(self) -> &'static str {
        match self {
            Action::Retry => "retried: its failed step runs again as a new attempt",
            Action::Cancel => "canceled: a running module is stopped at its worker's next heartbeat",
        }
    }
    fn word(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Cancel => "cancel",
        }
    }
}

pub async fn act(g: &Global, action: Action, run_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let id: Uuid = run_id
        .trim()
        .parse()
        .with_context(|| format!("{run_id:?} is not a run id (a UUID, as printed by `scheduler start`)"))?;
    let store = connect::store(g, 1).await?;
    let transport = connect::transport(g, &format!("scheduler {}", action.word())).await?;
    let result = match action {
        Action::Retry => scheduler_producer::retry(&*store, &*transport, id).await,
        Action::Cancel => scheduler_producer::cancel(&*store, &*transport, id).await,
    };
    let (code, outcome, said) = match result {
        Ok(()) => (0, "done", format!("run {id} {}", action.done())),
        // Recorded: recovery publishes what follows once the broker is back.
        Err(ProducerError::Publish { source, .. }) => (
            0,
            "recorded",
            format!(
                "run {id} {}; its message could not be published yet ({source}); a worker's recovery publishes it",
                action.done()
            ),
        ),
        Err(e @ (ProducerError::NoRun(_) | ProducerError::Conflict(_))) => {
            (1, "refused", format!("cannot {} run {id}: {e}", action.word()))
        }
        Err(e) => return Err(e.into()),
    };
    let state = store.run_view(id).await?.map(|r| r.state.to_string());
    if json {
        let v = serde_json::json!({
            "run_id": id,
            "action": action.word(),
            "outcome": outcome,
            "message": said,
            "state": state,
        });
        println!("{v}");
    } else if code == 0 {
        println!("{said}");
    } else {
        eprintln!("error: {said}");
    }
    Ok(ExitCode::from(code))
}
