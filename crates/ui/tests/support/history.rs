//! Histories written straight into a test's record: runs and their
//! executions with the times, durations and accounting a test names, so
//! pages and `/metrics` can be checked against exact figures (and at sizes
//! a real worker would take minutes to reach). Every time is computed here
//! and bound, so the same statements serve PostgreSQL and SQLite.

use crate::common::db::{Db, query};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

fn secs(s: f64) -> Duration {
    Duration::microseconds((s * 1e6).round() as i64)
}

/// Writes a run of `sequence` straight into the record: created `ago_secs`
/// ago, started a second later, `state` after `run_ms`; one execution per
/// `(module, state, duration_ms)`, back to back, each queued 100 ms after
/// the previous one ended.
pub async fn insert_run(
    db: &mut Db,
    sequence: &str,
    state: &str,
    ago_secs: f64,
    run_ms: i64,
    steps: &[(&str, &str, i64)],
) -> Uuid {
    let id = Uuid::now_v7();
    let now: DateTime<Utc> = Utc::now();
    let failed = steps.iter().position(|(_, s, _)| *s == "failed").map(|p| p as i32);
    let finished =
        (!["running", "queued"].contains(&state)).then(|| now - secs(ago_secs - 1.0 - run_ms as f64 / 1000.0));
    query(
        "INSERT INTO runs (id, sequence, state, queue, trigger, snapshot, step_count, failed_step, error,
                           created_at, started_at, finished_at)
         VALUES ($1, $2, $3, 'etl', 'cron', '{}', $4, $5, $6, $7, $8, $9)",
    )
    .bind(id)
    .bind(sequence)
    .bind(state)
    .bind(steps.len().max(1) as i32)
    .bind(failed)
    .bind(failed.map(|_| "step failed: exit 3"))
    .bind(now - secs(ago_secs))
    .bind(now - secs(ago_secs - 1.0))
    .bind(finished)
    .execute(db)
    .await;
    let mut at = 1.0;
    for (step, (module, st, ms)) in steps.iter().enumerate() {
        let started = now - secs(ago_secs - at);
        let ended = *st != "running";
        query(&format!(
            "INSERT INTO executions (run_id, step, attempt, module, argv, state, queue, queued_at, started_at,
                                     finished_at, duration_ms, exit_code, peak_rss_kib, user_cpu_us, sys_cpu_us)
             VALUES ($1, $2, 1, $3, {}, $4, 'etl', $5, $5, $6, $7, $8, $9, $10, $11)",
            db.empty_list()
        ))
        .bind(id)
        .bind(step as i32)
        .bind(*module)
        .bind(*st)
        .bind(started)
        .bind(ended.then(|| started + secs(*ms as f64 / 1000.0)))
        .bind(ended.then_some(*ms))
        .bind(match *st {
            "succeeded" => Some(0),
            "failed" => Some(3),
            _ => None::<i32>,
        })
        .bind(10240 + *ms)
        .bind(1000 * *ms)
        .bind(100 * *ms)
        .execute(db)
        .await;
        at += *ms as f64 / 1000.0 + 0.1;
    }
    id
}
