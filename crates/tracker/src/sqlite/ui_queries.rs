//! Mirrors `crate::ui_queries` (PostgreSQL) for the embedded store: the last
//! runs of each sequence, change fingerprints for live pages, counts for
//! `/metrics`, and a liveness probe. Read-only.

use super::Embedded;
use super::views::{CLOCK, RUN_COLUMNS, clock};
use crate::Result;
use crate::ui_queries::StateCounts;
use crate::views::RunSummary;
use std::hash::{Hash, Hasher};
use std::time::Duration;
use uuid::Uuid;

const COUNT_RUNS: &str = "SELECT state, count(*) FROM runs GROUP BY state ORDER BY state";
const COUNT_EXECUTIONS: &str = "SELECT state, count(*) FROM executions GROUP BY state ORDER BY state";

/// The newest `per_sequence` runs of each of `sequences`, newest first
/// within each. SQLite has no `LATERAL`: the correlated `IN` subquery is
/// run once per name, one range scan of `runs_by_sequence` each, and the
/// runs it gives are read by primary key.
pub(crate) async fn last_runs_by_sequence(
    t: &Embedded,
    sequences: &[String],
    per_sequence: u32,
) -> Result<Vec<RunSummary>> {
    static QUERY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{CLOCK}
             SELECT {RUN_COLUMNS}
               FROM clock, json_each(?3) AS s
               JOIN runs ON runs.id IN (
                   SELECT n.id FROM runs n WHERE n.sequence = s.value
                    ORDER BY n.created_at DESC, n.id DESC LIMIT ?4)
              ORDER BY runs.sequence, runs.created_at DESC, runs.id DESC"
        )
    });
    let (now, live) = clock();
    Ok(sqlx::query_as::<_, RunSummary>(QUERY.as_str())
        .bind(now)
        .bind(live)
        .bind(sqlx::types::Json(sequences))
        .bind(per_sequence.clamp(1, 100) as i64)
        .fetch_all(&t.pool)
        .await?)
}

/// A short digest of what a fingerprint reads. SQLite has no `md5`: the
/// parts are joined in SQL as PostgreSQL joins them, and hashed here (std's
/// SipHash with fixed keys; the value is compared only with others of the
/// same build, never stored).
fn digest(text: &str) -> String {
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A value that changes whenever a runs listing could show something
/// different: a run created, a run changing state (the newest 50 and
/// every unfinished one), a step starting or ending. Every part reads a
/// partial or ordered index, as with PostgreSQL.
pub(crate) async fn runs_fingerprint(t: &Embedded) -> Result<String> {
    let text: String = sqlx::query_scalar(
        "SELECT concat_ws('|',
             (SELECT group_concat(hex(id) || state || updated_at, ',' ORDER BY created_at DESC, id DESC)
                FROM (SELECT id, state, updated_at, created_at FROM runs
                       ORDER BY created_at DESC, id DESC LIMIT 50) newest),
             (SELECT group_concat(hex(id) || state || updated_at, ',' ORDER BY id)
                FROM runs WHERE state IN ('queued', 'running')),
             (SELECT group_concat(hex(id), ',' ORDER BY id) FROM runs WHERE state = 'waiting'),
             (SELECT group_concat(hex(id) || state, ',' ORDER BY id) FROM workers WHERE state <> 'stopped'),
             (SELECT group_concat(hex(run_id) || step || '.' || attempt || state, ',' ORDER BY run_id, step, attempt)
                FROM executions WHERE state = 'running'),
             (SELECT group_concat(hex(run_id) || step || '.' || attempt, ',' ORDER BY run_id, step, attempt)
                FROM executions WHERE state = 'queued'))",
    )
    .fetch_one(&t.pool)
    .await?;
    Ok(digest(&text))
}

/// A value that changes whenever the run's detail page would: its state
/// or any of its executions (state, pid, end). `None`: no such run.
pub(crate) async fn run_fingerprint(t: &Embedded, run_id: Uuid) -> Result<Option<String>> {
    let text: Option<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', r.state, r.updated_at,
             (SELECT group_concat(e.step || '.' || e.attempt || e.state || coalesce(e.pid, 0)
                                  || coalesce(e.finished_at, ''), ',' ORDER BY e.step, e.attempt)
                FROM executions e WHERE e.run_id = r.id))
           FROM runs r WHERE r.id = ?1",
    )
    .bind(run_id)
    .fetch_optional(&t.pool)
    .await?;
    Ok(text.as_deref().map(digest))
}

/// Runs and executions by state, and live workers.
///
/// Counted exactly, always: SQLite keeps no per-value statistics that
/// PostgreSQL's estimate (`pg_class` rows times `pg_stats` frequencies)
/// could be built from, and the embedded mode's record (one host) is the
/// size exact counts are cheap at: `runs` is counted from `runs_by_state`
/// alone (a covering index), `executions` by a scan of the table.
pub(crate) async fn state_counts(t: &Embedded, alive_within: Duration) -> Result<StateCounts> {
    let runs = sqlx::query_as(COUNT_RUNS).fetch_all(&t.pool).await?;
    let executions = sqlx::query_as(COUNT_EXECUTIONS).fetch_all(&t.pool).await?;
    let alive_since = chrono::Duration::from_std(alive_within)
        .ok()
        .and_then(|d| super::now().checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let workers_alive = sqlx::query_scalar(
        "SELECT count(*) FROM workers
          WHERE state <> 'stopped' AND heartbeat_at > ?1",
    )
    .bind(alive_since)
    .fetch_one(&t.pool)
    .await?;
    Ok(StateCounts {
        runs,
        executions,
        workers_alive,
    })
}

/// `SELECT 1`: whether the store answers, for `/healthz`.
pub(crate) async fn ping(t: &Embedded) -> Result<()> {
    sqlx::query("SELECT 1").execute(&t.pool).await?;
    Ok(())
}
