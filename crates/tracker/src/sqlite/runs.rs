//! Mirrors `crate::runs` (PostgreSQL) for the embedded store: what the state
//! machine reads about a run. Recording it is [`super::slots`]; moving it is
//! [`super::apply`].

use super::{Durability, Embedded, now};
use crate::Result;
use crate::runs::parse_state;
use scheduler_core::machine::RunView;
use uuid::Uuid;

/// Notes that the queue took the run's `start_etl`. Without a flush of its
/// own, as PostgreSQL's `synchronous_commit = off`: lost in a machine
/// crash, recovery publishes the run again and its claim drops the second.
pub(crate) async fn mark_run_published(t: &Embedded, run_id: Uuid) -> Result<()> {
    t.write_as(Durability::Logged, async |c| {
        sqlx::query("UPDATE runs SET published_at = $2 WHERE id = $1 AND state = 'queued' AND published_at IS NULL")
            .bind(run_id)
            .bind(now())
            .execute(c)
            .await
    })
    .await?;
    Ok(())
}

pub(crate) async fn run_view(t: &Embedded, run_id: Uuid) -> Result<Option<RunView>> {
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
pub(crate) async fn run_queue(t: &Embedded, run_id: Uuid) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT queue FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_optional(&t.pool)
        .await?)
}

/// Whether the latest attempt of the run's last step succeeded.
pub(crate) async fn last_step_succeeded(t: &Embedded, run_id: Uuid) -> Result<bool> {
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
pub(crate) async fn failed_step_attempts(t: &Embedded, run_id: Uuid) -> Result<Option<(u32, u32)>> {
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
