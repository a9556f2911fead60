//! Filling a database with synthetic history for the UI benchmark
//! (`scheduler bench-ui`): a year of runs of ~20 sequences, each with its
//! executions, written with set-based SQL (`INSERT ... SELECT FROM
//! generate_series`), one batch per statement.
//!
//! The data is a deterministic function of the run number `i` (hashes of
//! `i`, no `random()`), so batches can be written in any order and in
//! parallel, and a re-run produces the same rows. Every run gets exactly
//! `steps_per_run` execution rows: steps `0..stop` once, then the attempts
//! of the step it stopped at (`stop` is the last step for succeeded runs; a
//! failed, canceled or running run stops one to three steps before the end
//! and that step was retried until the run's outcome). So `runs *
//! steps_per_run` executions, exactly, which is what the benchmark checks.
//!
//! Distributions: sequences skewed (a few busy, many quiet); runs created
//! evenly over the year before `newest`, ids UUIDv7 of their creation time;
//! ~92% succeeded, ~6% failed, ~2% canceled; the newest 1/20000 (at least
//! two) still running; 80% started by cron; steps of 0.5 s to 85 s on one of
//! eight (stopped) workers, with an argv, an exit code or signal, and short
//! output tails (a traceback on failures).

use crate::BenchDb;
use chrono::{DateTime, Utc};
use sqlx::Result;
use uuid::Uuid;

/// One batch: runs number `first..=last` of `total` (1-based), each with
/// `$4` steps, the newest created at `$5`.
const FILL_BATCH: &str = r#"
WITH names AS (
    SELECT (ord - 1)::int AS k, name
      FROM unnest(ARRAY['daily_sales', 'hourly_clicks', 'crm_accounts', 'erp_orders', 'inventory_snapshot',
                        'web_sessions', 'payments_recon', 'fx_rates', 'ad_spend', 'email_events',
                        'support_tickets', 'warehouse_moves', 'product_catalog', 'customer_360', 'fraud_scores',
                        'shipping_status', 'hr_headcount', 'gl_journal', 'app_installs', 'weather_feed'])
           WITH ORDINALITY AS u(name, ord)
), mods AS (
    SELECT ARRAY['extract_api', 'extract_sftp', 'validate', 'dedupe', 'clean',
                 'join_dims', 'enrich', 'aggregate', 'export_parquet', 'load_warehouse'] AS m
), seqs AS (
    SELECT names.k, names.name, mods.m,
           jsonb_build_object('sequence', names.name, 'steps', (
               SELECT jsonb_agg(jsonb_build_object(
                          'module_name', mods.m[(names.k + s) % 10 + 1],
                          'input', 'data/' || names.name || '/in_' || s || '.csv',
                          'output', 'data/' || names.name || '/out_' || s || '.csv',
                          'conf', 'conf/' || names.name || '.json',
                          'cmd', jsonb_build_array('python3', 'modules/' || mods.m[(names.k + s) % 10 + 1] || '.py'),
                          'argv', jsonb_build_array('--input', 'data/' || names.name || '/in_' || s || '.csv',
                                                    '--output', 'data/' || names.name || '/out_' || s || '.csv',
                                                    '--conf', 'conf/' || names.name || '.json'),
                          'timeout_secs', 3600) ORDER BY s)
                 FROM generate_series(0, $4::int - 1) s)) AS snapshot
      FROM names, mods
), src AS (
    SELECT i,
           $5::timestamptz - make_interval(secs => ($3::bigint - i)::float8 * 31536000.0 / $3::bigint) AS created_at,
           abs(hashint8(i)::bigint) AS h,
           abs(hashint8(-i)::bigint) AS h2
      FROM generate_series($1::bigint, $2::bigint) i
), outcome AS (
    SELECT src.*,
           (abs(hashint8(i * 7919)::bigint) % 10000)::float8 / 10000 AS u,
           CASE WHEN i > $3::bigint - greatest($3::bigint / 20000, 2) THEN 'running'
                WHEN h2 % 1000 < 60 THEN 'failed'
                WHEN h2 % 1000 < 80 THEN 'canceled'
                ELSE 'succeeded' END AS state
      FROM src
), planned AS MATERIALIZED (
    SELECT o.i, o.h, o.created_at, o.state, seqs.k, seqs.name AS sequence, seqs.m, seqs.snapshot,
           (lpad(to_hex((extract(epoch FROM o.created_at) * 1000)::bigint), 12, '0') || '7'
              || lpad(to_hex(o.h % 4096), 3, '0') || '8' || lpad(to_hex(o.i), 15, '0'))::uuid AS id,
           CASE WHEN o.state = 'succeeded' THEN $4::int - 1
                ELSE greatest($4::int - 1 - (o.h2 / 1000 % 3)::int, 0) END AS stop,
           o.created_at + interval '1 second' AS started_at
      FROM outcome o
      JOIN seqs ON seqs.k = least(floor(20 * o.u * o.u)::int, 19)
), new_runs AS (
    INSERT INTO runs (id, sequence, state, queue, trigger, snapshot, step_count, failed_step, error,
                      created_at, started_at, finished_at, published_at, updated_at)
    SELECT p.id, p.sequence, p.state, 'etl',
           CASE WHEN p.h % 10 < 8 THEN 'cron' WHEN p.h % 10 = 8 THEN 'cli:alice@etl-01' ELSE 'ui' END,
           p.snapshot, $4::int,
           CASE WHEN p.state = 'failed' THEN p.stop END,
           CASE WHEN p.state = 'failed'
                THEN format('step %s (%s) exited with code %s', p.stop + 1, p.m[(p.k + p.stop) % 10 + 1], 1 + p.h % 3)
                WHEN p.state = 'canceled' THEN 'canceled from the UI' END,
           p.created_at, p.started_at,
           CASE WHEN p.state <> 'running' THEN p.started_at + $4::int * interval '90 seconds' END,
           p.created_at,
           CASE WHEN p.state <> 'running' THEN p.started_at + $4::int * interval '90 seconds' ELSE p.created_at END
      FROM planned p
    RETURNING 1
)
INSERT INTO executions (run_id, step, attempt, module, argv, timeout_secs, state, worker_id, pid, lease_until,
                        queued_at, published_at, started_at, finished_at, duration_ms, exit_code, signal, error,
                        stdout_tail, stderr_tail, stdout_bytes, stderr_bytes)
SELECT p.id, x.step, greatest(j - p.stop, 0) + 1, x.module,
       ARRAY['python3', 'modules/' || x.module || '.py',
             '--input', 'data/' || p.sequence || '/in_' || x.step || '.csv',
             '--output', 'data/' || p.sequence || '/out_' || x.step || '.csv',
             '--conf', 'conf/' || p.sequence || '.json'],
       3600, x.state,
       ('00000000-0000-7000-8000-00000000000' || (x.hj % 8))::uuid,
       1000 + (x.hj % 60000)::int,
       CASE WHEN x.state = 'running' THEN now() + interval '30 seconds' END,
       x.t0, x.t0, x.t0 + interval '200 milliseconds',
       CASE WHEN x.state <> 'running' THEN x.t0 + interval '200 milliseconds' + x.dur * interval '1 millisecond' END,
       CASE WHEN x.state <> 'running' THEN x.dur END,
       CASE x.state WHEN 'succeeded' THEN 0 WHEN 'failed' THEN 1 + (p.h % 3)::int END,
       CASE WHEN x.state = 'canceled' THEN 15 END,
       CASE x.state WHEN 'failed' THEN format('exited with code %s', 1 + p.h % 3)
                    WHEN 'canceled' THEN 'canceled: process group killed (SIGTERM)' END,
       format(E'%s: reading %s\nread %s rows, wrote %s rows in %s ms\n',
              x.module, 'data/' || p.sequence || '/in_' || x.step || '.csv', x.hj % 100000, x.hj % 90000, x.dur),
       CASE x.state WHEN 'failed'
            THEN format(E'Traceback (most recent call last):\n  File "modules/%s.py", line %s, in main\nValueError: bad row %s: expected 12 columns, found 11\n',
                        x.module, 20 + x.hj % 200, x.hj % 100000)
            WHEN 'succeeded' THEN CASE WHEN x.hj % 5 = 0 THEN E'warning: 3 rows skipped (empty key)\n' ELSE '' END END,
       CASE WHEN x.state <> 'running' THEN 120 + x.hj % 50000 END,
       CASE WHEN x.state <> 'running' THEN x.hj % 2000 END
  FROM planned p
 CROSS JOIN LATERAL generate_series(0, $4::int - 1) j
 CROSS JOIN LATERAL (
     SELECT least(j, p.stop) AS step,
            p.m[(p.k + least(j, p.stop)) % 10 + 1] AS module,
            CASE WHEN j = $4::int - 1 THEN p.state WHEN j < p.stop THEN 'succeeded' ELSE 'failed' END AS state,
            abs(hashint8(p.i * 64 + j)::bigint) AS hj,
            p.started_at + j * interval '90 seconds' AS t0,
            500 + abs(hashint8(p.i * 64 + j)::bigint) % 85000 AS dur
 ) x
"#;

/// The eight workers the executions name, stopped long ago.
const FILL_WORKERS: &str = "
INSERT INTO workers (id, host, pid, version, concurrency, queues, state, started_at, heartbeat_at, stopped_at)
SELECT ('00000000-0000-7000-8000-00000000000' || w)::uuid, 'etl-0' || (w % 4 + 1), 4000 + w, '0.1.0', 4,
       ARRAY['etl'], 'stopped', now() - interval '400 days', now() - interval '2 days', now() - interval '2 days'
  FROM generate_series(0, 7) w
ON CONFLICT (id) DO NOTHING";

impl BenchDb {
    /// Exact numbers of runs and executions (a full count: for the
    /// benchmark's "already filled?" check, not for a hot path).
    pub async fn bench_counts(&self) -> Result<(i64, i64)> {
        sqlx::query_as::<_, (i64, i64)>("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM executions)")
            .fetch_one(&self.pool)
            .await
    }

    /// Writes the workers the synthetic executions ran on (idempotent).
    pub async fn bench_fill_workers(&self) -> Result<()> {
        sqlx::query(FILL_WORKERS).execute(&self.pool).await?;
        Ok(())
    }

    /// Writes runs number `first..=last` of `total` (1-based) with
    /// `steps_per_run` executions each, in one transaction. The newest run
    /// (number `total`) is created at `newest`. Foreign-key triggers are
    /// skipped for the batch when connected as a superuser (the rows are
    /// consistent by construction, and checking 10 million of them one by
    /// one is most of the cost).
    pub async fn bench_fill_batch(
        &self,
        first: u64,
        last: u64,
        total: u64,
        steps_per_run: u32,
        newest: DateTime<Utc>,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT CASE WHEN current_setting('is_superuser') = 'on'
                         THEN set_config('session_replication_role', 'replica', true) END",
        )
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(FILL_BATCH)
            .bind(first as i64)
            .bind(last as i64)
            .bind(total as i64)
            .bind(steps_per_run as i32)
            .bind(newest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// `VACUUM (ANALYZE)` of the filled tables: fresh statistics for the
    /// planner and a set visibility map, as autovacuum leaves them in the
    /// field.
    pub async fn bench_vacuum_analyze(&self) -> Result<()> {
        sqlx::query("VACUUM (ANALYZE) runs, executions, workers")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// About `n` runs picked at random (whole pages, then shuffled), as
    /// `(created_at, id)`: run ids to open and keyset cursors at random
    /// depths.
    pub async fn bench_sample_runs(&self, n: u32) -> Result<Vec<(DateTime<Utc>, Uuid, String)>> {
        let (total,): (f64,) = sqlx::query_as("SELECT greatest(count(*), 1)::float8 FROM runs")
            .fetch_one(&self.pool)
            .await?;
        // Whole pages of ~5 runs each: sample 20 times what is needed.
        let percent = (100.0 * 20.0 * n as f64 / total).clamp(0.001, 100.0);
        sqlx::query_as::<_, (DateTime<Utc>, Uuid, String)>(
            "SELECT created_at, id, sequence FROM (SELECT created_at, id, sequence FROM runs TABLESAMPLE SYSTEM (($1::float8)::real)) s
              ORDER BY random() LIMIT $2",
        )
        .bind(percent)
        .bind(n as i64)
        .fetch_all(&self.pool)
        .await
    }
}
