//! Liveness and leases. Every `heartbeat_every`, one write marks the worker
//! alive and extends the lease of each step it runs (from the module's
//! start until its result is recorded or given up: never a step it no
//! longer works on, or its lease would never lapse). The answer also says
//! which of those steps belong to a canceled run (stop them), and a step
//! this worker runs but whose lease was not renewed was taken away (stop it).
//! If no heartbeat has succeeded for a whole lease, the worker stops all its
//! modules: recovery may already be re-running them elsewhere, and two
//! copies of one step must never run at once. A heartbeat that gets no
//! answer by the next tick (a partitioned network) counts as failed.
//!
//! What to stop is decided by [`judge`], a pure function of the answer and
//! the times the worker's clock gave, tested with a clock moved by hand.

use crate::worker::{Ctx, StopReason};
use scheduler_tracker::{ExecKey, Held};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut last_ok = ctx.clock.now();
    let mut ticker = tokio::time::interval(ctx.config.heartbeat_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        last_ok = beat(&ctx, last_ok).await;
        write_health(&ctx).await;
    }
}

/// Rewrites the health file (`--health-file`) a probe reads.
async fn write_health(ctx: &Ctx) {
    let Some(path) = &ctx.config.health_file else { return };
    let report = ctx.health.report(
        ctx.worker_id,
        ctx.is_draining(),
        ctx.config.lease.as_secs_f64(),
        std::time::SystemTime::now(),
    );
    if let Err(e) = crate::health::write(path, &report).await {
        tracing::warn!(path = %path.display(), error = %e, "could not write the health file");
    }
}

/// One heartbeat and what follows from it; returns when the last successful
/// heartbeat was asked.
pub async fn beat(ctx: &Ctx, last_ok: Instant) -> Instant {
    let asked = ctx.clock.now();
    let active: Vec<(ExecKey, Instant)> = ctx
        .active
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(key, a)| (*key, a.since))
        .collect();
    let holding: Vec<ExecKey> = active.iter().map(|(key, _)| *key).collect();
    // Bounded: over a partitioned network the statement gets no answer and
    // no error either, for as long as TCP keeps retrying (minutes); a
    // heartbeat left waiting would never let `judge` see the lease lapse.
    // One without an answer by the next tick counts as failed.
    let answer = match tokio::time::timeout(
        ctx.config.heartbeat_every,
        ctx.store
            .heartbeat(ctx.worker_id, ctx.is_draining(), ctx.config.lease, &holding),
    )
    .await
    {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {:?}", ctx.config.heartbeat_every)),
    };
    if let Err(e) = &answer {
        tracing::warn!(error = %e, "heartbeat failed");
    }
    ctx.health.database(answer.is_ok(), std::time::SystemTime::now());
    let beat = Beat {
        held: answer.as_deref().ok(),
        asked,
        last_ok,
        lease: ctx.config.lease,
    };
    for (key, reason) in judge(&beat, &active) {
        match reason {
            StopReason::RunCanceled => {
                tracing::info!(run_id = %key.run_id, step = key.step, "run canceled: stopping its module")
            }
            _ if beat.held.is_some() => {
                tracing::warn!(run_id = %key.run_id, step = key.step, "lease lost (step taken over): stopping its module")
            }
            _ => tracing::error!(
                run_id = %key.run_id,
                step = key.step,
                "no heartbeat for a whole lease: stopping the module so no step runs twice"
            ),
        }
        ctx.stop(&key, reason);
    }
    if answer.is_ok() { asked } else { last_ok }
}

/// A heartbeat as [`judge`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Beat<'a> {
    /// The executions whose lease it renewed; `None`: it failed.
    pub held: Option<&'a [Held]>,
    /// When it was asked.
    pub asked: Instant,
    /// When the last successful one was asked.
    pub last_ok: Instant,
    pub lease: Duration,
}

/// Which of the `active` modules (with the time each started) to stop, and
/// why: those of canceled runs; those started before the heartbeat whose
/// lease it did not renew (taken over); and all of them once no heartbeat
/// has succeeded for a whole lease.
pub fn judge(beat: &Beat, active: &[(ExecKey, Instant)]) -> Vec<(ExecKey, StopReason)> {
    let Some(held) = beat.held else {
        if beat.asked.duration_since(beat.last_ok) >= beat.lease {
            return active.iter().map(|(key, _)| (*key, StopReason::LeaseLost)).collect();
        }
        return Vec::new();
    };
    let renewed: HashSet<_> = held.iter().map(|h| h.key).collect();
    let mut stop: Vec<_> = held
        .iter()
        .filter(|h| h.canceled)
        .map(|h| (h.key, StopReason::RunCanceled))
        .collect();
    stop.extend(
        active
            .iter()
            .filter(|(key, since)| *since < beat.asked && !renewed.contains(key))
            .map(|(key, _)| (*key, StopReason::LeaseLost)),
    );
    stop
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use uuid::Uuid;

    fn key(step: u32) -> ExecKey {
        ExecKey {
            run_id: Uuid::nil(),
            step,
            attempt: 1,
        }
    }

    const LEASE: Duration = Duration::from_secs(30);

    #[test]
    fn a_renewed_step_runs_on_and_a_canceled_run_is_stopped() {
        let clock = ManualClock::default();
        let started = clock.now();
        clock.advance(Duration::from_secs(10));
        let held = [
            Held {
                key: key(0),
                canceled: false,
            },
            Held {
                key: key(1),
                canceled: true,
            },
        ];
        let beat = Beat {
            held: Some(&held),
            asked: clock.now(),
            last_ok: started,
            lease: LEASE,
        };
        let stop = judge(&beat, &[(key(0), started), (key(1), started)]);
        assert_eq!(stop, vec![(key(1), StopReason::RunCanceled)]);
    }

    #[test]
    fn a_step_whose_lease_was_not_renewed_was_taken_over_unless_it_started_after_the_beat() {
        let clock = ManualClock::default();
        let early = clock.now();
        clock.advance(Duration::from_secs(10));
        let asked = clock.now();
        clock.advance(Duration::from_millis(5));
        let late = clock.now();
        let beat = Beat {
            held: Some(&[]),
            asked,
            last_ok: early,
            lease: LEASE,
        };
        let stop = judge(&beat, &[(key(0), early), (key(1), late)]);
        assert_eq!(stop, vec![(key(0), StopReason::LeaseLost)]);
    }

    #[test]
    fn failed_heartbeats_stop_every_module_only_after_a_whole_lease() {
        let clock = ManualClock::default();
        let last_ok = clock.now();
        let active = [(key(0), last_ok), (key(1), last_ok)];
        clock.advance(LEASE - Duration::from_millis(1));
        let beat = Beat {
            held: None,
            asked: clock.now(),
            last_ok,
            lease: LEASE,
        };
        assert!(judge(&beat, &active).is_empty(), "within the lease: keep running");
        clock.advance(Duration::from_millis(1));
        let beat = Beat {
            asked: clock.now(),
            ..beat
        };
        assert_eq!(
            judge(&beat, &active),
            vec![(key(0), StopReason::LeaseLost), (key(1), StopReason::LeaseLost)]
        );
    }
}
