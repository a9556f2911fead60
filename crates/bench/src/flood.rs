//! `scheduler bench-flood`: what capturing a module's output costs the
//! module. A module prints 50 MB as fast as it can (`yes | head -c`, 4 KiB
//! writes); it runs alternately under a real worker (`scheduler worker`, a
//! process of its own, shipping the log to the database) and straight to
//! `/dev/null`, `--reps` times each, so both see the same machine load. It
//! prints both medians, their ratio, and the worker's peak RSS.
//!
//! The target (issue 15): under the worker within 10 % of `/dev/null`, on a
//! release build. The time under the worker is the execution's own
//! `duration_ms` (the worker's spawn to the module's exit); the time to
//! `/dev/null` is taken the same way around a plain spawn and wait. Each
//! repetition waits for the previous log to be written completely, so the
//! database's work for one does not land in the next.

use anyhow::{Context, bail};
use scheduler_broker::{Broker, BrokerConfig, Transport};
use scheduler_producer::{Project, start_run};
use scheduler_tracker::{Store, Tracker, TrackerConfig};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub use crate::machine::peak_rss_kib;
pub use crate::stats::median;

/// The benchmark's own database.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/scheduler_flood_bench";

/// The promise, on a release build: the module is slowed by at most this.
pub const TARGET_RATIO: f64 = 1.10;

#[derive(Debug, Clone)]
pub struct BenchFloodArgs {
    /// Runs of the flood under the worker, and as many to `/dev/null`.
    pub reps: u32,
    /// Bytes the module prints.
    pub bytes: u64,
    /// The benchmark's own database; its name must contain `bench`.
    pub database_url: String,
    pub amqp_url: String,
    /// The `scheduler` program, to run its worker.
    pub program: PathBuf,
}

/// What one sitting measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub under_worker_ms: Vec<f64>,
    pub to_null_ms: Vec<f64>,
    /// The worker's peak resident set (`VmHWM`), KiB.
    pub worker_peak_kib: u64,
}

impl Figures {
    pub fn ratio(&self) -> f64 {
        median(&self.under_worker_ms) / median(&self.to_null_ms)
    }
}

pub async fn bench(args: BenchFloodArgs) -> anyhow::Result<Figures> {
    let db_name = args
        .database_url
        .split('?')
        .next()
        .and_then(|u| u.rsplit('/').next())
        .unwrap_or("");
    if !db_name.contains("bench") {
        bail!(
            "refusing to use database {db_name:?}: the benchmark only uses a database of its own whose name \
             contains \"bench\" (default: {DEFAULT_DATABASE_URL})"
        );
    }
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let tracker = Tracker::open(&TrackerConfig::new(&args.database_url)).await?;
    let project = std::env::temp_dir().join(format!("scheduler-bench-flood-{}", Uuid::now_v7().simple()));
    make_project(&project, args.bytes)?;
    let queue = format!("bench-flood-{}", Uuid::now_v7());
    let broker = Broker::connect(
        &BrokerConfig {
            url: args.amqp_url.clone(),
            queue_expires_ms: Some(600_000),
            // The type the worker it starts declares by default.
            queue_type: scheduler_broker::QueueType::Quorum,
            delivery_limit: scheduler_broker::DEFAULT_DELIVERY_LIMIT,
        },
        "scheduler bench-flood",
    )
    .await?;
    let mut worker = spawn_worker(&args, &project, &queue).await?;
    let result = alternate(&args, &tracker, &broker, &project, &queue, worker.id().unwrap_or(0)).await;
    // SIGTERM: the worker drains (nothing is running by now) and exits.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().unwrap_or(0).to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
    let _ = worker.start_kill();
    broker.delete_queue(&queue).await.ok();
    broker.close().await;
    tracker.close().await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&project);
    } else {
        eprintln!("kept {} (the worker's log)", project.display());
    }
    result
}

/// The flood module: a line, `bytes` of 27-byte lines, a line.
fn flood_script(bytes: u64) -> String {
    format!("#!/bin/sh\necho first line\nyes 'abcdefghijklmnopqrstuvwxyz' | head -c {bytes}\necho last line\n")
}

fn make_project(dir: &Path, bytes: u64) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("etl_sequences")).context("creating the bench project")?;
    std::fs::write(dir.join("flood.sh"), flood_script(bytes))?;
    std::fs::set_permissions(dir.join("flood.sh"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(dir.join("modules.json"), r#"{"flood": {"cmd": "./flood.sh"}}"#)?;
    std::fs::write(dir.join("etl_sequences/flood.json"), r#"[{"module_name": "flood"}]"#)?;
    Ok(())
}

/// `scheduler worker` on the bench's queue, module output kept out of its
/// own log (the 50 MB would go there too); returns once it consumes.
async fn spawn_worker(args: &BenchFloodArgs, project: &Path, queue: &str) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::File::create(project.join("worker.log"))?;
    let child = tokio::process::Command::new(&args.program)
        .args(["worker", "-c", "1"])
        .env("DATABASE_URL", &args.database_url)
        .env("AMQP_URL", &args.amqp_url)
        .env("SCHEDULER_QUEUE", queue)
        .env("SCHEDULER_PROJECT", project)
        .env("SCHEDULER_QUEUE_EXPIRES_MS", "600000")
        .env("RUST_LOG", "info,module_output=off")
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

async fn alternate(
    args: &BenchFloodArgs,
    tracker: &Tracker,
    broker: &Broker,
    project: &Path,
    queue: &str,
    worker_pid: u32,
) -> anyhow::Result<Figures> {
    let project_def = Project::new(project)?;
    let transport: &dyn Transport = broker;
    let mut figures = Figures {
        under_worker_ms: Vec::new(),
        to_null_ms: Vec::new(),
        worker_peak_kib: 0,
    };
    for _ in 0..args.reps {
        figures
            .under_worker_ms
            .push(under_worker(args, tracker, transport, &project_def, queue).await?);
        figures.to_null_ms.push(to_null(&project.join("flood.sh")).await?);
    }
    figures.worker_peak_kib = peak_rss_kib(worker_pid)?;
    Ok(figures)
}

/// One run of the flood under the worker: its execution's duration, once
/// its log is completely written.
async fn under_worker(
    args: &BenchFloodArgs,
    store: &dyn Store,
    transport: &dyn Transport,
    project: &Project,
    queue: &str,
) -> anyhow::Result<f64> {
    let run = start_run(project, store, transport, "flood", queue, "bench")
        .await?
        .run_id;
    let expected = args.bytes as i64 + "first line\n".len() as i64 + "last line\n".len() as i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let detail = store.run_detail(run).await?.context("the bench's run vanished")?;
        let state = detail.run.state.as_str();
        if ["failed", "canceled", "skipped"].contains(&state) {
            bail!("the flood run ended {state}: {:?}", detail.run.error);
        }
        if state == "succeeded"
            && let Some(e) = detail.executions.first()
            && let Some(log) = store.log_states(run).await?.first()
            && let Some(bytes) = log.log_bytes
        {
            if bytes != expected {
                bail!("the flood's log counts {bytes} bytes, not {expected}");
            }
            return e
                .duration_ms
                .map(|ms| ms as f64)
                .context("the execution has no duration");
        }
        if Instant::now() > deadline {
            bail!("the flood run and its log did not complete within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One run of the flood straight to `/dev/null`: spawn to exit, as the
/// worker counts it.
async fn to_null(program: &Path) -> anyhow::Result<f64> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().context("running the flood to /dev/null")?;
    let t = Instant::now();
    let status = child.wait().await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !status.success() {
        bail!("the flood to /dev/null failed ({status})");
    }
    Ok(ms)
}
