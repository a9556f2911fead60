//! Mirrors `crate::activity` (PostgreSQL) for the embedded store: the last
//! window's activity and the slot ledger's totals for `/metrics`. The
//! window's start is computed here and bound (`?1`); every windowed read
//! starts from the same indexes as there (`runs_finished`,
//! `executions_finished`, `executions_retries`, `events_stalled`).

use super::Embedded;
use crate::Result;
use crate::activity::{Activity, BucketRow, histograms};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use std::time::Duration;

const RUNS_FINISHED: &str = "
SELECT sequence, state, count(*) FROM runs
 WHERE finished_at > ?1 AND finished_at IS NOT NULL
 GROUP BY 1, 2 ORDER BY 1, 2";

const RETRIES: &str = "
SELECT r.sequence, e.module, count(*) FROM executions e JOIN runs r ON r.id = e.run_id
 WHERE e.retry > 0 AND e.queued_at > ?1
 GROUP BY 1, 2 ORDER BY 1, 2";

/// Through `events_stalled`; the module is in the event's detail.
const STALLS: &str = "
SELECT coalesce(sequence, ''), coalesce(detail->>'module', ''), count(*) FROM events
 WHERE kind = 'step_stalled' AND at > ?1
 GROUP BY 1, 2 ORDER BY 1, 2";

/// Through `executions_leases` (its predicate is `state = 'running'`).
const STALLED_NOW: &str = "
SELECT r.sequence, e.module, count(*) FROM executions e JOIN runs r ON r.id = e.run_id
 WHERE e.state = 'running' AND e.stalled_at IS NOT NULL
 GROUP BY 1, 2 ORDER BY 1, 2";

/// Per module, the executions of each (duration bucket, memory bucket)
/// pair: a bucket is how many bounds lie below the value, NULL without one.
/// The bounds are JSON arrays (`?2`, `?3`), read with `json_each`.
const BUCKETS: &str = "
SELECT e.module,
       (SELECT count(*) FROM json_each(?2) b WHERE b.value < e.duration_ms) AS d_bucket,
       CASE WHEN e.peak_rss_kib IS NOT NULL THEN
         (SELECT count(*) FROM json_each(?3) b WHERE b.value < e.peak_rss_kib) END AS m_bucket,
       count(*), coalesce(sum(e.duration_ms), 0), coalesce(sum(e.peak_rss_kib), 0)
  FROM executions e
 WHERE e.finished_at > ?1 AND e.finished_at IS NOT NULL
   AND e.duration_ms IS NOT NULL
 GROUP BY 1, 2, 3";

/// Through `schedule_slots_not_run`.
const SLOTS: &str = "
SELECT s.name,
       count(sl.fate) FILTER (WHERE sl.fate = 'missed'),
       count(sl.fate) FILTER (WHERE sl.fate = 'skipped')
  FROM schedules s
  LEFT JOIN schedule_slots sl ON sl.schedule = s.name AND sl.fate IN ('missed', 'skipped')
 GROUP BY s.name ORDER BY s.name";

pub(crate) async fn activity(
    t: &Embedded,
    within: Duration,
    duration_bounds_ms: &[i64],
    memory_bounds_kib: &[i64],
) -> Result<Activity> {
    let since: DateTime<Utc> = chrono::Duration::from_std(within)
        .ok()
        .and_then(|d| super::now().checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let by = |sql: &'static str| {
        sqlx::query_as::<_, (String, String, i64)>(sql)
            .bind(since)
            .fetch_all(&t.pool)
    };
    let runs_finished = by(RUNS_FINISHED).await?;
    let retries = by(RETRIES).await?;
    let stalls = by(STALLS).await?;
    let stalled_now = sqlx::query_as(STALLED_NOW).fetch_all(&t.pool).await?;
    let rows: Vec<BucketRow> = sqlx::query_as(BUCKETS)
        .bind(since)
        .bind(Json(duration_bounds_ms))
        .bind(Json(memory_bounds_kib))
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
