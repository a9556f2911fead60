//! A sequence's recent history, for its page in the UI: its newest runs
//! and, over those runs, how long each of its steps takes. Two reads from
//! one snapshot: a range scan of `runs_by_sequence`, then the primary key
//! of `executions` for each of those runs, whatever the table's size.

use crate::views::{RUN_COLUMNS, RunSummary};
use crate::{Result, Tracker};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

/// One step of a sequence over its recent runs.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct StepStats {
    /// 0-based, as recorded.
    pub step: i32,
    /// The module of its newest attempt.
    pub module: String,
    /// Attempts that succeeded (at most one per run).
    pub succeeded: i64,
    /// Median and 95th percentile of the successful attempts' durations.
    pub median_ms: Option<i64>,
    pub p95_ms: Option<i64>,
    /// Median peak resident memory of the successful attempts the kernel
    /// accounted for.
    pub median_peak_rss_kib: Option<i64>,
    /// Attempts that failed, and attempts that were retries of a failure.
    pub failed: i64,
    pub retries: i64,
}

/// A sequence's newest runs, newest first, and its steps over them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SequenceHistory {
    pub runs: Vec<RunSummary>,
    pub steps: Vec<StepStats>,
}

const STEP_STATS: &str = "
SELECT e.step,
       (array_agg(e.module ORDER BY e.queued_at DESC))[1] AS module,
       count(*) FILTER (WHERE e.state = 'succeeded') AS succeeded,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY e.duration_ms)
         FILTER (WHERE e.state = 'succeeded') AS median_ms,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY e.duration_ms)
         FILTER (WHERE e.state = 'succeeded') AS p95_ms,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY e.peak_rss_kib)
         FILTER (WHERE e.state = 'succeeded' AND e.peak_rss_kib IS NOT NULL) AS median_peak_rss_kib,
       count(*) FILTER (WHERE e.state = 'failed') AS failed,
       count(*) FILTER (WHERE e.retry > 0) AS retries
  FROM executions e
 WHERE e.run_id = ANY($1)
 GROUP BY e.step
 ORDER BY e.step";

/// The newest `limit` runs of `sequence` (1..=200) and its steps' figures
/// over them.
pub(crate) async fn sequence_history(t: &Tracker, sequence: &str, limit: u32) -> Result<SequenceHistory> {
    static RUNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE sequence = $1
              ORDER BY created_at DESC, id DESC LIMIT $2"
        )
    });
    let mut tx = t.pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let runs: Vec<RunSummary> = sqlx::query_as(RUNS.as_str())
        .bind(sequence)
        .bind(limit.clamp(1, 200) as i64)
        .fetch_all(&mut *tx)
        .await?;
    let ids: Vec<Uuid> = runs.iter().map(|r| r.id).collect();
    let steps = if ids.is_empty() {
        vec![]
    } else {
        sqlx::query_as(STEP_STATS).bind(&ids).fetch_all(&mut *tx).await?
    };
    tx.commit().await?;
    Ok(SequenceHistory { runs, steps })
}
