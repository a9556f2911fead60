//! `scheduler start <sequence>`: validate, record, publish, print the run id.
//!
//! The run is recorded in PostgreSQL before anything is sent: once recorded
//! it cannot be lost (in the embedded mode, the run and its `start_etl`
//! are one transaction of the store). If RabbitMQ is unreachable or does not confirm, the
//! command says so and still exits 0, because recovery (any running worker)
//! publishes recorded-but-unpublished runs as soon as the broker is back; a
//! crontab trigger is never lost to a broker restart. It exits non-zero only
//! when the run could not be recorded.

use crate::cli::Global;
use crate::connect;
use scheduler_producer::{Recorded, default_trigger, publish_start, record_and_start, record_run_for};
use scheduler_tracker::{Admitted, Embedded};
use std::process::ExitCode;

pub async fn start(
    g: &Global,
    sequence: &str,
    trigger: Option<String>,
    logical_date: Option<String>,
) -> anyhow::Result<ExitCode> {
    let project = connect::project(g)?;
    let logical = logical_date.as_deref().map(parse_logical_date).transpose()?;
    // Fail fast on a bad definition before touching any service.
    let modules = project.modules()?;
    project.sequence(sequence, &modules)?;
    let store = connect::store(g, 2).await?;
    let trigger = trigger.unwrap_or_else(|| default_trigger("cli"));
    // The embedded mode: the run and its start_etl in one transaction (its
    // queue is in the store's file, never out of reach).
    if store.as_any().is::<Embedded>() {
        let transport = connect::transport(g, "scheduler start").await?;
        let recorded = record_and_start(&project, &*store, &*transport, sequence, &g.queue, &trigger, logical).await?;
        transport.close().await;
        if let Some(recorded) = recorded {
            not_started(&recorded, sequence);
            println!("{}", recorded.run_id);
            return Ok(ExitCode::SUCCESS);
        }
    }
    let recorded = record_run_for(&project, &*store, sequence, &g.queue, &trigger, logical).await?;
    let run_id = recorded.run_id;
    let published = match connect::transport(g, "scheduler start").await {
        Ok(transport) => {
            let mut result = Ok(());
            // Every queue its steps use, so each shows (with its depth) on
            // the workers page before a worker serves it.
            for queue in recorded.queues_to_declare() {
                if let Err(e) = transport.declare(queue).await {
                    result = Err(anyhow::Error::from(e));
                }
            }
            if recorded.admitted == Admitted::Queued {
                result = result.and(
                    publish_start(&*store, &*transport, run_id, &recorded.queue)
                        .await
                        .map_err(anyhow::Error::from),
                );
            }
            transport.close().await;
            result
        }
        Err(e) => Err(e),
    };
    not_started(&recorded, sequence);
    if let Err(e) = published
        && recorded.admitted == Admitted::Queued
    {
        eprintln!(
            "warning: run {run_id} of {sequence} is recorded, but could not be handed to RabbitMQ: {e:#}\n\
             It is not lost: a worker publishes it as soon as the broker is reachable again."
        );
    }
    println!("{run_id}");
    Ok(ExitCode::SUCCESS)
}

/// Says why a recorded run did not start now: its sequence's concurrency
/// policy made it wait, or skipped it.
fn not_started(recorded: &Recorded, sequence: &str) {
    let run_id = recorded.run_id;
    match &recorded.admitted {
        Admitted::Queued => {}
        Admitted::Waiting(note) => eprintln!("run {run_id} of {sequence} is {note}; it starts when a slot frees"),
        Admitted::Skipped(note) => eprintln!("run {run_id} of {sequence} {note}"),
    }
}

/// `--logical-date`: a day (midnight UTC) or an RFC 3339 time.
fn parse_logical_date(text: &str) -> anyhow::Result<chrono::DateTime<chrono::FixedOffset>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t);
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().fixed_offset())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--logical-date {text:?}: write a day (2026-11-01) or an RFC 3339 time (2026-11-01T02:30:00+01:00)"
            )
        })
}
