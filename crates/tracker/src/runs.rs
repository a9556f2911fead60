//! Reading what the state machine needs to decide about a run. Recording it
//! is [`crate::slots`]; moving it between states is [`crate::apply`]'s one
//! statement.

use crate::{Result, Tracker, TrackerError};
use scheduler_core::machine::RunView;
use uuid::Uuid;

/// Notes that the broker confirmed the run's `start_etl`.
/// Only while the run is `queued`: the note is for recovery, which looks
/// for queued runs never published. A run a worker has already started
/// (the usual case: the worker is faster than this note) is not written
/// again, so the note does not contend with the worker for the run's row.
/// The run is found by its key only (`IS NOT DISTINCT FROM`: `apply.rs`).
pub(crate) async fn mark_run_published(t: &Tracker, run_id: Uuid) -> Result<()> {
    sqlx::query("UPDATE runs SET published_at = now() WHERE id = $1 AND state IS NOT DISTINCT FROM 'queued' AND published_at IS NULL")
        .bind(run_id)
        .execute(&t.relaxed)
        .await?;
    Ok(())
}

pub(crate) async fn run_view(t: &Tracker, run_id: Uuid) -> Result<Option<RunView>> {
    let row: Option<(String, i32)> = sqlx::query_as("SELECT state, step_count FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_optional(&t.pool)
        .await?;
    row.map(|(state, step_count)| {
        Ok(RunView {
            id: run_id,
            state: parse_state(state)?,
            step_count: step_count as u32,
        })
    })
    .transpose()
}

/// The queue a run's messages go to.
pub(crate) async fn run_queue(t: &Tracker, run_id: Uuid) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT queue FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_optional(&t.pool)
        .await?)
}

/// Whether the latest attempt of the run's last step succeeded.
pub(crate) async fn last_step_succeeded(t: &Tracker, run_id: Uuid) -> Result<bool> {
    let state: Option<String> = sqlx::query_scalar(
        "SELECT e.state FROM executions e JOIN runs r ON r.id = e.run_id
         WHERE e.run_id = $1 AND e.step = r.step_count - 1
         ORDER BY e.attempt DESC LIMIT 1",
    )
    .bind(run_id)
    .fetch_optional(&t.pool)
    .await?;
    Ok(state.as_deref() == Some("succeeded"))
}

/// The failing step of a failed run and how many attempts it had.
pub(crate) async fn failed_step_attempts(t: &Tracker, run_id: Uuid) -> Result<Option<(u32, u32)>> {
    let row: Option<(i32, i32)> = sqlx::query_as(
        "SELECT r.failed_step, (SELECT coalesce(max(attempt), 0) FROM executions e
                                  WHERE e.run_id = r.id AND e.step = r.failed_step) AS attempts
         FROM runs r WHERE r.id = $1 AND r.failed_step IS NOT NULL",
    )
    .bind(run_id)
    .fetch_optional(&t.pool)
    .await?;
    Ok(row.map(|(step, attempts)| (step as u32, attempts as u32)))
}

pub(crate) fn parse_state<T: std::str::FromStr<Err = String>>(s: String) -> Result<T> {
    s.parse().map_err(TrackerError::Corrupt)
}

/// PostgreSQL `text` cannot hold NUL bytes; module output can.
pub(crate) fn strip_nul(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_string()
    }
}
