//! What `/metrics` reports beyond the counts by state: what happened in the
//! last window (runs ended by sequence and state, retries, stalls, step
//! durations and peak memory by module) and the slot ledger's missed and
//! skipped slots. Computed at scrape time from the record, so any UI
//! replica answers the same and a restart loses nothing.
//!
//! Cheap at millions of runs: every windowed read starts from an index on
//! the time it filters on (`runs_finished`, `executions_finished`,
//! `executions_retries`), so a scrape reads the last window's rows, never
//! the history (`events_stalled` for the stalls); the slot counts read a
//! partial index of two rare fates.
//! Labels are sequence, module and schedule names (bounded by the
//! project's definitions), never a run id.

use crate::{Result, Tracker};
use std::time::Duration;

/// A histogram of one module's executions: `(bound, executions <= bound)`
/// for each bound (ascending), then all of them and the sum of their values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleHistogram {
    pub module: String,
    pub le: Vec<(i64, i64)>,
    pub count: i64,
    pub sum: i64,
}

/// The record's activity over a window, and the slot ledger's totals.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    /// Runs that ended within the window: `(sequence, final state, runs)`.
    pub runs_finished: Vec<(String, String, i64)>,
    /// Retry attempts (of a step's failure) queued within the window:
    /// `(sequence, module, attempts)`.
    pub retries: Vec<(String, String, i64)>,
    /// Steps the stall watch marked stalled within the window (whether
    /// they wrote again, were stopped or still are): `(sequence, module, n)`,
    /// from the `step_stalled` events.
    pub stalls: Vec<(String, String, i64)>,
    /// Running executions marked stalled now: `(sequence, module, n)`.
    pub stalled_now: Vec<(String, String, i64)>,
    /// Executions that ended within the window, by module: their duration
    /// in milliseconds.
    pub durations: Vec<ModuleHistogram>,
    /// The same executions' peak resident memory in KiB (those the kernel
    /// accounted for: a lost worker's leave none).
    pub peak_memory: Vec<ModuleHistogram>,
    /// Every registered schedule: `(schedule, missed slots, skipped slots)`
    /// since it was first seen (the ledger is never pruned).
    pub slots: Vec<(String, i64, i64)>,
}

const RUNS_FINISHED: &str = "
SELECT sequence, state, count(*) FROM runs
 WHERE finished_at > now() - make_interval(secs => $1) AND finished_at IS NOT NULL
 GROUP BY 1, 2 ORDER BY 1, 2";

const RETRIES: &str = "
SELECT r.sequence, e.module, count(*) FROM executions e JOIN runs r ON r.id = e.run_id
 WHERE e.retry > 0 AND e.queued_at > now() - make_interval(secs => $1)
 GROUP BY 1, 2 ORDER BY 1, 2";

/// Through `events_stalled`; the module is in the event's detail.
const STALLS: &str = "
SELECT coalesce(sequence, ''), coalesce(detail->>'module', ''), count(*) FROM events
 WHERE kind = 'step_stalled' AND at > now() - make_interval(secs => $1)
 GROUP BY 1, 2 ORDER BY 1, 2";

/// Through `executions_leases` (its predicate is `state = 'running'`).
const STALLED_NOW: &str = "
SELECT r.sequence, e.module, count(*) FROM executions e JOIN runs r ON r.id = e.run_id
 WHERE e.state = 'running' AND e.stalled_at IS NOT NULL
 GROUP BY 1, 2 ORDER BY 1, 2";

/// Per module, the executions of each (duration bucket, memory bucket)
/// pair: a bucket is how many bounds lie below the value, NULL without one.
const BUCKETS: &str = "
SELECT e.module,
       (SELECT count(*) FROM unnest($2::bigint[]) b WHERE b < e.duration_ms)::int AS d_bucket,
       CASE WHEN e.peak_rss_kib IS NOT NULL THEN
         (SELECT count(*) FROM unnest($3::bigint[]) b WHERE b < e.peak_rss_kib)::int END AS m_bucket,
       count(*), coalesce(sum(e.duration_ms), 0)::bigint, coalesce(sum(e.peak_rss_kib), 0)::bigint
  FROM executions e
 WHERE e.finished_at > now() - make_interval(secs => $1) AND e.finished_at IS NOT NULL
   AND e.duration_ms IS NOT NULL
 GROUP BY 1, 2, 3";

/// `(module, duration bucket, memory bucket, executions, duration sum,
/// memory sum)`: a row of [`BUCKETS`].
pub(crate) type BucketRow = (String, i32, Option<i32>, i64, i64, i64);

/// Through `schedule_slots_not_run`.
const SLOTS: &str = "
SELECT s.name,
       count(sl.fate) FILTER (WHERE sl.fate = 'missed'),
       count(sl.fate) FILTER (WHERE sl.fate = 'skipped')
  FROM schedules s
  LEFT JOIN schedule_slots sl ON sl.schedule = s.name AND sl.fate IN ('missed', 'skipped')
 GROUP BY s.name ORDER BY s.name";

pub(crate) async fn activity(
    t: &Tracker,
    within: Duration,
    duration_bounds_ms: &[i64],
    memory_bounds_kib: &[i64],
) -> Result<Activity> {
    let secs = within.as_secs_f64();
    let by = |sql: &'static str| {
        sqlx::query_as::<_, (String, String, i64)>(sql)
            .bind(secs)
            .fetch_all(&t.pool)
    };
    let runs_finished = by(RUNS_FINISHED).await?;
    let retries = by(RETRIES).await?;
    let stalls = by(STALLS).await?;
    let stalled_now = sqlx::query_as(STALLED_NOW).fetch_all(&t.pool).await?;
    let rows: Vec<BucketRow> = sqlx::query_as(BUCKETS)
        .bind(secs)
        .bind(duration_bounds_ms)
        .bind(memory_bounds_kib)
        .fetch_all(&t.pool)
        .await?;
    let slots = sqlx::query_as(SLOTS).fetch_all(&t.pool).await?;
    let (durations, peak_memory) = histograms(&rows, duration_bounds_ms, memory_bounds_kib);
    Ok(Activity {
        runs_finished,
        retries,
        stalls,
        stalled_now,
        durations,
        peak_memory,
        slots,
    })
}

/// Bucketed rows -> cumulative histograms per module, by module name.
pub(crate) fn histograms(
    rows: &[BucketRow],
    duration_bounds: &[i64],
    memory_bounds: &[i64],
) -> (Vec<ModuleHistogram>, Vec<ModuleHistogram>) {
    use std::collections::BTreeMap;
    let empty = |module: &str, bounds: &[i64]| ModuleHistogram {
        module: module.to_string(),
        le: bounds.iter().map(|b| (*b, 0)).collect(),
        count: 0,
        sum: 0,
    };
    let add = |h: &mut ModuleHistogram, bucket: usize, n: i64, sum: i64| {
        for (_, c) in h.le.iter_mut().skip(bucket) {
            *c += n;
        }
        h.count += n;
        h.sum += sum;
    };
    let mut durations: BTreeMap<&str, ModuleHistogram> = BTreeMap::new();
    let mut memory: BTreeMap<&str, ModuleHistogram> = BTreeMap::new();
    for (module, d_bucket, m_bucket, n, d_sum, m_sum) in rows {
        let h = durations
            .entry(module)
            .or_insert_with(|| empty(module, duration_bounds));
        add(h, *d_bucket as usize, *n, *d_sum);
        if let Some(m) = m_bucket {
            let h = memory.entry(module).or_insert_with(|| empty(module, memory_bounds));
            add(h, *m as usize, *n, *m_sum);
        }
    }
    (durations.into_values().collect(), memory.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucketed_rows_add_up_to_cumulative_histograms_per_module() {
        let rows = vec![
            ("load".to_string(), 0, Some(1), 2, 900, 300_000),
            ("load".to_string(), 2, None, 1, 90_000, 0),
            ("extract".to_string(), 1, Some(0), 3, 12_000, 30_000),
        ];
        let (d, m) = histograms(&rows, &[1000, 10_000], &[65_536, 262_144]);
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[1],
            ModuleHistogram {
                module: "load".into(),
                le: vec![(1000, 2), (10_000, 2)],
                count: 3,
                sum: 90_900,
            }
        );
        assert_eq!(d[0].le, vec![(1000, 0), (10_000, 3)]);
        // Only the executions the kernel accounted for.
        assert_eq!(m[1].le, vec![(65_536, 0), (262_144, 2)]);
        assert_eq!((m[1].count, m[1].sum), (2, 300_000));
        assert_eq!(m[0].le, vec![(65_536, 3), (262_144, 3)]);
    }
}
