//! `scheduler start <sequence>`: validate, record, publish, print the run id.

use crate::cli::Global;
use crate::connect;
use scheduler_worker::{TriggerError, start_run, trigger::default_trigger};
use std::process::ExitCode;

pub async fn start(g: &Global, sequence: &str, trigger: Option<String>) -> anyhow::Result<ExitCode> {
    let project = connect::project(g)?;
    // Fail fast on a bad definition before touching any service.
    let modules = project.modules()?;
    project.sequence(sequence, &modules)?;
    let tracker = connect::tracker(g, 2).await?;
    let broker = connect::broker(g, "scheduler start").await?;
    let trigger = trigger.unwrap_or_else(|| default_trigger("cli"));
    let result = start_run(&project, &tracker, &broker, sequence, &g.queue, &trigger).await;
    broker.close().await;
    match result {
        Ok(run_id) => {
            println!("{run_id}");
            Ok(ExitCode::SUCCESS)
        }
        Err(TriggerError::Publish { run_id, source }) => {
            eprintln!(
                "error: run {run_id} of {sequence} is recorded as queued, but RabbitMQ did not confirm start_etl: {source}.\n\
                 A running worker's recovery publishes it once the broker is reachable; check RabbitMQ."
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
