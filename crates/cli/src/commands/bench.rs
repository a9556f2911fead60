//! `scheduler bench`: pushes runs of no-op modules through the real path of
//! the mode it is given (PostgreSQL and RabbitMQ with confirms, or the
//! embedded store and its queue; process spawning either way) and prints
//! throughput, overhead, CPU per module execution and the worker's peak
//! memory beside the bare cost of spawning the same module, measured in the
//! same run.
//!
//! The worker is a real `scheduler worker -c N` process (this very
//! program), with its keeper, on a throw-away queue, as users run it; this
//! process plays `scheduler start` and reads the results from the store.
//! It uses its own database (`<db>_bench`), or its own SQLite file in a
//! temporary project, so it never mixes with real runs. Before each phase
//! it waits (a minute at most) for the machine to be quiet, and says so when
//! it was not. The definitions (CPU by process group, percentiles, the
//! quiet wait) are the Celery reference benchmark's, so the figures compare:
//! see `scripts/bench-vs-celery`.

mod phases;
mod report;
mod spawn;

use crate::cli::Global;
use crate::mode::Mode;
use anyhow::Context;
use clap::Args;
use phases::Bench;
use report::{BareSpawn, QuietBefore, Report, WorkerFigures};
use scheduler_bench::BenchDb;
use scheduler_bench::machine::{self, Quiet, QuietRule};
use scheduler_bench::worker::{WorkerProcess, WorkerSpec};
use scheduler_broker::{Broker, BrokerConfig, Transport};
use scheduler_producer::Project;
use scheduler_tracker::{Embedded, EmbeddedConfig, EmbeddedQueue, Store, Tracker, TrackerConfig};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Runs pushed at once in the throughput phase.
    #[arg(long, default_value_t = 300)]
    pub runs: u32,
    /// Steps (no-op modules) per run.
    #[arg(long, default_value_t = 5)]
    pub steps: u32,
    /// Worker slots (modules at once): the worker runs as `scheduler worker -c N`.
    #[arg(short = 'c', long, default_value_t = 4)]
    pub concurrency: u16,
    /// The worker's `--extra-runs` (default: the worker's own, the
    /// concurrency).
    #[arg(long)]
    pub extra_runs: Option<u16>,
    /// Runs executed one at a time in the latency phase.
    #[arg(long, default_value_t = 100)]
    pub latency_runs: u32,
    /// Before each phase, wait at most this many seconds for the machine to
    /// be quiet (3 seconds in a row under 10 % busy); then measure anyway.
    #[arg(long, default_value_t = 60)]
    pub quiet_wait: u64,
    /// Also write every figure to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The queues' `x-expires`: the throw-away queue vanishes a minute after
/// its last consumer, whatever happens to this process.
const QUEUE_EXPIRES_MS: u32 = 60_000;

pub async fn bench(g: &Global, a: &BenchArgs) -> anyhow::Result<ExitCode> {
    if a.runs == 0 || a.steps == 0 || a.concurrency == 0 {
        anyhow::bail!("--runs, --steps and --concurrency must be at least 1");
    }
    let mode = Mode::of(g)?;
    let (mut int, mut term, mut hup) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
        signal(SignalKind::hangup())?,
    );
    let dir = std::env::temp_dir().join(format!("scheduler-bench-{}", std::process::id()));
    make_project(&dir, a.steps)?;
    // A signal drops the bench where it is: its worker process with it
    // (killed on drop; its keeper then stops a module still running), so
    // the worker never outlives the bench on its queue.
    let outcome = tokio::select! {
        outcome = run(g, a, &mode, &dir) => outcome,
        _ = int.recv() => Err(stopped("SIGINT")),
        _ = term.recv() => Err(stopped("SIGTERM")),
        _ = hup.recv() => Err(stopped("SIGHUP")),
    };
    match outcome {
        Ok(report) => {
            std::fs::remove_dir_all(&dir).ok();
            if let Some(path) = &a.json {
                let text = serde_json::to_string_pretty(&report)?;
                std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
                println!("\nfigures written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "kept {} (the bench's project, its worker's log in worker.log)",
                dir.display()
            );
            Err(e)
        }
    }
}

fn stopped(signal: &str) -> anyhow::Error {
    anyhow::anyhow!("stopped by {signal}; the bench's worker was stopped too")
}

async fn run(g: &Global, a: &BenchArgs, mode: &Mode, dir: &Path) -> anyhow::Result<Report> {
    let project = Project::new(dir)?;
    println!(
        "scheduler bench: {} runs x {} no-op steps, concurrency {}, on {} cores ({} build, {})",
        a.runs,
        a.steps,
        a.concurrency,
        cores(),
        build(),
        env!("SCHEDULER_GIT_COMMIT")
    );
    let quiet_spawn = quiet_before(a, "the bare spawns").await?;
    let noop = dir.join("noop.sh");
    let serial = spawn::bare_spawn_rate(&noop, 1, 400).await?;
    let parallel = spawn::bare_spawn_rate(&noop, a.concurrency as usize, 800).await?;
    println!(
        "bare spawn of the no-op module: {serial:.0}/s serially, {parallel:.0}/s with {} at once",
        a.concurrency
    );
    let captured = spawn::executor_spawn_rate(dir, 400).await?;
    println!("the same through the executor (process group, output capture, cleanup): {captured:.0}/s serially");

    let queue = format!("bench-{}", uuid::Uuid::now_v7());
    let opened = open(g, a, mode, dir, &queue).await?;
    println!("{}", opened.describe);
    let spec = WorkerSpec {
        program: std::env::current_exe().context("finding this program's path, to run its worker")?,
        project: dir.to_path_buf(),
        args: opened.worker_args,
        env: opened.worker_env,
        log: dir.join("worker.log"),
    };
    let worker = WorkerProcess::start(&spec).await?;
    println!(
        "worker: `scheduler worker -c {}{}`, pid {} (keeper {}), log {}",
        a.concurrency,
        a.extra_runs.map_or_else(String::new, |e| format!(" --extra-runs {e}")),
        worker.pid(),
        worker
            .keeper_pid()
            .map_or_else(|| "none".to_string(), |k| k.to_string()),
        worker.log().display()
    );
    let bench = Bench {
        project,
        store: opened.store,
        transport: opened.transport,
        queue: queue.clone(),
        steps: a.steps,
        pg: opened.pg,
    };
    let phases = bench.phases(a, &worker, serial, parallel).await;
    // Whatever happened: the worker drains and ends before we go.
    let log = worker.log().to_path_buf();
    let stopped = worker.stop().await;
    if let Some(broker) = opened.broker {
        broker.delete_queue(&queue).await.ok();
        broker.close().await;
    }
    bench.store.close().await;
    if let Some(pg) = &bench.pg {
        pg.close().await;
    }
    let (latency, throughput, rss) = phases.with_context(|| format!("the worker's log: {}", log.display()))?;
    stopped?;
    Ok(Report {
        git_commit: env!("SCHEDULER_GIT_COMMIT"),
        build: build(),
        mode: match mode {
            Mode::Embedded { .. } => "embedded",
            Mode::Distributed { .. } => "distributed",
        },
        queue_type: matches!(mode, Mode::Distributed { .. }).then(|| g.queue_type.to_string()),
        cores: cores(),
        concurrency: a.concurrency,
        runs: a.runs,
        steps: a.steps,
        latency_runs: a.latency_runs,
        bare_spawn: BareSpawn {
            serial_per_s: serial,
            parallel_per_s: parallel,
            parallel: a.concurrency,
            executor_serial_per_s: captured,
        },
        quiet_before: QuietBefore {
            bare_spawn: quiet_spawn,
            latency: latency.0,
            throughput: throughput.0,
        },
        latency: latency.1,
        throughput: throughput.1,
        worker: WorkerFigures {
            concurrency: a.concurrency,
            peak_rss_kib: rss.total_kib(),
            worker_peak_rss_kib: rss.worker_kib,
            keeper_peak_rss_kib: rss.keeper_kib,
            pss_kib: rss.pss_kib,
        },
    })
}

/// The store and transport this process uses, and what the worker process
/// needs to reach the same ones.
struct Opened {
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    broker: Option<Broker>,
    /// The bench's own database (distributed mode), for PostgreSQL's write counters.
    pg: Option<BenchDb>,
    worker_args: Vec<OsString>,
    worker_env: Vec<(OsString, OsString)>,
    /// Where the runs go, for the output.
    describe: String,
}

async fn open(g: &Global, a: &BenchArgs, mode: &Mode, dir: &Path, queue: &str) -> anyhow::Result<Opened> {
    let mut worker_args: Vec<OsString> = vec![
        "-c".into(),
        a.concurrency.to_string().into(),
        "--queue".into(),
        queue.into(),
    ];
    if let Some(extra) = a.extra_runs {
        worker_args.extend(["--extra-runs".into(), extra.to_string().into()]);
    }
    Ok(match mode {
        Mode::Embedded { .. } => {
            // Its own file, beside the bench's project: never the project's store.
            let path = dir.join(".scheduler").join("bench.db");
            let mut config = EmbeddedConfig::new(&path);
            config.max_connections = a.concurrency as u32 + 6;
            let store = Embedded::open(&config)
                .await
                .context("opening the bench's embedded store")?;
            let queue = EmbeddedQueue::new(&store);
            Opened {
                store: Arc::new(store),
                transport: Arc::new(queue),
                broker: None,
                pg: None,
                worker_args,
                worker_env: vec![("DATABASE_URL".into(), format!("sqlite://{}", path.display()).into())],
                // Not the project's store (what `mode.describe()` names): its own file.
                describe: format!(
                    "embedded mode: store and queue in {} (the bench's own; no PostgreSQL or RabbitMQ)",
                    path.display()
                ),
            }
        }
        Mode::Distributed { database_url, amqp_url } => {
            let mut db = TrackerConfig::new(bench_database_url(database_url));
            db.max_connections = a.concurrency as u32 + 6;
            let tracker = Tracker::open(&db).await.context("opening the bench database")?;
            let bench_db = BenchDb::connect(&db.url).await?;
            bench_db.erase_everything().await?;
            let broker = Broker::connect(
                &BrokerConfig {
                    url: amqp_url.clone(),
                    queue_expires_ms: Some(QUEUE_EXPIRES_MS),
                    queue_type: g.queue_type,
                    delivery_limit: g.delivery_limit,
                },
                "scheduler bench",
            )
            .await?;
            // The worker declares the queue as this process does, or
            // RabbitMQ refuses the second declaration.
            worker_args.extend(
                [
                    "--queue-type".to_string(),
                    g.queue_type.to_string(),
                    "--delivery-limit".to_string(),
                    g.delivery_limit.to_string(),
                    "--queue-expires-ms".to_string(),
                    QUEUE_EXPIRES_MS.to_string(),
                ]
                .map(OsString::from),
            );
            Opened {
                store: Arc::new(tracker),
                transport: Arc::new(broker.clone()),
                broker: Some(broker),
                pg: Some(bench_db),
                worker_args,
                worker_env: vec![
                    ("DATABASE_URL".into(), db.url.clone().into()),
                    ("AMQP_URL".into(), amqp_url.into()),
                ],
                describe: format!(
                    "distributed mode: PostgreSQL at {} (the bench's own database), RabbitMQ at {}, {} queue {queue}",
                    scheduler_core::redact_url(&db.url),
                    scheduler_core::redact_url(amqp_url),
                    g.queue_type
                ),
            }
        }
    })
}

/// Waits for a quiet machine before `what`, and says how that went.
pub(super) async fn quiet_before(a: &BenchArgs, what: &str) -> anyhow::Result<Quiet> {
    let rule = QuietRule {
        max_wait: std::time::Duration::from_secs(a.quiet_wait),
        ..QuietRule::default()
    };
    let q = machine::wait_quiet(rule).await?;
    if q.quiet {
        println!("(machine quiet before {what}: waited {:.0} s)", q.waited_s);
    } else {
        println!(
            "machine NOT quiet before {what} after {:.0} s (last second {:.0}% busy{}); measuring anyway, \
             so these figures carry that load",
            q.waited_s,
            100.0 * q.last_busy,
            if q.busy_processes.is_empty() {
                String::new()
            } else {
                format!(": {}", q.busy_processes.join(", "))
            }
        );
    }
    Ok(q)
}

pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn build() -> &'static str {
    if cfg!(debug_assertions) { "debug" } else { "release" }
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
