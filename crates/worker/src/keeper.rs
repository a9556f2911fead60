//! Minding the keeper (`scheduler_executor::keeper`): the process beside the
//! worker that stops its modules the moment the worker dies, however it
//! dies. Started before the worker consumes anything; restarted if it ever
//! ends while the worker lives; let go (pipe closed) when the worker stops.

use crate::worker::Ctx;
use scheduler_executor::keeper::KeeperProcess;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the keeper waits between SIGTERM and SIGKILL: the worker's kill
/// grace, but at most a third of the lease, so the modules are gone well
/// before recovery may re-run their steps (a lease after the last renewal).
pub fn grace(ctx: &Ctx) -> Duration {
    ctx.config.kill_grace.min(ctx.config.lease / 3)
}

/// Starts the keeper, if the worker is configured with one.
pub async fn start(ctx: &Ctx) -> Option<KeeperProcess> {
    let command = ctx.config.keeper.as_ref()?;
    if scheduler_producer::failpoint::is_armed(scheduler_producer::failpoint::NO_KEEPER) {
        tracing::warn!("failpoint no-keeper: running without a keeper");
        return None;
    }
    let freeze_after = ctx.config.lease / 2;
    let worker_id = ctx.worker_id.to_string();
    let started = KeeperProcess::start(command, &worker_id, grace(ctx), freeze_after, &ctx.config.keeper_env);
    match started.await {
        Ok(k) => {
            tracing::info!(
                keeper_pid = k.pid(),
                "keeper started: if this worker dies, its modules are stopped at once"
            );
            Some(k)
        }
        Err(e) => {
            tracing::error!(
                error = %e,
                "could not start the keeper: if this worker is killed, its modules are only stopped when recovery runs on this host"
            );
            None
        }
    }
}

/// Keeps a keeper running until `stop` fires, then drops it (closing its
/// pipe: it stops any module of ours still running, which after a drain
/// is none, and exits).
pub async fn mind(ctx: Arc<Ctx>, mut keeper: Option<KeeperProcess>, stop: CancellationToken) {
    if ctx.config.keeper.is_none() {
        return;
    }
    loop {
        let retry_in = match keeper.as_mut() {
            Some(k) => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    status = k.exited() => {
                        tracing::error!(?status, "the keeper ended while the worker runs; restarting it");
                        Duration::from_secs(1)
                    }
                }
            }
            None => Duration::from_secs(30),
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry_in) => {}
        }
        keeper = start(&ctx).await;
    }
}
