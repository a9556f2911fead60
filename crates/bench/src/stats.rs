//! Aggregates over sets of runs, for `scheduler bench` and tests, and the
//! percentiles the benchmarks print.

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

/// The nearest-rank percentile (`q` from 0 to 1) of `v`: the smallest value
/// with at least `q` of the values at or below it, as the Celery reference
/// benchmark computes it; NaN for no values.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// The middle value (the mean of the two middle ones for an even count);
/// NaN for no values.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        let few = [3.0, 1.0, 2.0];
        assert_eq!(percentile(&few, 0.5), 2.0);
        assert_eq!(percentile(&few, 0.99), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
