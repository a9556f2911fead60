//! `scheduler bench-flood` (hidden): what capturing a flood of output costs
//! the module; the measuring is `scheduler_bench::flood`, this prints it.

use crate::cli::Global;
use anyhow::Context;
use scheduler_bench::flood::{self, BenchFloodArgs, TARGET_RATIO};
use std::process::ExitCode;

pub async fn bench_flood(g: &Global, reps: u32, bytes: u64, database_url: String) -> anyhow::Result<ExitCode> {
    let args = BenchFloodArgs {
        reps,
        bytes,
        database_url,
        amqp_url: g
            .amqp_url
            .clone()
            .unwrap_or_else(|| crate::mode::DEFAULT_AMQP_URL.into()),
        program: std::env::current_exe().context("finding this program's path, to run its worker")?,
    };
    println!(
        "scheduler bench-flood: a module printing {bytes} bytes as fast as it can, {reps} times under a worker \
         and {reps} times to /dev/null, alternately, on {} cores{}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        if cfg!(debug_assertions) {
            " (a debug build: the target is for a release build)"
        } else {
            ""
        }
    );
    let f = flood::bench(args).await?;
    let ms = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" ");
    println!("under the worker, ms: {}", ms(&f.under_worker_ms));
    println!("to /dev/null, ms:     {}", ms(&f.to_null_ms));
    let ratio = f.ratio();
    println!(
        "median {:.0} ms under the worker, {:.0} ms to /dev/null: ratio {ratio:.2} (target at most {TARGET_RATIO:.2}: {}); \
         worker peak RSS {} MiB",
        flood::median(&f.under_worker_ms),
        flood::median(&f.to_null_ms),
        if ratio <= TARGET_RATIO { "met" } else { "MISSED" },
        f.worker_peak_kib / 1024
    );
    Ok(ExitCode::SUCCESS)
}
