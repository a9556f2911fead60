//! What `scheduler bench` measured, as `--json` writes it.

use scheduler_bench::PgPerExecution;
use scheduler_bench::disk::DiskPerExecution;
use scheduler_bench::machine::{CpuPerExecution, Quiet};
use scheduler_bench::stats::percentile;
use serde::Serialize;

/// Everything `--json` writes.
#[derive(Debug, Serialize)]
pub struct Report {
    pub git_commit: &'static str,
    pub build: &'static str,
    pub mode: &'static str,
    /// The RabbitMQ queue type (distributed mode only).
    pub queue_type: Option<String>,
    pub cores: usize,
    pub concurrency: u16,
    pub runs: u32,
    pub steps: u32,
    pub latency_runs: u32,
    pub bare_spawn: BareSpawn,
    pub quiet_before: QuietBefore,
    pub latency: Latency,
    pub throughput: Throughput,
    pub worker: WorkerFigures,
}

#[derive(Debug, Serialize)]
pub struct BareSpawn {
    /// Spawn-and-wait of the no-op module with plain `tokio::process`, one at a time.
    pub serial_per_s: f64,
    /// The same, `parallel` at once.
    pub parallel_per_s: f64,
    pub parallel: u16,
    /// One at a time through the executor (process group, capture, cleanup).
    pub executor_serial_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct QuietBefore {
    pub bare_spawn: Quiet,
    pub latency: Quiet,
    pub throughput: Quiet,
}

/// Percentiles (nearest rank) of a set of milliseconds: p50 and p99
/// printed, p95 too in the JSON (the Celery reference records p95, not p99).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pcts {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub n: usize,
}

impl Pcts {
    pub fn of(v: &[f64]) -> Pcts {
        Pcts {
            p50_ms: percentile(v, 0.50),
            p95_ms: percentile(v, 0.95),
            p99_ms: percentile(v, 0.99),
            n: v.len(),
        }
    }
}

impl std::fmt::Display for Pcts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.n == 0 {
            return f.write_str("n/a");
        }
        write!(f, "p50 {:.2} ms, p99 {:.2} ms (n={})", self.p50_ms, self.p99_ms, self.n)
    }
}

#[derive(Debug, Serialize)]
pub struct Latency {
    /// Per step: (run wall time − the modules' own time) / steps.
    pub overhead_per_step: Pcts,
    /// Per step: run wall time / steps − one bare serial spawn, the Celery
    /// reference's "per-module overhead".
    pub over_bare_spawn_per_step: Pcts,
    /// Recorded to the first module's start.
    pub first_module: Pcts,
    /// The modules' own time (spawn to exit), per step.
    pub module_per_step: Pcts,
    /// Recorded to finished.
    pub run: Pcts,
}

#[derive(Debug, Serialize)]
pub struct Throughput {
    pub executions: u64,
    /// From just before the first start to the last run's recorded end.
    pub wall_s: f64,
    pub executions_per_s: f64,
    /// `executions_per_s` over the bare parallel and serial spawn rates.
    pub of_bare_parallel: f64,
    pub of_bare_serial: f64,
    /// Includes waiting behind the other runs.
    pub overhead_per_step: Pcts,
    pub first_module: Pcts,
    /// Whole machine, from just before the first start until every run was
    /// seen finished.
    pub cpu_per_execution: CpuPerExecution,
    /// The machine's disks over the same interval: flushes, writes (`None`:
    /// no physical disk in `/proc/diskstats`).
    pub disk_per_execution: Option<DiskPerExecution>,
    /// PostgreSQL's write transactions and log (distributed mode).
    pub postgres_per_execution: Option<PgPerExecution>,
}

#[derive(Debug, Serialize)]
pub struct WorkerFigures {
    pub concurrency: u16,
    /// VmHWM of the worker plus its keeper.
    pub peak_rss_kib: u64,
    pub worker_peak_rss_kib: u64,
    pub keeper_peak_rss_kib: u64,
    /// PSS of the worker plus its keeper after the throughput phase.
    pub pss_kib: u64,
}
