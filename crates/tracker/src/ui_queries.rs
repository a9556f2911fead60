//! Reads the monitoring UI needs beyond [`crate::views`]: the last runs of
//! each sequence, cheap change fingerprints for live pages, counts for
//! `/metrics`, and a liveness probe. Read-only: the UI's writes go through
//! the same transitions as the workers' ([`Tracker::apply_transition`]).

use crate::views::RunSummary;
use crate::{Result, Tracker};
use uuid::Uuid;

/// Row counts by state, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct StateCounts {
    pub runs: Vec<(String, i64)>,
    pub executions: Vec<(String, i64)>,
    /// Workers not stopped whose heartbeat is younger than `alive_within`.
    pub workers_alive: i64,
}

impl Tracker {
    /// The newest `per_sequence` runs of each of `sequences` (one index range
    /// scan per sequence on `runs_by_sequence`), newest first within each.
    pub async fn last_runs_by_sequence(&self, sequences: &[String], per_sequence: u32) -> Result<Vec<RunSummary>> {
        Ok(sqlx::query_as::<_, RunSummary>(
            // Same columns as the views' run listing.
            "SELECT r.id, r.sequence, r.state, r.trigger, r.queue, r.step_count,
                    (SELECT max(e.step) FROM executions e WHERE e.run_id = r.id) AS current_step,
                    r.failed_step, r.error, r.created_at, r.started_at, r.finished_at,
                    (extract(epoch FROM (coalesce(r.finished_at, now()) - r.started_at)) * 1000)::bigint AS duration_ms
               FROM unnest($1::text[]) AS s(name)
               CROSS JOIN LATERAL (
                   SELECT * FROM runs WHERE sequence = s.name
                    ORDER BY created_at DESC, id DESC LIMIT $2
               ) r
              ORDER BY r.sequence, r.created_at DESC, r.id DESC",
        )
        .bind(sequences)
        .bind(per_sequence.clamp(1, 100) as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A value that changes whenever a runs listing could show something
    /// different: a run created, a run changing state (the newest 50 and
    /// every unfinished one), a step starting or ending. Every part reads a
    /// partial or ordered index, so polling it each second stays cheap with
    /// millions of rows.
    pub async fn runs_fingerprint(&self) -> Result<String> {
        Ok(sqlx::query_scalar(
            "SELECT md5(concat_ws('|',
                 (SELECT string_agg(id::text || state || updated_at::text, ',' ORDER BY created_at DESC, id DESC)
                    FROM (SELECT id, state, updated_at, created_at FROM runs
                           ORDER BY created_at DESC, id DESC LIMIT 50) newest),
                 (SELECT string_agg(id::text || state || updated_at::text, ',' ORDER BY id)
                    FROM runs WHERE state IN ('queued', 'running')),
                 (SELECT string_agg(run_id::text || step || '.' || attempt || state, ',' ORDER BY run_id, step, attempt)
                    FROM executions WHERE state = 'running'),
                 (SELECT string_agg(run_id::text || step || '.' || attempt, ',' ORDER BY run_id, step, attempt)
                    FROM executions WHERE state = 'queued')))",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// A value that changes whenever the run's detail page would: its state
    /// or any of its executions (state, pid, end). `None`: no such run.
    pub async fn run_fingerprint(&self, run_id: Uuid) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT md5(concat_ws('|', r.state, r.updated_at::text,
                 (SELECT string_agg(e.step || '.' || e.attempt || e.state || coalesce(e.pid, 0)
                                    || coalesce(e.finished_at::text, ''), ',' ORDER BY e.step, e.attempt)
                    FROM executions e WHERE e.run_id = r.id)))
               FROM runs r WHERE r.id = $1",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Runs and executions by state, and live workers. The executions count
    /// scans the table: meant for a scrape every few seconds, not a hot path.
    pub async fn state_counts(&self, alive_within: std::time::Duration) -> Result<StateCounts> {
        let runs = sqlx::query_as::<_, (String, i64)>("SELECT state, count(*) FROM runs GROUP BY state ORDER BY state")
            .fetch_all(&self.pool)
            .await?;
        let executions =
            sqlx::query_as::<_, (String, i64)>("SELECT state, count(*) FROM executions GROUP BY state ORDER BY state")
                .fetch_all(&self.pool)
                .await?;
        let workers_alive = sqlx::query_scalar(
            "SELECT count(*) FROM workers
              WHERE state <> 'stopped' AND heartbeat_at > now() - make_interval(secs => $1)",
        )
        .bind(alive_within.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        Ok(StateCounts {
            runs,
            executions,
            workers_alive,
        })
    }

    /// `SELECT 1`: whether the database answers, for `/healthz`.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
