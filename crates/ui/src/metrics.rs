//! `/metrics` in the Prometheus text format, computed from PostgreSQL and
//! RabbitMQ at scrape time (so any UI replica answers the same, and a
//! restart loses nothing): runs and executions by state, workers alive,
//! queue depth and consumers, what happened in the last hour (runs ended
//! by sequence and state, retries, stalls, step duration and peak memory by
//! module: `activity`), missed and skipped slots, and alert deliveries by
//! target and outcome.
//!
//! Cheap at millions of rows (`scheduler bench-ui` measures it): unfinished
//! states are counted exactly through partial indexes, final states are
//! estimated from the table statistics (see `scheduler_tracker::Store::state_counts` for the
//! choice), and the last hour's figures read indexes on the times they
//! filter on.

mod activity;

use crate::error::ApiResult;
use crate::{ALIVE_WITHIN, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::Utc;
use std::fmt::Write;

pub(crate) async fn render(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let counts = state.store.state_counts(ALIVE_WITHIN).await?;
    let workers = crate::pages::workers::load_workers(&state, Utc::now()).await?;
    let queues = crate::pages::workers::load_queues(&state, &workers).await?;
    let runs = every_state(scheduler_core::RunState::ALL.iter().map(|s| s.as_str()), &counts.runs);
    let executions = every_state(
        scheduler_core::ExecState::ALL.iter().map(|s| s.as_str()),
        &counts.executions,
    );
    let mut out = String::new();
    gauge(&mut out, "scheduler_runs", "Runs recorded, by state.", "state", &runs);
    gauge(
        &mut out,
        "scheduler_executions",
        "Step executions (attempts) recorded, by state.",
        "state",
        &executions,
    );
    let _ = writeln!(
        out,
        "# HELP scheduler_workers_alive Workers heartbeating within the last {} s.\n\
         # TYPE scheduler_workers_alive gauge\nscheduler_workers_alive {}",
        ALIVE_WITHIN.as_secs(),
        counts.workers_alive
    );
    let known: Vec<_> = queues.iter().filter(|q| q.messages.is_some()).collect();
    let ready: Vec<(String, i64)> = known
        .iter()
        .map(|q| (q.name.clone(), q.messages.unwrap_or(0) as i64))
        .collect();
    let consumers: Vec<(String, i64)> = known
        .iter()
        .map(|q| (q.name.clone(), q.consumers.unwrap_or(0) as i64))
        .collect();
    gauge(
        &mut out,
        "scheduler_queue_messages",
        "Messages ready in a broker queue.",
        "queue",
        &ready,
    );
    gauge(
        &mut out,
        "scheduler_queue_consumers",
        "Consumers of a broker queue.",
        "queue",
        &consumers,
    );
    activity::render(&state, &mut out).await?;
    alert_deliveries(&state, &mut out).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    ))
}

/// `scheduler_alert_deliveries_total{target,outcome}`: delivery attempts
/// counted in the statement that records each (so a real counter, kept
/// across restarts); every target of alerts.json shows every outcome, 0
/// included. Labels stay bounded: the targets of alerts.json (and
/// `healthcheck` for the pings), four outcomes.
async fn alert_deliveries(state: &AppState, out: &mut String) -> ApiResult<()> {
    const OUTCOMES: [&str; 4] = ["sent", "retry", "failed", "folded"];
    let counted = state.store.alert_counts().await?;
    let (config, _) = crate::pages::alerts::load_config(state);
    let mut series: Vec<(String, String, i64)> = counted;
    for t in &config.targets {
        for outcome in OUTCOMES {
            if !series.iter().any(|(n, o, _)| *n == t.name && o == outcome) {
                series.push((t.name.clone(), outcome.to_string(), 0));
            }
        }
    }
    series.sort();
    let _ = writeln!(
        out,
        "# HELP scheduler_alert_deliveries_total Alert delivery attempts by target and outcome \
         (sent; retry: failed, tried again later; failed: given up; folded: held by max_frequency and counted into a later alert).\n\
         # TYPE scheduler_alert_deliveries_total counter"
    );
    for (target, outcome, n) in series {
        let _ = writeln!(
            out,
            "scheduler_alert_deliveries_total{{target=\"{}\",outcome=\"{}\"}} {n}",
            escape(&target),
            escape(&outcome)
        );
    }
    Ok(())
}

/// Every state, with 0 for those no row is in (a series that vanishes
/// reads as "no data", not as zero).
fn every_state<'a>(states: impl Iterator<Item = &'a str>, counted: &[(String, i64)]) -> Vec<(String, i64)> {
    states
        .map(|s| {
            let n = counted.iter().find(|(c, _)| c == s).map_or(0, |(_, n)| *n);
            (s.to_string(), n)
        })
        .collect()
}

fn gauge(out: &mut String, name: &str, help: &str, label: &str, values: &[(String, i64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (value, n) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(value));
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape(s: &str) -> String {
    s.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}
