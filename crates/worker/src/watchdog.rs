//! The stall watchdog. A consumer can stop receiving without any error: a
//! delivery lost inside the worker keeps its prefetch credit, a channel
//! stays blocked by flow control, a server-side consumer vanishes without
//! the client hearing of it. The symptom is always the same and cheap to
//! see: this worker has free slots, its queue has ready messages, and
//! nothing has been delivered for `stall_after` (30 s by default).
//!
//! Seen on two consecutive looks with no delivery in between (so a message
//! published just before a look is not mistaken for a stall), the watchdog
//! replaces the broker connection; the consume loop sees its channel fail
//! and reconnects as after any connection loss, and RabbitMQ redelivers
//! whatever was unacknowledged.

use crate::worker::Ctx;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let stall_after = ctx.config.stall_after;
    let look_every = stall_after.clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut ticker = tokio::time::interval(look_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut suspect_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let last = *ctx.last_delivery.lock().unwrap_or_else(|p| p.into_inner());
        let ready =
            if last.elapsed() < stall_after || ctx.is_draining() || ctx.slots.busy().await >= ctx.config.concurrency {
                0
            } else {
                ctx.broker
                    .queue_depth(&ctx.config.queue)
                    .await
                    .map(|(r, _)| r)
                    .unwrap_or(0)
            };
        if ready == 0 {
            suspect_since = None;
            continue;
        }
        match suspect_since {
            Some(since) if last < since => {
                tracing::warn!(
                    ready,
                    quiet = ?last.elapsed(),
                    "consumer stalled: messages are ready and slots are free, but nothing was delivered; rebuilding the connection"
                );
                if let Err(e) = ctx.broker.reconnect().await {
                    tracing::warn!(error = %e, "could not rebuild the broker connection; the consume loop will retry");
                }
                *ctx.last_delivery.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                suspect_since = None;
            }
            _ => suspect_since = Some(Instant::now()),
        }
    }
}
