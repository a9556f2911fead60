//! `scheduler bench`: pushes runs of no-op modules through the real path
//! (PostgreSQL, RabbitMQ with confirms, process spawning) and prints
//! throughput and overhead beside the bare cost of spawning the same module,
//! measured in the same run. It uses its own database (`<db>_bench`) and a
//! throw-away queue, so it never mixes with real runs.

use crate::cli::Global;
use anyhow::Context;
use clap::Args;
use scheduler_bench::BenchDb;
use scheduler_broker::{Broker, BrokerConfig, Transport};
use scheduler_producer::{Project, start_run};
use scheduler_tracker::{RunFilter, Store, Tracker, TrackerConfig};
use scheduler_worker::WorkerConfig;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Runs pushed at once in the throughput phase.
    #[arg(long, default_value_t = 300)]
    pub runs: u32,
    /// Steps (no-op modules) per run.
    #[arg(long, default_value_t = 5)]
    pub steps: u32,
    /// Worker slots (modules at once), as in `scheduler worker -c`.
    #[arg(short = 'c', long, default_value_t = 4)]
    pub concurrency: u16,
    /// Runs executed one at a time in the latency phase.
    #[arg(long, default_value_t = 100)]
    pub latency_runs: u32,
}

pub async fn bench(g: &Global, a: &BenchArgs) -> anyhow::Result<ExitCode> {
    if a.runs == 0 || a.steps == 0 || a.concurrency == 0 {
        anyhow::bail!("--runs, --steps and --concurrency must be at least 1");
    }
    let dir = std::env::temp_dir().join(format!("scheduler-bench-{}", std::process::id()));
    make_project(&dir, a.steps)?;
    let project = Project::new(&dir)?;
    let noop = dir.join("noop.sh");

    println!(
        "scheduler bench: {} runs x {} no-op steps, concurrency {}, on {} cores",
        a.runs,
        a.steps,
        a.concurrency,
        cores()
    );
    let serial = bare_spawn_rate(&noop, 1, 400).await?;
    let parallel = bare_spawn_rate(&noop, a.concurrency as usize, 800).await?;
    println!(
        "bare spawn of the no-op module: {serial:.0}/s serially, {parallel:.0}/s with {} at once",
        a.concurrency
    );
    let captured = executor_spawn_rate(&dir, 400).await?;
    println!("the same through the executor (process group, output capture, cleanup): {captured:.0}/s serially");

    let mut db = TrackerConfig::new(bench_database_url(
        g.database_url
            .as_deref()
            .unwrap_or("postgres://postgres@127.0.0.1:5432/scheduler"),
    ));
    db.max_connections = a.concurrency as u32 + 6;
    let tracker: Arc<dyn Store> = Arc::new(Tracker::open(&db).await.context("opening the bench database")?);
    let bench_db = BenchDb::connect(&db.url).await?;
    bench_db.erase_everything().await?;
    let queue = format!("bench-{}", uuid::Uuid::now_v7());
    let broker = Broker::connect(
        &BrokerConfig {
            url: g
                .amqp_url
                .clone()
                .unwrap_or_else(|| crate::mode::DEFAULT_AMQP_URL.into()),
            queue_expires_ms: Some(60_000),
            queue_type: g.queue_type,
            delivery_limit: g.delivery_limit,
        },
        "scheduler bench",
    )
    .await?;
    let shutdown = CancellationToken::new();
    let config = WorkerConfig {
        concurrency: a.concurrency,
        queues: vec![queue.clone()],
        ..WorkerConfig::default()
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let transport: Arc<dyn Transport> = Arc::new(broker.clone());
    let worker = tokio::spawn(scheduler_worker::worker::run(
        tracker.clone(),
        transport.clone(),
        project.clone(),
        config,
        shutdown.clone(),
        move |_| {
            let _ = ready_tx.send(());
        },
    ));
    ready_rx.await.context("the bench worker did not start")?;

    let bench = Bench {
        project,
        store: tracker,
        transport,
        db: bench_db,
        queue: queue.clone(),
        steps: a.steps,
    };
    bench.latency(a.latency_runs).await?;
    bench.throughput(a.runs, serial, parallel).await?;

    shutdown.cancel();
    worker.await??;
    broker.delete_queue(&queue).await.ok();
    broker.close().await;
    bench.db.close().await;
    std::fs::remove_dir_all(&dir).ok();
    Ok(ExitCode::SUCCESS)
}

/// What both phases run against.
struct Bench {
    project: Project,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    db: BenchDb,
    queue: String,
    steps: u32,
}

impl Bench {
    async fn start(&self) -> anyhow::Result<uuid::Uuid> {
        Ok(start_run(
            &self.project,
            &*self.store,
            &*self.transport,
            "bench",
            &self.queue,
            "bench",
        )
        .await?
        .run_id)
    }

    /// One run at a time, nothing queued behind it.
    async fn latency(&self, runs: u32) -> anyhow::Result<()> {
        let mut ids = Vec::new();
        for _ in 0..runs {
            let id = self.start().await?;
            wait_all(&*self.store, &self.db, &[id]).await?;
            ids.push(id);
        }
        let lat = measure(&self.db, &ids, self.steps).await?;
        println!("\nlatency phase: {runs} runs one after another");
        println!(
            "  per-step dispatch overhead (run wall time minus module time, per step): {}",
            lat.overhead
        );
        println!("  start to first module: {}", lat.first);
        println!("  module time itself (spawn to exit, per step): {}", lat.module);
        Ok(())
    }

    /// Every run started at once.
    async fn throughput(&self, runs: u32, serial: f64, parallel: f64) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let mut starts = tokio::task::JoinSet::new();
        for _ in 0..runs {
            let (p, t, b, q) = (
                self.project.clone(),
                self.store.clone(),
                self.transport.clone(),
                self.queue.clone(),
            );
            starts.spawn(async move { start_run(&p, &*t, &*b, "bench", &q, "bench").await.map(|r| r.run_id) });
        }
        let mut ids = Vec::new();
        while let Some(r) = starts.join_next().await {
            ids.push(r??);
        }
        wait_all(&*self.store, &self.db, &ids).await?;
        let elapsed = t0.elapsed();
        let executions = (runs * self.steps) as f64;
        let rate = executions / elapsed.as_secs_f64();
        let thr = measure(&self.db, &ids, self.steps).await?;
        println!("\nthroughput phase: {runs} runs started at once");
        println!(
            "  {executions:.0} module executions in {:.2}s = {rate:.0} executions/s",
            elapsed.as_secs_f64()
        );
        println!(
            "  = {:.0}% of the bare parallel spawn rate ({parallel:.0}/s), {:.0}% of the serial one ({serial:.0}/s)",
            100.0 * rate / parallel,
            100.0 * rate / serial
        );
        println!(
            "  per-step overhead under load (includes queueing behind other runs): {}",
            thr.overhead
        );
        println!("  start to first module under load: {}", thr.first);
        Ok(())
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn bench_database_url(url: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, db)) => {
            let (name, query) = db
                .split_once('?')
                .map(|(n, q)| (n, format!("?{q}")))
                .unwrap_or((db, String::new()));
            format!("{base}/{name}_bench{query}")
        }
        None => url.to_string(),
    }
}

fn make_project(dir: &Path, steps: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("etl_sequences"))?;
    let noop = dir.join("noop.sh");
    std::fs::write(&noop, "#!/bin/sh\nexit 0\n")?;
    std::fs::set_permissions(&noop, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(dir.join("modules.json"), r#"{"noop": {"cmd": "./noop.sh"}}"#)?;
    let seq: Vec<_> = (0..steps)
        .map(|_| serde_json::json!({"module_name": "noop", "input": "", "output": "", "conf": ""}))
        .collect();
    std::fs::write(dir.join("etl_sequences/bench.json"), serde_json::to_string(&seq)?)?;
    Ok(())
}

/// Spawns and waits for the module `total` times, `parallel` at once, with
/// plain `tokio::process` (no capture, no database, no broker).
async fn bare_spawn_rate(program: &Path, parallel: usize, total: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut launched = 0;
    while launched < total || !set.is_empty() {
        while launched < total && set.len() < parallel {
            let p = program.to_path_buf();
            set.spawn(async move { tokio::process::Command::new(p).status().await });
            launched += 1;
        }
        if let Some(r) = set.join_next().await {
            anyhow::ensure!(r??.success(), "the no-op module failed");
        }
    }
    Ok(total as f64 / t0.elapsed().as_secs_f64())
}

/// Runs the module `total` times serially through the executor, as a worker
/// does, but without the database and the broker.
async fn executor_spawn_rate(dir: &Path, total: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    for _ in 0..total {
        let spec = scheduler_executor::Spec {
            argv: vec!["./noop.sh".into()],
            cwd: dir.to_path_buf(),
            env: vec![],
            timeout: None,
            kill_grace: Duration::from_secs(1),
            tail_bytes: 16 * 1024,
            log_label: "bench".into(),
            log: None,
        };
        let outcome = scheduler_executor::spawn(spec)
            .await?
            .wait(CancellationToken::new())
            .await;
        anyhow::ensure!(outcome.succeeded(), "the no-op module failed: {}", outcome.describe());
    }
    Ok(total as f64 / t0.elapsed().as_secs_f64())
}

async fn wait_all(store: &dyn Store, db: &BenchDb, ids: &[uuid::Uuid]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let unfinished = db.count_unfinished(ids).await?;
        if unfinished == 0 {
            let failed = store
                .list_runs(&RunFilter {
                    state: Some(scheduler_core::RunState::Failed),
                    limit: 1,
                    ..Default::default()
                })
                .await?;
            anyhow::ensure!(failed.is_empty(), "a bench run failed: {:?}", failed[0].error);
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{unfinished} bench runs did not finish within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Stats {
    overhead: String,
    first: String,
    module: String,
}

async fn measure(db: &BenchDb, ids: &[uuid::Uuid], steps: u32) -> anyhow::Result<Stats> {
    let rows: Vec<(f64, f64, f64)> = db
        .run_timings(ids)
        .await?
        .into_iter()
        .map(|t| (t.wall_ms, t.module_ms, t.first_ms))
        .collect();
    let mut overhead: Vec<f64> = rows.iter().map(|(w, m, _)| (w - m) / steps as f64).collect();
    let mut first: Vec<f64> = rows.iter().map(|(_, _, f)| *f).collect();
    let mut module: Vec<f64> = rows.iter().map(|(_, m, _)| m / steps as f64).collect();
    Ok(Stats {
        overhead: pcts(&mut overhead),
        first: pcts(&mut first),
        module: pcts(&mut module),
    })
}

fn pcts(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!("p50 {:.2} ms, p99 {:.2} ms (n={})", at(0.5), at(0.99), v.len())
}
