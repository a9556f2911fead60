//! Mirrors `crate::history` (PostgreSQL) for the embedded store: a
//! sequence's newest runs and its steps' figures over them, from one
//! snapshot (a deferred read transaction: its first read fixes the WAL
//! snapshot both reads see).
//!
//! SQLite has no ordered-set aggregates (`percentile_disc`): the steps'
//! attempts of those runs (a few hundred rows at most: `limit` is at most
//! 200) are read and the figures computed here ([`step_stats`]), with
//! `percentile_disc`'s definition, so both backends give the same values.

use super::Embedded;
use super::views::{CLOCK, RUN_COLUMNS, clock};
use crate::Result;
use crate::history::{SequenceHistory, StepStats};
use crate::views::RunSummary;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// One attempt of a step, as [`step_stats`] reads it.
#[derive(sqlx::FromRow)]
struct AttemptRow {
    step: i32,
    attempt: i32,
    module: String,
    queued_at: DateTime<Utc>,
    state: String,
    duration_ms: Option<i64>,
    peak_rss_kib: Option<i64>,
    retry: i32,
}

/// The attempts of the runs `?1` (sequence) / `?2` (limit) select: the
/// same newest runs as the first read, in the same snapshot.
const ATTEMPTS: &str = "
SELECT e.step, e.attempt, e.module, e.queued_at, e.state, e.duration_ms, e.peak_rss_kib, e.retry
  FROM executions e
 WHERE e.run_id IN (SELECT id FROM runs WHERE sequence = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2)";

/// The newest `limit` runs of `sequence` (1..=200) and its steps' figures
/// over them.
pub(crate) async fn sequence_history(t: &Embedded, sequence: &str, limit: u32) -> Result<SequenceHistory> {
    static RUNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{CLOCK} SELECT {RUN_COLUMNS} FROM clock, runs WHERE runs.sequence = ?3
              ORDER BY runs.created_at DESC, runs.id DESC LIMIT ?4"
        )
    });
    let limit = limit.clamp(1, 200) as i64;
    let (now, live) = clock();
    let mut tx = t.pool.begin().await?;
    let runs: Vec<RunSummary> = sqlx::query_as(RUNS.as_str())
        .bind(now)
        .bind(live)
        .bind(sequence)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    let steps = if runs.is_empty() {
        vec![]
    } else {
        let rows: Vec<AttemptRow> = sqlx::query_as(ATTEMPTS)
            .bind(sequence)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        step_stats(rows)
    };
    tx.commit().await?;
    Ok(SequenceHistory { runs, steps })
}

/// PostgreSQL's `percentile_disc(fraction)` over `sorted` (ascending): the
/// first value whose cumulative share reaches `fraction`.
fn percentile_disc(sorted: &[i64], fraction: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    // As PostgreSQL computes it: the ceil(fraction * n)-th row, 1-based.
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// STEP_STATS of `crate::history`, per step in step order: the module of
/// the newest attempt, successes with their median and p95 duration and
/// median peak memory, failures and retries.
fn step_stats(rows: Vec<AttemptRow>) -> Vec<StepStats> {
    let mut by_step: BTreeMap<i32, Vec<AttemptRow>> = BTreeMap::new();
    for r in rows {
        by_step.entry(r.step).or_default().push(r);
    }
    by_step
        .into_iter()
        .map(|(step, attempts)| {
            let module = attempts
                .iter()
                .max_by_key(|a| (a.queued_at, a.attempt))
                .map(|a| a.module.clone())
                .unwrap_or_default();
            let ok: Vec<&AttemptRow> = attempts.iter().filter(|a| a.state == "succeeded").collect();
            // percentile_disc ignores NULLs, as these filters do.
            let mut durations: Vec<i64> = ok.iter().filter_map(|a| a.duration_ms).collect();
            durations.sort_unstable();
            let mut memory: Vec<i64> = ok.iter().filter_map(|a| a.peak_rss_kib).collect();
            memory.sort_unstable();
            StepStats {
                step,
                module,
                succeeded: ok.len() as i64,
                median_ms: percentile_disc(&durations, 0.5),
                p95_ms: percentile_disc(&durations, 0.95),
                median_peak_rss_kib: percentile_disc(&memory, 0.5),
                failed: attempts.iter().filter(|a| a.state == "failed").count() as i64,
                retries: attempts.iter().filter(|a| a.retry > 0).count() as i64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::percentile_disc;

    #[test]
    fn percentile_disc_takes_the_first_value_reaching_the_fraction() {
        let v = [2000, 3000, 4000, 5000, 6000];
        assert_eq!(percentile_disc(&v, 0.5), Some(4000));
        assert_eq!(percentile_disc(&v, 0.95), Some(6000));
        assert_eq!(percentile_disc(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(percentile_disc(&[7], 0.95), Some(7));
        assert_eq!(percentile_disc(&[], 0.5), None);
    }
}
