//! `scheduler bench`: pushes runs of no-op modules through the real path of
//! the mode it is given (PostgreSQL and RabbitMQ with confirms, or the
//! embedded store and its queue; process spawning either way) and prints
//! throughput and overhead beside the bare cost of spawning the same module,
//! measured in the same run. It uses its own database (`<db>_bench`), or its
//! own SQLite file in a temporary directory, and a throw-away queue, so it
//! never mixes with real runs.

use crate::cli::Global;
use anyhow::Context;
use clap::Args;
use scheduler_bench::BenchDb;
use scheduler_broker::{Broker, BrokerConfig, Transport};
use scheduler_producer::{Project, start_run};
use scheduler_tracker::{Embedded, EmbeddedConfig, EmbeddedQueue, RunFilter, Store, Tracker, TrackerConfig};
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

    let mode = crate::mode::Mode::of(g)?;
    println!("{}", mode.describe());
    let queue = format!("bench-{}", uuid::Uuid::now_v7());
    let (tracker, transport, broker): (Arc<dyn Store>, Arc<dyn Transport>, Option<Broker>) = match &mode {
        crate::mode::Mode::Embedded { .. } => {
            // Its own file, beside the bench's project: never the project's store.
            let mut config = EmbeddedConfig::new(dir.join(".scheduler").join("bench.db"));
            config.max_connections = a.concurrency as u32 + 6;
            let store = Embedded::open(&config)
                .await
                .context("opening the bench's embedded store")?;
            let queue = EmbeddedQueue::new(&store);
            (Arc::new(store), Arc::new(queue), None)
        }
        crate::mode::Mode::Distributed { database_url, amqp_url } => {
            let mut db = TrackerConfig::new(bench_database_url(database_url));
            db.max_connections = a.concurrency as u32 + 6;
            let tracker = Tracker::open(&db).await.context("opening the bench database")?;
            let bench_db = BenchDb::connect(&db.url).await?;
            bench_db.erase_everything().await?;
            bench_db.close().await;
            let broker = Broker::connect(
                &BrokerConfig {
                    url: amqp_url.clone(),
                    queue_expires_ms: Some(60_000),
                    queue_type: g.queue_type,
                    delivery_limit: g.delivery_limit,
                },
                "scheduler bench",
            )
            .await?;
            (Arc::new(tracker), Arc::new(broker.clone()), Some(broker))
        }
    };
    let shutdown = CancellationToken::new();
    let config = WorkerConfig {
        concurrency: a.concurrency,
        queues: vec![queue.clone()],
        ..WorkerConfig::default()
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
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
        queue: queue.clone(),
        steps: a.steps,
    };
    bench.latency(a.latency_runs).await?;
    bench.throughput(a.runs, serial, parallel).await?;

    shutdown.cancel();
    worker.await??;
    if let Some(broker) = broker {
        broker.delete_queue(&queue).await.ok();
        broker.close().await;
    }
    bench.store.close().await;
    std::fs::remove_dir_all(&dir).ok();
    Ok(ExitCode::SUCCESS)
}

/// What both phases run against.
struct Bench {
    project: Project,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
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
            wait_all(&*self.store, &[id]).await?;
            ids.push(id);
        }
        let lat = measure(&*self.store, &ids, self.steps).await?;
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
        wait_all(&*self.store, &ids).await?;
        let elapsed = t0.elapsed();
        let executions = (runs * self.steps) as f64;
        let rate = executions / elapsed.as_secs_f64();
        let thr = measure(&*self.store, &ids, self.steps).await?;
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

/// Waits until every run of `ids` is final (read through the store, as
/// `scheduler runs` does; one query every 20 ms).
async fn wait_all(store: &dyn Store, ids: &[uuid::Uuid]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let wanted: std::collections::HashSet<uuid::Uuid> = ids.iter().copied().collect();
    loop {
        let newest = store
            .list_runs(&RunFilter {
                sequence: Some("bench".into()),
                limit: u32::try_from(ids.len()).unwrap_or(u32::MAX).max(1),
                ..Default::default()
            })
            .await?;
        let mine: Vec<_> = newest.iter().filter(|r| wanted.contains(&r.id)).collect();
        if let Some(failed) = mine.iter().find(|r| r.state == "failed") {
            anyhow::bail!("a bench run failed: {:?}", failed.error);
        }
        let finished = mine.iter().filter(|r| r.state == "succeeded").count();
        if finished == ids.len() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} bench runs did not finish within 10 minutes",
            ids.len() - finished
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Stats {
    overhead: String,
    first: String,
    module: String,
}

/// Per run: wall time (recorded to finished), the modules' own time, and
/// recorded to the first module's start, in ms, from the store's record.
async fn measure(store: &dyn Store, ids: &[uuid::Uuid], steps: u32) -> anyhow::Result<Stats> {
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(detail) = store.run_detail(*id).await? else {
            continue;
        };
        let Some(finished) = detail.run.finished_at else {
            continue;
        };
        let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
        let wall = ms(finished - detail.run.created_at);
        let module: f64 = detail
            .executions
            .iter()
            .map(|e| {
                e.wall_us
                    .map(|us| us as f64 / 1000.0)
                    .or(e.duration_ms.map(|d| d as f64))
                    .unwrap_or(0.0)
            })
            .sum();
        let first = detail
            .executions
            .iter()
            .filter_map(|e| e.started_at)
            .min()
            .map(|s| ms(s - detail.run.created_at))
            .unwrap_or(0.0);
        rows.push((wall, module, first));
    }
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
