//! The bare cost of spawning the no-op module, the yardstick `scheduler
//! bench` prints every figure beside.

use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Spawns and waits for the module `total` times, `parallel` at once, with
/// plain `tokio::process` (no capture, no database, no broker).
pub(super) async fn bare_spawn_rate(program: &Path, parallel: usize, total: usize) -> anyhow::Result<f64> {
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
pub(super) async fn executor_spawn_rate(dir: &Path, total: usize) -> anyhow::Result<f64> {
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
