//! The measured part of `scheduler bench`: the warm-up, the latency phase
//! (runs one at a time), the throughput phase (every run started at once,
//! the machine's CPU split by process group over it) and the worker's peak
//! memory; the runs' figures are read back from the store's record.

use super::report::{Latency, Pcts, Throughput};
use super::{BenchArgs, cores, quiet_before};
use scheduler_bench::BenchDb;
use scheduler_bench::disk::{self, DiskIo};
use scheduler_bench::machine::{self, Quiet, Sample};
use scheduler_bench::worker::{PeakRss, WorkerProcess};
use scheduler_broker::Transport;
use scheduler_core::state::RunState;
use scheduler_producer::{Project, start_run};
use scheduler_tracker::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What both phases run against.
pub(super) struct Bench {
    pub project: Project,
    pub store: Arc<dyn Store>,
    pub transport: Arc<dyn Transport>,
    pub queue: String,
    pub steps: u32,
    /// The bench's own database (distributed mode): PostgreSQL's write
    /// transactions and log bytes over the throughput phase.
    pub pg: Option<BenchDb>,
}

impl Bench {
    /// Warm-up, latency phase, throughput phase, then the worker's peak
    /// memory (read while it still runs).
    pub async fn phases(
        &self,
        a: &BenchArgs,
        worker: &WorkerProcess,
        serial: f64,
        parallel: f64,
    ) -> anyhow::Result<((Quiet, Latency), (Quiet, Throughput), PeakRss)> {
        // As the Celery reference does: the first runs open connections and
        // fill caches; not measured.
        let warm = 2 * a.concurrency as u32;
        let ids = self.start_at_once(warm).await?;
        wait_all(&*self.store, &ids, Duration::from_millis(20)).await?;
        println!("warm-up: {warm} runs (not measured)");

        let quiet = quiet_before(a, "the latency phase").await?;
        let latency = self.latency(a.latency_runs, serial).await?;
        let quiet_thr = quiet_before(a, "the throughput phase").await?;
        let throughput = self.throughput(a.runs, serial, parallel, worker.pid()).await?;
        let rss = worker.peak_rss()?;
        println!(
            "\nworker peak RSS: {:.1} MiB, keeper included (worker {:.1} + keeper {:.1}), at concurrency {}",
            rss.total_kib() as f64 / 1024.0,
            rss.worker_kib as f64 / 1024.0,
            rss.keeper_kib as f64 / 1024.0,
            a.concurrency
        );
        println!(
            "worker and keeper together, shared pages counted once (PSS, after the throughput phase): {:.1} MiB",
            rss.pss_kib as f64 / 1024.0
        );
        Ok(((quiet, latency), (quiet_thr, throughput), rss))
    }

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

    /// `runs` started concurrently; their ids in the order their starts returned.
    async fn start_at_once(&self, runs: u32) -> anyhow::Result<Vec<uuid::Uuid>> {
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
        Ok(ids)
    }

    /// One run at a time, nothing queued behind it.
    async fn latency(&self, runs: u32, serial: f64) -> anyhow::Result<Latency> {
        let mut ids = Vec::new();
        for _ in 0..runs {
            let id = self.start().await?;
            wait_all(&*self.store, &[id], Duration::from_millis(20)).await?;
            ids.push(id);
        }
        let m = measure(&*self.store, &ids, self.steps).await?;
        let bare_ms = 1000.0 / serial;
        let lat = Latency {
            overhead_per_step: Pcts::of(&m.overhead),
            over_bare_spawn_per_step: Pcts::of(
                &m.wall
                    .iter()
                    .map(|w| w / self.steps as f64 - bare_ms)
                    .collect::<Vec<_>>(),
            ),
            first_module: Pcts::of(&m.first),
            module_per_step: Pcts::of(&m.module),
            run: Pcts::of(&m.wall),
        };
        println!("\nlatency phase: {runs} runs one after another");
        println!(
            "  per-step dispatch overhead (run wall time minus module time, per step): {}",
            lat.overhead_per_step
        );
        println!(
            "  per step over a bare serial spawn ({bare_ms:.2} ms; run wall time / steps minus that, \
             the Celery reference's overhead): {}",
            lat.over_bare_spawn_per_step
        );
        println!("  start to first module: {}", lat.first_module);
        println!(
            "  module time itself (spawn to exit, per step): {}",
            lat.module_per_step
        );
        Ok(lat)
    }

    /// PostgreSQL's write counters now (distributed mode).
    async fn pg_counters(&self) -> anyhow::Result<Option<scheduler_bench::PgCounters>> {
        Ok(match &self.pg {
            Some(db) => Some(db.write_counters().await?),
            None => None,
        })
    }

    /// Every run started at once.
    async fn throughput(&self, runs: u32, serial: f64, parallel: f64, worker: u32) -> anyhow::Result<Throughput> {
        let ticks = machine::clk_tck();
        let before = Sample::take(worker)?;
        let disk_before = DiskIo::read();
        let pg_before = self.pg_counters().await?;
        let t0 = chrono::Utc::now();
        let clock = Instant::now();
        let ids = self.start_at_once(runs).await?;
        wait_all(&*self.store, &ids, Duration::from_millis(50)).await?;
        let after = Sample::take(worker)?;
        let disk_after = DiskIo::read();
        let pg_after = self.pg_counters().await?;
        let seen = clock.elapsed().as_secs_f64();
        let executions = u64::from(runs) * u64::from(self.steps);
        let disk = disk_before
            .zip(disk_after)
            .map(|(b, a)| disk::per_execution(b, a, executions));
        let postgres = pg_before.zip(pg_after).map(|(b, a)| b.per_execution(a, executions));
        let m = measure(&*self.store, &ids, self.steps).await?;
        // The last recorded end, as the Celery reference counts; what we
        // saw by polling if the clocks disagree.
        let wall_s = m
            .last_finished
            .map(|t| (t - t0).num_microseconds().unwrap_or(0) as f64 / 1e6)
            .filter(|s| *s > 0.0)
            .unwrap_or(seen);
        let rate = executions as f64 / wall_s;
        let cpu = machine::per_execution(&before, &after, executions, ticks);
        let thr = Throughput {
            executions,
            wall_s,
            executions_per_s: rate,
            of_bare_parallel: rate / parallel,
            of_bare_serial: rate / serial,
            overhead_per_step: Pcts::of(&m.overhead),
            first_module: Pcts::of(&m.first),
            cpu_per_execution: cpu,
            disk_per_execution: disk,
            postgres_per_execution: postgres,
        };
        println!("\nthroughput phase: {runs} runs started at once");
        println!("  {executions} module executions in {wall_s:.2}s = {rate:.0} executions/s");
        println!(
            "  = {:.0}% of the bare parallel spawn rate ({parallel:.0}/s), {:.0}% of the serial one ({serial:.0}/s)",
            100.0 * thr.of_bare_parallel,
            100.0 * thr.of_bare_serial
        );
        println!(
            "  per-step overhead under load (includes queueing behind other runs): {}",
            thr.overhead_per_step
        );
        println!("  start to first module under load: {}", thr.first_module);
        println!(
            "  machine CPU per module execution: {:.2} ms (all {} CPUs {:.0}% busy): worker {:.2} (keeper and modules \
             included), PostgreSQL {:.2}, RabbitMQ {:.2}, this bench (starting runs, polling) {:.2}, rest (kernel, \
             other) {:.2}",
            cpu.machine_ms,
            cores(),
            100.0 * cpu.machine_busy,
            cpu.worker_ms,
            cpu.postgres_ms,
            cpu.rabbitmq_ms,
            cpu.bench_ms,
            cpu.rest_ms
        );
        println!(
            "  the worker process alone (its threads, without keeper and modules): {:.2} CPU-ms and {:.1} + {:.1} \
             context switches (voluntary + preempted) per module execution",
            cpu.worker_own_ms, cpu.worker_switches_voluntary, cpu.worker_switches_involuntary
        );
        println!(
            "  the modules themselves (what the worker reaped, exec included): {:.2} CPU-ms per execution; \
             the machine's CPU without them, what dispatching cost: {:.2} ms",
            cpu.modules_ms, cpu.dispatch_ms
        );
        match disk {
            Some(disk) => println!(
                "  the disks (whole machine, /proc/diskstats), per module execution: {} cache flushes (fsyncs that \
                 reached a disk), {:.1} write requests, {:.1} KiB written",
                disk.flushes
                    .map_or_else(|| "n/a (kernel before 5.5)".to_string(), |f| format!("{f:.2}")),
                disk.write_requests,
                disk.written_kib
            ),
            None => println!("  the disks: n/a (/proc/diskstats names no physical disk here)"),
        }
        if let Some(pg) = postgres {
            println!(
                "  PostgreSQL, per module execution: {:.2} write transactions (each its own commit), {:.2} KiB of WAL",
                pg.write_transactions, pg.wal_kib
            );
        }
        if cpu.unexplained_share >= 0.10 {
            println!(
                "  ({:.0}% of the machine went to none of these: something else ran meanwhile)",
                100.0 * cpu.unexplained_share
            );
        }
        Ok(thr)
    }
}

/// Waits until every run of `ids` succeeded, reading one run at a time in
/// order through the store (the runs end about in the order they started,
/// so this is about one query per run plus one per `poll`); a run that
/// failed is an error.
async fn wait_all(store: &dyn Store, ids: &[uuid::Uuid], poll: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut done = 0;
    while done < ids.len() {
        match store.run_view(ids[done]).await? {
            Some(v) if v.state == RunState::Succeeded => {
                done += 1;
                continue;
            }
            Some(v) if v.state.is_final() => {
                let error = store.run_detail(ids[done]).await?.and_then(|d| d.run.error);
                anyhow::bail!("a bench run ended {}: {error:?}", v.state.as_str());
            }
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} bench runs did not finish within 10 minutes",
            ids.len() - done
        );
        tokio::time::sleep(poll).await;
    }
    Ok(())
}

/// Per run, in ms, from the store's record.
struct Measured {
    /// Recorded to finished.
    wall: Vec<f64>,
    /// (wall − the modules' own time) / steps.
    overhead: Vec<f64>,
    /// Recorded to the first module's start.
    first: Vec<f64>,
    /// The modules' own time / steps.
    module: Vec<f64>,
    last_finished: Option<chrono::DateTime<chrono::Utc>>,
}

async fn measure(store: &dyn Store, ids: &[uuid::Uuid], steps: u32) -> anyhow::Result<Measured> {
    let mut m = Measured {
        wall: Vec::new(),
        overhead: Vec::new(),
        first: Vec::new(),
        module: Vec::new(),
        last_finished: None,
    };
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
        m.wall.push(wall);
        m.overhead.push((wall - module) / steps as f64);
        m.first.push(first);
        m.module.push(module / steps as f64);
        m.last_finished = m.last_finished.max(Some(finished));
    }
    Ok(m)
}
