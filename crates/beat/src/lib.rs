//! The scheduler process (`scheduler beat`, or `scheduler worker --beat`):
//! fires the slots of `schedules.json` through the producer, the same path
//! as any start. It keeps no state of its own: each pass reads every
//! schedule's cursor from the store, decides the fate of the slots that
//! came due (`scheduler_schedule::catch_up`, pure), and records each one,
//! a started slot in the same transaction as its run. Any number of beats
//! may run, on any hosts: the ledger's primary key fires a slot once.
//!
//! Architecture invariant: it depends on neither the worker nor the
//! executor; it never runs a module.

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use scheduler_broker::Transport;
use scheduler_producer::{Project, Slot};
use scheduler_schedule::{Fate, Schedule, catch_up, fire_at, slots_between};
use scheduler_tracker::{Admitted, Cursor, Store};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct BeatConfig {
    /// The queue of runs whose sequence names none (`--queue`).
    pub queue: String,
    /// How often it looks for due slots.
    pub tick: std::time::Duration,
    /// A slot fired later than this after its time passed while no
    /// scheduler ran: its schedule's catch-up policy decides.
    pub on_time: std::time::Duration,
    /// A started slot whose run has not started this long after is flagged
    /// late (every worker busy or down), once, with a warning.
    pub late_after: std::time::Duration,
}

impl Default for BeatConfig {
    fn default() -> Self {
        BeatConfig {
            queue: "etl".into(),
            tick: std::time::Duration::from_millis(250),
            on_time: std::time::Duration::from_secs(10),
            late_after: std::time::Duration::from_secs(60),
        }
    }
}

/// Reads and validates `schedules.json`; none when the file is absent.
pub fn load(project: &Project) -> anyhow::Result<Vec<Schedule>> {
    let path = project.dir().join("schedules.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(scheduler_schedule::parse("schedules.json", &text, |s| {
        project.sequence_path(s).exists()
    })?)
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub started: usize,
    pub skipped: usize,
    pub coalesced: usize,
    pub missed: usize,
    pub paused: usize,
}

/// Runs until `shutdown`; re-reads `schedules.json` when `reload` is
/// notified (SIGHUP). A file that does not validate keeps the schedules
/// read before, and says why.
pub async fn run(
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    project: Project,
    config: BeatConfig,
    shutdown: CancellationToken,
    reload: Arc<Notify>,
) -> anyhow::Result<()> {
    let mut schedules = load(&project)?;
    let mut registered = false;
    tracing::info!(schedules = schedules.len(), "beat started");
    let mut ticker = tokio::time::interval(config.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut late_look = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = reload.notified() => {
                match load(&project) {
                    Ok(s) => {
                        tracing::info!(schedules = s.len(), "schedules.json re-read");
                        schedules = s;
                        registered = false;
                    }
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "schedules.json not re-read; keeping the schedules read before"),
                }
                continue;
            }
            _ = ticker.tick() => {}
        }
        if late_look.elapsed() >= config.late_after.min(std::time::Duration::from_secs(10)) {
            late_look = tokio::time::Instant::now();
            flag_late(&*store, config.late_after).await;
        }
        let enabled: Vec<&Schedule> = schedules.iter().filter(|s| s.enabled).collect();
        if enabled.is_empty() {
            continue;
        }
        let names: Vec<String> = enabled.iter().map(|s| s.name.clone()).collect();
        if !registered {
            match store.register_schedules(&names).await {
                Ok(()) => registered = true,
                Err(e) => {
                    tracing::warn!(error = %e, "could not register the schedules; trying again");
                    continue;
                }
            }
        }
        // Every cursor in one query per tick, whatever the number of schedules.
        let cursors = match store.schedule_cursors(&names).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the schedules' cursors; trying again");
                continue;
            }
        };
        for schedule in enabled {
            let Some((_, cursor)) = cursors.iter().find(|(n, _)| *n == schedule.name) else {
                // Removed from the record under us (a test's cleanup): register again.
                registered = false;
                continue;
            };
            match pass(&*store, &*transport, &project, &config, schedule, cursor, Utc::now()).await {
                Ok(p) if p != Pass::default() => tracing::debug!(schedule = %schedule.name, ?p, "slots recorded"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(schedule = %schedule.name, error = %format!("{e:#}"), "could not fire the schedule's due slots; trying again")
                }
            }
        }
    }
}

/// Flags the slots whose run has not started `after` they fired, once,
/// with a warning an operator (or a log alert) sees.
async fn flag_late(store: &dyn Store, after: std::time::Duration) {
    match store.flag_late_slots(after).await {
        Ok(late) => {
            for slot in late {
                tracing::warn!(
                    schedule = %slot.schedule,
                    slot = %slot.slot_at,
                    run_id = %slot.run_id,
                    state = %slot.state,
                    late_after_secs = after.as_secs(),
                    "slot late: its run has not started (every worker busy or down?)"
                );
            }
        }
        Err(e) => tracing::debug!(error = %e, "could not look for late slots"),
    }
}

/// Records the fate of every slot of `schedule` that came due by `now`.
pub async fn pass(
    store: &dyn Store,
    transport: &dyn Transport,
    project: &Project,
    config: &BeatConfig,
    schedule: &Schedule,
    cursor: &Cursor,
    now: DateTime<Utc>,
) -> anyhow::Result<Pass> {
    let after = cursor.last_slot.unwrap_or(cursor.first_seen);
    // The newest due slots only, if a scheduler was away for very long.
    let due: Vec<DateTime<Utc>> = slots_between(schedule, after, now, 10_000)
        .into_iter()
        .filter(|slot| fire_at(schedule, *slot) <= now)
        .collect();
    let mut done = Pass::default();
    // Slots of a pause are recorded as paused, in order, before the rest.
    let paused = due.iter().take_while(|slot| cursor.in_pause(**slot)).count();
    for slot in &due[..paused] {
        if store.record_slot(&schedule.name, *slot, "paused", None).await? {
            done.paused += 1;
        }
    }
    let due = &due[paused..];
    let on_time = Duration::from_std(config.on_time).unwrap_or(Duration::seconds(60));
    for (slot, fate) in catch_up(schedule, due, now, on_time) {
        match fate {
            Fate::Start => {
                let at = Slot {
                    schedule: &schedule.name,
                    at: slot,
                    local: slot.with_timezone(&schedule.timezone).fixed_offset(),
                    fate: "started",
                    healthcheck_url: schedule.healthcheck_url.as_deref(),
                };
                match scheduler_producer::fire_slot(project, store, transport, &schedule.sequence, &config.queue, &at)
                    .await
                {
                    Ok(Some(recorded)) => {
                        let lag_ms = (Utc::now() - slot).num_milliseconds();
                        tracing::info!(schedule = %schedule.name, %slot, run_id = %recorded.run_id, lag_ms, "slot fired");
                        match recorded.admitted {
                            Admitted::Skipped(_) => done.skipped += 1,
                            _ => done.started += 1,
                        }
                    }
                    Ok(None) => {}
                    // Recorded but not published: recovery publishes it.
                    Err(scheduler_producer::ProducerError::Publish { run_id, source }) => {
                        tracing::warn!(schedule = %schedule.name, %run_id, error = %source, "slot fired; its start_etl waits for recovery");
                        done.started += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Fate::Coalesced | Fate::Missed => {
                let note = match fate {
                    Fate::Coalesced => "passed while no scheduler ran; folded into the catch-up run",
                    _ => "passed while no scheduler ran; outside the catch-up policy or window",
                };
                if store
                    .record_slot(&schedule.name, slot, fate.as_str(), Some(note))
                    .await?
                {
                    if fate == Fate::Coalesced {
                        done.coalesced += 1;
                    } else {
                        done.missed += 1;
                    }
                }
            }
        }
    }
    Ok(done)
}
