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
use scheduler_tracker::{NewRun, Store};
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

/// Validates `sequence` and records a run of it as `queued`; returns its id.
/// Once this returns, the run cannot be lost: if it is never published,
/// recovery publishes it.
pub async fn record_run(
    project: &Project,
    store: &dyn Store,
    sequence: &str,
    queue: &str,
    trigger: &str,
) -> Result<Uuid, ProducerError> {
    let modules = project.modules()?;
    let seq = project.sequence(sequence, &modules)?;
    let run = NewRun {
        id: Uuid::now_v7(),
        queue: queue.to_string(),
        trigger: trigger.to_string(),
        snapshot: seq.snapshot(&modules),
    };
    store.create_run(&run).await?;
    Ok(run.id)
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

/// Validates, records and publishes a run of `sequence`; returns its id.
pub async fn start_run(
    project: &Project,
    store: &dyn Store,
    transport: &dyn Transport,
    sequence: &str,
    queue: &str,
    trigger: &str,
) -> Result<Uuid, ProducerError> {
    let run_id = record_run(project, store, sequence, queue, trigger).await?;
    publish_start(store, transport, run_id, queue).await?;
    Ok(run_id)
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
