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
        let now = ctx.clock.now();
        let last = *ctx.last_delivery.lock().unwrap_or_else(|p| p.into_inner());
        let idle = now.duration_since(last) >= stall_after
            && !ctx.is_draining()
            && ctx.slots.busy().await < ctx.config.concurrency.saturating_add(ctx.config.extra_runs);
        let mut ready = 0;
        if idle {
            for queue in &ctx.config.queues {
                ready += ctx.transport.queue_depth(queue).await.map(|(r, _)| r).unwrap_or(0);
            }
        }
        match look(now, last, suspect_since, ready) {
            Look::Fine => suspect_since = None,
            Look::Suspect => suspect_since = Some(now),
            Look::Stalled => {
                tracing::warn!(
                    ready,
                    quiet = ?now.duration_since(last),
                    "consumer stalled: messages are ready and slots are free, but nothing was delivered; rebuilding the connection"
                );
                if let Err(e) = ctx.transport.reconnect().await {
                    tracing::warn!(error = %e, "could not rebuild the broker connection; the consume loop will retry");
                }
                *ctx.last_delivery.lock().unwrap_or_else(|p| p.into_inner()) = ctx.clock.now();
                suspect_since = None;
            }
        }
    }
}

/// What one look concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    Fine,
    /// Ready messages and nothing delivered: look again before acting.
    Suspect,
    /// Suspect at the previous look too, and nothing delivered since.
    Stalled,
}

/// `ready`: messages waiting while this idle consumer has free slots (0 when
/// it is busy, draining or received something within `stall_after`).
pub fn look(now: Instant, last_delivery: Instant, suspect_since: Option<Instant>, ready: u32) -> Look {
    match suspect_since {
        _ if ready == 0 => Look::Fine,
        Some(since) if last_delivery < since && since <= now => Look::Stalled,
        _ => Look::Suspect,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    #[test]
    fn a_stall_needs_two_looks_with_no_delivery_between() {
        let clock = ManualClock::default();
        let last = clock.now();
        clock.advance(Duration::from_secs(31));
        let first = clock.now();
        assert_eq!(look(first, last, None, 3), Look::Suspect);
        clock.advance(Duration::from_secs(5));
        assert_eq!(look(clock.now(), last, Some(first), 3), Look::Stalled);
        // A delivery between the two looks clears the suspicion.
        assert_eq!(look(clock.now(), clock.now(), Some(first), 3), Look::Suspect);
        // Nothing ready: nothing to worry about.
        assert_eq!(look(clock.now(), last, Some(first), 0), Look::Fine);
    }
}
