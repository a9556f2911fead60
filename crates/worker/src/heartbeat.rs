//! Liveness and leases. Every `heartbeat_every`, one statement marks the
//! worker alive and extends the lease of each step it runs. The answer also
//! says which of those steps belong to a canceled run (stop them), and a step
//! this worker runs but whose lease was not renewed was taken away (stop it).
//! If no heartbeat has succeeded for a whole lease, the worker stops all its
//! modules: recovery may already be re-running them elsewhere, and two
//! copies of one step must never run at once.

use crate::worker::{Ctx, StopReason};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut last_ok = Instant::now();
    let mut ticker = tokio::time::interval(ctx.config.heartbeat_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let asked = Instant::now();
        match ctx
            .tracker
            .heartbeat(ctx.worker_id, ctx.is_draining(), ctx.config.lease)
            .await
        {
            Ok(held) => {
                last_ok = asked;
                let renewed: HashSet<_> = held.iter().map(|h| h.key).collect();
                for h in held.iter().filter(|h| h.canceled) {
                    tracing::info!(run_id = %h.key.run_id, step = h.key.step, "run canceled: stopping its module");
                    ctx.stop(&h.key, StopReason::RunCanceled);
                }
                let lost: Vec<_> = ctx
                    .active
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter(|(key, a)| a.since < asked && !renewed.contains(key))
                    .map(|(key, _)| *key)
                    .collect();
                for key in lost {
                    tracing::warn!(run_id = %key.run_id, step = key.step, "lease lost (step taken over): stopping its module");
                    ctx.stop(&key, StopReason::LeaseLost);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                if asked.duration_since(last_ok) >= ctx.config.lease {
                    tracing::error!("no heartbeat for a whole lease: stopping all modules so no step runs twice");
                    ctx.stop_all(StopReason::LeaseLost);
                }
            }
        }
    }
}
