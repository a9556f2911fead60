//! `scheduler bench-prune`: does retention lock out running work? On a
//! database of its own filled as for `bench-ui` (a year of history, a
//! million runs, ten million executions, a log row each), it runs a real
//! worker (`scheduler worker`, a process of its own) on a stream of short
//! runs, then runs `scheduler prune` on half of the history, as an operator
//! would, while the stream goes on. It prints how long the prune took and
//! the step latencies before, during and after it (p50, p99, max), and
//! checks that nothing unfinished was deleted: a hundred old runs made
//! `queued` or `running` for the occasion, and the fill's newest running
//! runs.
//!
//! A step's latency is measured by the modules themselves, on the machine's
//! clock: each writes the time it starts and ends to a file; a step's
//! latency is from the end of the previous step to its own start (for a
//! first step, from the `start_run` call). That is everything a worker does
//! between two modules: recording a result, claiming the next step,
//! spawning it. The database's own timestamps could not show a wait: `now()`
//! is when a statement's transaction began, not when it got its lock.

use crate::BenchDb;
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use scheduler_broker::{Broker, BrokerConfig, Transport};
use scheduler_tracker::{Store, Tracker, TrackerConfig};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The benchmark's own database: never the scheduler's (nor `bench-ui`'s,
/// which it would leave half empty).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/scheduler_prune_bench";

/// Steps of a stream run, each a module that notes when it starts and ends.
const STREAM_STEPS: usize = 5;
/// A stream run is started this often: 4 runs, 20 steps a second.
const STREAM_EVERY: Duration = Duration::from_millis(250);
/// The stream's first seconds are not counted (connections, caches).
const WARM_UP: Duration = Duration::from_secs(3);
/// The stream goes on this long after the prune, for an "after" figure.
const AFTER: Duration = Duration::from_secs(10);
/// Half of the year the fill spreads its runs over: `--older-than`, and
/// the same in seconds.
const HALF_YEAR: &str = "4380h";
const HALF_YEAR_SECS: f64 = 4380.0 * 3600.0;
/// The promise: no step is delayed by more than this during a prune.
const TARGET: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct BenchPruneArgs {
    /// Runs to fill the database with.
    pub runs: u64,
    /// Steps of every filled run (and execution rows per run).
    pub steps_per_run: u32,
    /// How long the stream runs before the prune starts.
    pub baseline: Duration,
    /// The benchmark's own database; its name must contain `bench`.
    pub database_url: String,
    pub amqp_url: String,
    /// The `scheduler` program, to run its worker and its prune.
    pub program: PathBuf,
}

pub async fn bench(args: BenchPruneArgs) -> anyhow::Result<()> {
    let db_name = args
        .database_url
        .split('?')
        .next()
        .and_then(|u| u.rsplit('/').next())
        .unwrap_or("");
    if !db_name.contains("bench") || args.database_url == crate::ui::DEFAULT_DATABASE_URL {
        bail!(
            "refusing to use database {db_name:?}: the benchmark deletes half of it, so it only uses a database of \
             its own whose name contains \"bench\" (default: {DEFAULT_DATABASE_URL})"
        );
    }
    let tracker = Tracker::open(&TrackerConfig::new(&args.database_url)).await?;
    let db = BenchDb::connect(&args.database_url).await?;
    prepare(&args, &db).await?;
    let unfinished = db.prune_bench_unfinish(100).await?;
    println!(
        "made {} old runs unfinished ({} queued, the rest running with a step holding a lease)",
        unfinished.len(),
        unfinished.len() / 2
    );
    let t = Instant::now();
    db.bench_vacuum_analyze().await?;
    println!("VACUUM (ANALYZE) in {:.1} s", t.elapsed().as_secs_f64());

    let project = std::env::temp_dir().join(format!("scheduler-bench-prune-{}", Uuid::now_v7().simple()));
    let result = measure(&args, tracker.clone(), &db, &project, &unfinished).await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&project);
    } else {
        eprintln!("kept {} (the worker's log, the modules' ticks)", project.display());
    }
    tracker.close().await;
    db.close().await;
    result
}

/// A full database: filled (again, when a previous prune left it half
/// empty), with a log row per execution.
async fn prepare(args: &BenchPruneArgs, db: &BenchDb) -> anyhow::Result<()> {
    let want_execs = args.runs * args.steps_per_run as u64;
    let (runs, execs) = db.bench_counts().await?;
    if runs as u64 == args.runs && execs as u64 == want_execs && db.prune_bench_logs().await? > 0 {
        println!("the database already holds {runs} runs, {execs} executions and their logs: skipping the fill");
        return Ok(());
    }
    if runs > 0 {
        println!("the database holds {runs} runs (a previous prune, or a partial fill): emptying it");
        db.prune_bench_erase().await?;
    }
    println!("filling: {} runs, {want_execs} executions", args.runs);
    let took = crate::ui::fill(db, args.runs, args.steps_per_run, true).await?;
    println!("filled in {:.1} s", took.as_secs_f64());
    let t = Instant::now();
    let rows = db.prune_bench_fill_logs(24).await?;
    println!("{rows} log rows written in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// A stream run's module: notes its start and end (run, step, ns).
const TICK: &str = "#!/bin/sh\necho \"$ETL_RUN_ID $ETL_STEP start $(date +%s%N)\" >> ticks\necho \"$ETL_RUN_ID $ETL_STEP end $(date +%s%N)\" >> ticks\n";

fn make_project(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("etl_sequences")).context("creating the bench project")?;
    std::fs::write(dir.join("tick.sh"), TICK)?;
    std::fs::set_permissions(dir.join("tick.sh"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(dir.join("modules.json"), r#"{"tick": {"cmd": "./tick.sh"}}"#)?;
    let steps = [r#"{"module_name": "tick"}"#; STREAM_STEPS].join(", ");
    std::fs::write(dir.join("etl_sequences/stream.json"), format!("[{steps}]"))?;
    Ok(())
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

async fn measure(
    args: &BenchPruneArgs,
    tracker: Tracker,
    db: &BenchDb,
    project: &Path,
    unfinished: &[Uuid],
) -> anyhow::Result<()> {
    make_project(project)?;
    let queue = format!("bench-prune-{}", Uuid::now_v7());
    let broker = Broker::connect(
        &BrokerConfig {
            queue_expires_ms: Some(600_000),
            ..BrokerConfig::new(args.amqp_url.clone())
        },
        "scheduler bench-prune",
    )
    .await?;
    let mut worker = spawn_worker(args, project, &queue).await?;
    let result = stream_and_prune(args, tracker, db, project, &queue, &broker, unfinished).await;
    // SIGTERM: the worker drains (every stream run has ended by now) and exits.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().unwrap_or(0).to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
    let _ = worker.start_kill();
    broker.delete_queue(&queue).await.ok();
    broker.close().await;
    result
}

/// `scheduler worker` on the bench's queue; returns once it consumes.
async fn spawn_worker(args: &BenchPruneArgs, project: &Path, queue: &str) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::File::create(project.join("worker.log"))?;
    let child = tokio::process::Command::new(&args.program)
        .args(["worker", "-c", "4"])
        .env("DATABASE_URL", &args.database_url)
        .env("AMQP_URL", &args.amqp_url)
        .env("SCHEDULER_QUEUE", queue)
        .env("SCHEDULER_PROJECT", project)
        .env("SCHEDULER_QUEUE_EXPIRES_MS", "600000")
        .env("RUST_LOG", "info")
        .current_dir(project)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the bench's worker")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(project.join("worker.log"))?.contains("worker started") {
        if Instant::now() > deadline {
            bail!(
                "the bench's worker did not start; see {}",
                project.join("worker.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(child)
}

#[allow(clippy::too_many_arguments)]
async fn stream_and_prune(
    args: &BenchPruneArgs,
    tracker: Tracker,
    db: &BenchDb,
    project: &Path,
    queue: &str,
    broker: &Broker,
    unfinished: &[Uuid],
) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(tracker);
    let transport: Arc<dyn Transport> = Arc::new(broker.clone());
    let stop = CancellationToken::new();
    let stream = tokio::spawn(stream(
        scheduler_producer::Project::new(project)?,
        store.clone(),
        transport,
        queue.to_string(),
        stop.clone(),
    ));
    println!(
        "\nstream: a run of {STREAM_STEPS} steps every {} ms; baseline {} s after {} s of warm-up",
        STREAM_EVERY.as_millis(),
        args.baseline.as_secs(),
        WARM_UP.as_secs()
    );
    tokio::time::sleep(WARM_UP).await;
    let baseline_from = now_ns();
    tokio::time::sleep(args.baseline).await;

    println!("scheduler prune --older-than {HALF_YEAR} (half of the year of history):");
    let prune_from = now_ns();
    let t = Instant::now();
    let out = tokio::process::Command::new(&args.program)
        .args(["prune", "--older-than", HALF_YEAR])
        .env("DATABASE_URL", &args.database_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Its progress lines, as they come.
        .stderr(Stdio::inherit())
        .spawn()
        .context("running scheduler prune")?
        .wait_with_output()
        .await
        .context("running scheduler prune")?;
    let prune_took = t.elapsed();
    let prune_to = now_ns();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        stop.cancel();
        bail!("scheduler prune failed ({})", out.status);
    }
    println!("the prune took {:.1} s", prune_took.as_secs_f64());
    tokio::time::sleep(AFTER).await;
    stop.cancel();
    let started = stream.await.context("the stream panicked")??;

    // Every stream run ends (the worker goes on with what is queued).
    let ids: Vec<Uuid> = started.iter().map(|(id, _)| *id).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while db.count_unfinished(&ids).await? > 0 {
        if Instant::now() > deadline {
            bail!("stream runs did not finish within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ticks = std::fs::read_to_string(project.join("ticks")).context("reading the modules' ticks")?;
    let latencies = latencies(&started, &ticks);
    let phase = |from: i128, to: i128| -> Vec<f64> {
        latencies
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, ms)| *ms)
            .collect()
    };
    println!("\nstep latency, ms (end of a module to the start of the next; from start_run for a first step):");
    println!("{:<14} {:>7} {:>8} {:>8} {:>8}", "phase", "steps", "p50", "p99", "max");
    let during = phase(prune_from, prune_to);
    for (name, mut v) in [
        ("before", phase(baseline_from, prune_from)),
        ("during prune", during.clone()),
        ("after", phase(prune_to, i128::MAX)),
    ] {
        v.sort_by(|a, b| a.total_cmp(b));
        let p = |q: f64| {
            v.get(((v.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        println!(
            "{name:<14} {:>7} {:>8.1} {:>8.1} {:>8.1}",
            v.len(),
            p(0.5),
            p(0.99),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
    let worst = during.iter().copied().fold(0.0, f64::max);
    let failed = ids.len() as i64 - db.prune_bench_succeeded(&ids).await?;
    println!(
        "\ntarget: no step delayed by more than {} s during the prune: {} (worst {worst:.1} ms; {} stream runs, {failed} not succeeded)",
        TARGET.as_secs(),
        if worst < TARGET.as_secs_f64() * 1000.0 && failed == 0 {
            "met"
        } else {
            "MISSED"
        },
        ids.len()
    );

    let (kept, left_final, total) = db.prune_bench_check(unfinished, HALF_YEAR_SECS).await?;
    println!(
        "nothing unfinished deleted: {kept} of the {} old unfinished runs kept ({}); {left_final} final runs older \
         than the bound left; {total} runs in the database",
        unfinished.len(),
        if kept == unfinished.len() as i64 {
            "all"
        } else {
            "SOME DELETED"
        }
    );
    Ok(())
}

/// Starts a stream run every [`STREAM_EVERY`] until `stop`; returns each
/// run with the time its `start_run` was called.
async fn stream(
    project: scheduler_producer::Project,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    queue: String,
    stop: CancellationToken,
) -> anyhow::Result<Vec<(Uuid, i128)>> {
    let mut started = Vec::new();
    let mut tick = tokio::time::interval(STREAM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(started),
            _ = tick.tick() => {}
        }
        let at = now_ns();
        let run =
            scheduler_producer::start_run(&project, &*store, &*transport, "stream", &queue, "bench-prune").await?;
        started.push((run.run_id, at));
    }
}

/// Each step's latency in ms, keyed by when the step started (ns).
fn latencies(started: &[(Uuid, i128)], ticks: &str) -> Vec<(i128, f64)> {
    use std::collections::HashMap;
    let mut at: HashMap<(String, u32, &str), i128> = HashMap::new();
    for line in ticks.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [run, step, kind @ ("start" | "end"), ns] = f[..]
            && let (Ok(step), Ok(ns)) = (step.parse::<u32>(), ns.parse::<i128>())
        {
            at.insert((run.to_string(), step, kind), ns);
        }
    }
    let mut out = Vec::new();
    for (id, called) in started {
        let run = id.to_string();
        for step in 0..STREAM_STEPS as u32 {
            let Some(&start) = at.get(&(run.clone(), step, "start")) else {
                continue;
            };
            let from = match step {
                0 => Some(*called),
                _ => at.get(&(run.clone(), step - 1, "end")).copied(),
            };
            if let Some(from) = from {
                out.push((start, (start - from) as f64 / 1e6));
            }
        }
    }
    out
}

impl BenchDb {
    /// Empties the benchmark's database (every table that refers to runs too).
    pub async fn prune_bench_erase(&self) -> sqlx::Result<()> {
        sqlx::query("TRUNCATE runs, workers CASCADE")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Log rows in the database (is there any?).
    pub async fn prune_bench_logs(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM execution_logs LIMIT 1) l")
            .fetch_one(&self.pool)
            .await
    }

    /// A log row per execution (its stdout tail, at its end), written in
    /// `parts` statements by ranges of the runs' creation, two at a time;
    /// foreign-key triggers skipped as in the fill. Returns the rows.
    pub async fn prune_bench_fill_logs(&self, parts: u32) -> anyhow::Result<u64> {
        let (first, last): (DateTime<Utc>, DateTime<Utc>) =
            sqlx::query_as("SELECT min(created_at), max(created_at) + interval '1 second' FROM runs")
                .fetch_one(&self.pool)
                .await?;
        let span = (last - first) / parts as i32;
        let bounds: Vec<(DateTime<Utc>, DateTime<Utc>)> = (0..parts as i32)
            .map(|i| {
                (
                    first + span * i,
                    if i + 1 == parts as i32 {
                        last
                    } else {
                        first + span * (i + 1)
                    },
                )
            })
            .collect();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let bounds = Arc::new(bounds);
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let (db, next, bounds) = (self.clone(), next.clone(), bounds.clone());
            tasks.push(tokio::spawn(async move {
                let mut rows = 0;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some((from, to)) = bounds.get(i).copied() else {
                        return anyhow::Ok(rows);
                    };
                    let mut tx = db.pool.begin().await?;
                    sqlx::query(
                        "SELECT CASE WHEN current_setting('is_superuser') = 'on'
                                     THEN set_config('session_replication_role', 'replica', true) END",
                    )
                    .execute(&mut *tx)
                    .await?;
                    rows += sqlx::query(
                        "INSERT INTO execution_logs (run_id, step, attempt, pos, stream, at, data)
                         SELECT e.run_id, e.step, e.attempt, 0, 'stdout', coalesce(e.finished_at, e.started_at, e.queued_at),
                                convert_to(e.stdout_tail, 'UTF8')
                           FROM runs r JOIN executions e ON e.run_id = r.id
                          WHERE r.created_at >= $1 AND r.created_at < $2 AND coalesce(e.stdout_tail, '') <> ''",
                    )
                    .bind(from)
                    .bind(to)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    tx.commit().await?;
                }
            }));
        }
        let mut rows = 0;
        for t in tasks {
            rows += t.await??;
        }
        Ok(rows)
    }

    /// Makes `n` old finished runs (from the older half) unfinished: half
    /// `queued`, half `running` with their last execution running on a
    /// lease a day long (so recovery leaves them be); and gives the fill's
    /// own running steps such a lease too. Returns the `n` runs.
    pub async fn prune_bench_unfinish(&self, n: i64) -> sqlx::Result<Vec<Uuid>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "WITH picked AS (
                 SELECT id, row_number() OVER (ORDER BY hashtext(id::text)) AS k FROM runs
                  WHERE created_at < now() - interval '200 days' AND state IN ('succeeded', 'failed', 'canceled')
                  ORDER BY hashtext(id::text) LIMIT $1
             )
             UPDATE runs r SET state = CASE WHEN p.k % 2 = 0 THEN 'queued' ELSE 'running' END,
                               finished_at = NULL, failed_step = NULL, error = NULL
               FROM picked p WHERE r.id = p.id
             RETURNING r.id",
        )
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        sqlx::query(
            "UPDATE executions e SET state = 'running', finished_at = NULL, duration_ms = NULL,
                                     lease_until = now() + interval '1 day'
               FROM runs r
              WHERE r.id = ANY($1) AND r.state = 'running' AND e.run_id = r.id
                AND (e.step, e.attempt) = (SELECT x.step, x.attempt FROM executions x WHERE x.run_id = r.id
                                            ORDER BY x.step DESC, x.attempt DESC LIMIT 1)",
        )
        .bind(&ids)
        .execute(&self.pool)
        .await?;
        sqlx::query("UPDATE executions SET lease_until = now() + interval '1 day' WHERE state = 'running'")
            .execute(&self.pool)
            .await?;
        Ok(ids)
    }

    /// How many of `ids` succeeded.
    pub async fn prune_bench_succeeded(&self, ids: &[Uuid]) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE id = ANY($1) AND state = 'succeeded'")
            .bind(ids)
            .fetch_one(&self.pool)
            .await
    }

    /// After the prune: how many of `unfinished` are still there and still
    /// unfinished, how many final runs older than `age_secs` are left, and
    /// how many runs in all.
    pub async fn prune_bench_check(&self, unfinished: &[Uuid], age_secs: f64) -> sqlx::Result<(i64, i64, i64)> {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM runs WHERE id = ANY($1) AND state IN ('queued', 'running')),
                    (SELECT count(*) FROM runs WHERE state IN ('succeeded', 'failed', 'canceled', 'skipped')
                        AND coalesce(finished_at, created_at) < now() - make_interval(secs => $2)),
                    (SELECT count(*) FROM runs)",
        )
        .bind(unfinished)
        .bind(age_secs)
        .fetch_one(&self.pool)
        .await
    }
}
