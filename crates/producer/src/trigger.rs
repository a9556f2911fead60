//! Triggering a run: validate the sequence at the edge, freeze it into a
//! snapshot, record the run in PostgreSQL, then publish `start_etl`. The
//! record comes first so that a trigger is never lost without a trace: if
//! the publish fails, the run is in the database as `queued` with no
//! `published_at`, which is exactly what recovery looks for.

use crate::ProducerError;
use crate::apply::publish_noted;
use crate::project::Project;
use scheduler_broker::Transport;
use scheduler_core::Message;
use scheduler_tracker::{Admitted, Embedded, EmbeddedQueue, NewRun, Store};
use uuid::Uuid;

/// Who or what started a run, for the record: `cli:<user>@<host>` unless the
/// caller says otherwise (`SCHEDULER_TRIGGER=cron` in a crontab line).
pub fn default_trigger(kind: &str) -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(user_of_this_process);
    format!("{kind}:{user}@{}", hostname())
}

/// The name of this process's user when the environment does not say (cron
/// and containers often set no `USER`): from `/etc/passwd`, else `uid<N>`.
fn user_of_this_process() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse() == Ok(uid)).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("uid{uid}"))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A run as it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub run_id: Uuid,
    /// The run's queue (its `start_etl` goes there).
    pub queue: String,
    /// Every queue its steps run on, the run's first.
    pub queues: Vec<String>,
    /// `queued`, or waiting / skipped by its sequence's concurrency policy.
    pub admitted: Admitted,
}

impl Recorded {
    /// The queues to declare before publishing: all of the run's, but the
    /// run's own when its `start_etl` is published ([`publish_start`]
    /// declares that one): one broker round trip less on every start.
    pub fn queues_to_declare(&self) -> &[String] {
        match self.admitted {
            Admitted::Queued => &self.queues[1..],
            _ => &self.queues,
        }
    }
}

/// Validates `sequence` and records a run of it: `queued`, or as the
/// sequence's concurrency policy says. `start_queue` is the queue asked
/// for when starting it (the sequence's own queue wins over it). Once this
/// returns, the run cannot be lost: if it is never published, recovery
/// publishes it.
pub async fn record_run(
    project: &Project,
    store: &dyn Store,
    sequence: &str,
    start_queue: &str,
    trigger: &str,
) -> Result<Recorded, ProducerError> {
    record_run_for(project, store, sequence, start_queue, trigger, None).await
}

/// [`record_run`] for a given logical date (`scheduler start
/// --logical-date`) instead of the current time.
pub async fn record_run_for(
    project: &Project,
    store: &dyn Store,
    sequence: &str,
    start_queue: &str,
    trigger: &str,
    logical: Option<chrono::DateTime<chrono::FixedOffset>>,
) -> Result<Recorded, ProducerError> {
    let (run, queues) = prepare(project, sequence, start_queue, trigger, Logical::Manual(logical))?;
    let admitted = store.create_run(&run).await?;
    Ok(Recorded {
        run_id: run.id,
        queue: run.queue,
        queues,
        admitted,
    })
}

/// The slot of a schedule a run is started for.
#[derive(Debug, Clone)]
pub struct Slot<'a> {
    pub schedule: &'a str,
    pub at: chrono::DateTime<chrono::Utc>,
    /// The same instant in the schedule's timezone: the run's logical date.
    pub local: chrono::DateTime<chrono::FixedOffset>,
    /// `started`, or `backfilled` for a backfill.
    pub fate: &'a str,
    /// The schedule's `healthcheck_url`, over the sequence's.
    pub healthcheck_url: Option<&'a str>,
}

/// What a run's logical date comes from.
enum Logical<'a> {
    /// A schedule's slot.
    Slot(&'a Slot<'a>),
    /// A manual start: the date asked for, or now.
    Manual(Option<chrono::DateTime<chrono::FixedOffset>>),
}

/// Validates `sequence` and builds the run to record, with every queue it
/// uses (the run's own first).
fn prepare(
    project: &Project,
    sequence: &str,
    start_queue: &str,
    trigger: &str,
    logical: Logical<'_>,
) -> Result<(NewRun, Vec<String>), ProducerError> {
    let (slot, asked) = match &logical {
        Logical::Slot(slot) => (Some(*slot), None),
        Logical::Manual(at) => (None, *at),
    };
    let modules = project.modules()?;
    let seq = project.sequence(sequence, &modules)?;
    scheduler_core::policy::check_queue(start_queue).map_err(|e| {
        ProducerError::Definition(crate::ProjectError::BadQueue(format!(
            "{e} (given with --queue or SCHEDULER_QUEUE)"
        )))
    })?;
    let queue = seq.run_queue(start_queue);
    let id = Uuid::now_v7();
    let logical = match logical {
        Logical::Slot(slot) => slot.local,
        Logical::Manual(at) => at.unwrap_or_else(|| chrono::Utc::now().fixed_offset()),
    };
    let mut snapshot = seq.snapshot_for(&modules, &queue, &placeholder_values(logical, id, sequence));
    snapshot.schedule = slot.map(|s| s.schedule.to_string());
    if let Some(url) = slot.and_then(|s| s.healthcheck_url) {
        snapshot.healthcheck_url = Some(url.to_string());
    }
    let mut queues = vec![queue.clone()];
    for step in &snapshot.steps {
        if let Some(q) = &step.queue
            && !queues.contains(q)
        {
            queues.push(q.clone());
        }
    }
    let run = NewRun {
        id,
        queue,
        trigger: trigger.to_string(),
        snapshot,
        schedule: slot.map(|s| s.schedule.to_string()),
        logical_date: slot.map(|s| s.at).or(asked.map(|at| at.to_utc())),
    };
    Ok((run, queues))
}

/// The placeholder values of a run for `logical` (its logical date, in its
/// schedule's timezone).
fn placeholder_values(
    logical: chrono::DateTime<chrono::FixedOffset>,
    run_id: Uuid,
    sequence: &str,
) -> scheduler_core::placeholder::Values {
    let day = logical.date_naive();
    let ds = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    [
        ("ds", ds(day)),
        ("ds_nodash", day.format("%Y%m%d").to_string()),
        ("ts", logical.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)),
        ("yesterday_ds", day.pred_opt().map(ds).unwrap_or_default()),
        ("tomorrow_ds", day.succ_opt().map(ds).unwrap_or_default()),
        ("run_id", run_id.to_string()),
        ("sequence", sequence.to_string()),
    ]
    .into()
}

/// Fires a schedule's slot: its ledger row and its run are recorded in one
/// transaction (so any number of schedulers fire it once), then its queues
/// are declared and, if admitted, its `start_etl` published. `None`: another
/// scheduler fired this slot.
pub async fn fire_slot(
    project: &Project,
    store: &dyn Store,
    transport: &dyn Transport,
    sequence: &str,
    start_queue: &str,
    slot: &Slot<'_>,
) -> Result<Option<Recorded>, ProducerError> {
    let trigger = format!("schedule:{}", slot.schedule);
    let (run, queues) = prepare(project, sequence, start_queue, &trigger, Logical::Slot(slot))?;
    let Some(admitted) = store.fire_slot(slot.schedule, slot.at, slot.fate, &run).await? else {
        return Ok(None);
    };
    let recorded = Recorded {
        run_id: run.id,
        queue: run.queue,
        queues,
        admitted,
    };
    publish_recorded(store, transport, &recorded).await?;
    Ok(Some(recorded))
}

/// Publishes `start_etl` for a recorded run (declaring its queue first: a
/// run may be the first thing a queue ever sees) and notes it.
pub async fn publish_start(
    store: &dyn Store,
    transport: &dyn Transport,
    run_id: Uuid,
    queue: &str,
) -> Result<(), ProducerError> {
    transport
        .declare(queue)
        .await
        .map_err(|source| ProducerError::Publish { run_id, source })?;
    publish_noted(store, transport, queue, &Message::StartEtl { run_id }).await?;
    tracing::info!(%run_id, queue, "run recorded and start_etl published");
    Ok(())
}

/// Validates, records and (when its sequence has a free slot) publishes a
/// run of `sequence`. Every queue its steps use is declared first, so that
/// the workers page shows a step's queue, and its depth, before any worker
/// serves it.
pub async fn start_run(
    project: &Project,
    store: &dyn Store,
    transport: &dyn Transport,
    sequence: &str,
    start_queue: &str,
    trigger: &str,
) -> Result<Recorded, ProducerError> {
    if let Some(recorded) = record_and_start(project, store, transport, sequence, start_queue, trigger, None).await? {
        return Ok(recorded);
    }
    let recorded = record_run(project, store, sequence, start_queue, trigger).await?;
    publish_recorded(store, transport, &recorded).await?;
    Ok(recorded)
}

/// Records a run of `sequence` (for `logical`, or now) and its `start_etl`
/// in one transaction, when `transport` is the embedded store's own queue
/// (`EmbeddedQueue::record_and_start`); `None`, nothing done, otherwise:
/// the caller records, then publishes.
pub async fn record_and_start(
    project: &Project,
    store: &dyn Store,
    transport: &dyn Transport,
    sequence: &str,
    start_queue: &str,
    trigger: &str,
    logical: Option<chrono::DateTime<chrono::FixedOffset>>,
) -> Result<Option<Recorded>, ProducerError> {
    let Some(queue) = own_queue(store, transport) else {
        return Ok(None);
    };
    let (run, queues) = prepare(project, sequence, start_queue, trigger, Logical::Manual(logical))?;
    let admitted = queue.record_and_start(&run, &queues).await?;
    let recorded = Recorded {
        run_id: run.id,
        queue: run.queue,
        queues,
        admitted,
    };
    match &recorded.admitted {
        Admitted::Queued => {
            tracing::info!(run_id = %recorded.run_id, queue = recorded.queue, "run recorded and start_etl published")
        }
        Admitted::Waiting(note) => tracing::info!(run_id = %recorded.run_id, note, "run recorded; it waits for a slot"),
        Admitted::Skipped(note) => tracing::info!(run_id = %recorded.run_id, note, "run recorded as skipped"),
    }
    Ok(Some(recorded))
}

/// The embedded store's own queue, when `transport` is it: a run and its
/// `start_etl` are then one transaction (`EmbeddedQueue::record_and_start`)
/// instead of a record, a publish and a note.
fn own_queue<'a>(store: &dyn Store, transport: &'a dyn Transport) -> Option<&'a EmbeddedQueue> {
    let queue = transport.as_any().downcast_ref::<EmbeddedQueue>()?;
    let store = store.as_any().downcast_ref::<Embedded>()?;
    queue.shares(store).then_some(queue)
}

/// Declares a recorded run's queues and publishes its `start_etl` if it
/// was admitted.
async fn publish_recorded(
    store: &dyn Store,
    transport: &dyn Transport,
    recorded: &Recorded,
) -> Result<(), ProducerError> {
    let run_id = recorded.run_id;
    for queue in recorded.queues_to_declare() {
        transport
            .declare(queue)
            .await
            .map_err(|source| ProducerError::Publish { run_id, source })?;
    }
    match &recorded.admitted {
        Admitted::Queued => publish_start(store, transport, run_id, &recorded.queue).await?,
        Admitted::Waiting(note) => tracing::info!(%run_id, note, "run recorded; it waits for a slot"),
        Admitted::Skipped(note) => tracing::info!(%run_id, note, "run recorded as skipped"),
    }
    Ok(())
}

/// Starts the sequence's waiting runs that fit in its free slots (after a
/// run of it ended); returns how many. A publish that fails leaves the run
/// `queued` and unpublished, for recovery.
pub async fn admit_waiting(
    store: &dyn Store,
    transport: &dyn Transport,
    sequence: &str,
) -> Result<usize, ProducerError> {
    let admitted = store.admit_waiting(sequence).await?;
    for (run_id, queue) in &admitted {
        tracing::info!(%run_id, sequence, "a slot freed; the waiting run starts");
        publish_start(store, transport, *run_id, queue).await?;
    }
    Ok(admitted.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_user_is_named_even_without_user_in_the_environment() {
        let user = super::user_of_this_process();
        assert!(!user.is_empty() && user != "unknown", "{user}");
        let expected = std::process::Command::new("id").arg("-un").output().unwrap();
        let expected = String::from_utf8_lossy(&expected.stdout).trim().to_string();
        if !expected.is_empty() {
            assert_eq!(user, expected);
        }
    }
}
