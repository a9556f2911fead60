//! Aggregates over sets of runs, for `scheduler bench` and tests.

use crate::BenchDb;
use sqlx::Result;
use uuid::Uuid;

/// Wall time and module time of one finished run.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct RunTiming {
    /// From `created_at` (recorded by the trigger) to `finished_at`.
    pub wall_ms: f64,
    /// Sum of the module executions' own durations.
    pub module_ms: f64,
    /// From `created_at` to the first module's start.
    pub first_ms: f64,
}

impl BenchDb {
    /// How many of `ids` are not in a final state.
    pub async fn count_unfinished(&self, ids: &[Uuid]) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE id = ANY($1) AND state NOT IN ('succeeded', 'failed', 'canceled')",
        )
        .bind(ids)
        .fetch_one(&self.pool)
        .await
    }

    pub async fn run_timings(&self, ids: &[Uuid]) -> Result<Vec<RunTiming>> {
        sqlx::query_as(
            "SELECT extract(epoch FROM (r.finished_at - r.created_at))::float8 * 1000 AS wall_ms,
                    coalesce((SELECT sum(e.duration_ms) FROM executions e WHERE e.run_id = r.id), 0)::float8 AS module_ms,
                    extract(epoch FROM ((SELECT min(e.started_at) FROM executions e WHERE e.run_id = r.id)
                                        - r.created_at))::float8 * 1000 AS first_ms
               FROM runs r WHERE r.id = ANY($1) AND r.finished_at IS NOT NULL",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
    }

    /// Empties every table. Only for a database dedicated to a benchmark.
    pub async fn erase_everything(&self) -> Result<()> {
        // CASCADE: the tables that refer to these (logs, slots, events) go too.
        sqlx::query("TRUNCATE runs, executions, workers CASCADE")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
