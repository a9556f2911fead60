//! Histories written straight into a test's record: runs and their
//! executions with the times, durations and accounting a test names, so
//! pages and `/metrics` can be checked against exact figures (and at sizes
//! a real worker would take minutes to reach).

use uuid::Uuid;

/// Writes a run of `sequence` straight into the record: created `ago_secs`
/// ago, started a second later, `state` after `run_ms`; one execution per
/// `(module, state, duration_ms)`, back to back, each queued 100 ms after
/// the previous one ended.
pub async fn insert_run(
    db: &mut sqlx::PgConnection,
    sequence: &str,
    state: &str,
    ago_secs: f64,
    run_ms: i64,
    steps: &[(&str, &str, i64)],
) -> Uuid {
    let id = Uuid::now_v7();
    let failed = steps.iter().position(|(_, s, _)| *s == "failed").map(|p| p as i32);
    sqlx::query(
        "INSERT INTO runs (id, sequence, state, queue, trigger, snapshot, step_count, failed_step, error,
                           created_at, started_at, finished_at)
         VALUES ($1, $2, $3, 'etl', 'cron', '{}', $4, $5, CASE WHEN $5 IS NOT NULL THEN 'step failed: exit 3' END,
                 now() - make_interval(secs => $6), now() - make_interval(secs => $6 - 1),
                 CASE WHEN $3 NOT IN ('running', 'queued') THEN now() - make_interval(secs => $6 - 1 - $7 / 1000.0) END)",
    )
    .bind(id)
    .bind(sequence)
    .bind(state)
    .bind(steps.len().max(1) as i32)
    .bind(failed)
    .bind(ago_secs)
    .bind(run_ms as f64)
    .execute(&mut *db)
    .await
    .unwrap();
    let mut at = 1.0;
    for (step, (module, st, ms)) in steps.iter().enumerate() {
        sqlx::query(
            "INSERT INTO executions (run_id, step, attempt, module, argv, state, queue, queued_at, started_at,
                                     finished_at, duration_ms, exit_code, peak_rss_kib, user_cpu_us, sys_cpu_us)
             VALUES ($1, $2, 1, $3, '{}', $4, 'etl', now() - make_interval(secs => $5 - $6),
                     now() - make_interval(secs => $5 - $6),
                     CASE WHEN $4 <> 'running' THEN now() - make_interval(secs => $5 - $6 - $7 / 1000.0) END,
                     CASE WHEN $4 <> 'running' THEN $7 END, CASE $4 WHEN 'succeeded' THEN 0 WHEN 'failed' THEN 3 END,
                     10240 + $7, 1000 * $7, 100 * $7)",
        )
        .bind(id)
        .bind(step as i32)
        .bind(module)
        .bind(st)
        .bind(ago_secs)
        .bind(at)
        .bind(*ms)
        .execute(&mut *db)
        .await
        .unwrap();
        at += *ms as f64 / 1000.0 + 0.1;
    }
    id
}
