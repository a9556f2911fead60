//! `/workers`: each worker with its host, slots, queues, last heartbeat and
//! what it runs now, and whether it is alive; and the depth of each queue
//! (and its dead-letter queue) as RabbitMQ reports it.

use super::html;
use crate::error::{PageResult, Problem};
use crate::view::{self, Stamp};
use crate::{ALIVE_WITHIN, AppState};
use askama::Template;
use axum::extract::State;
use axum::response::Html;
use chrono::{DateTime, Utc};
use scheduler_tracker::WorkerView;
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkerInfo {
    #[serde(flatten)]
    pub worker: WorkerView,
    /// Not stopped, and heartbeating within the last 30 s.
    pub alive: bool,
    pub heartbeat_age_secs: i64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueueInfo {
    pub name: String,
    /// Messages ready in the queue; `None` when the broker did not say.
    pub messages: Option<u32>,
    pub consumers: Option<u32>,
    /// Why the depth is unknown (e.g. the queue is not declared yet).
    pub error: Option<String>,
}

pub(crate) async fn load_workers(state: &AppState, now: DateTime<Utc>) -> Result<Vec<WorkerInfo>, Problem> {
    Ok(state
        .store
        .list_workers()
        .await?
        .into_iter()
        .map(|w| {
            let age = (now - w.heartbeat_at).num_seconds().max(0);
            WorkerInfo {
                alive: w.state != "stopped" && age < ALIVE_WITHIN.as_secs() as i64,
                heartbeat_age_secs: age,
                worker: w,
            }
        })
        .collect())
}

/// The UI's queue, every live worker's queues, and their `.dead` queues.
pub(crate) async fn load_queues(state: &AppState, workers: &[WorkerInfo]) -> Vec<QueueInfo> {
    let mut names: BTreeSet<String> = BTreeSet::from([state.config.queue.clone()]);
    for w in workers.iter().filter(|w| w.alive) {
        names.extend(w.worker.queues.iter().cloned());
    }
    let mut out = Vec::new();
    for name in names.iter().flat_map(|q| [q.clone(), format!("{q}.dead")]) {
        let info = match state.transport.queue_depth(&name).await {
            Ok((messages, consumers)) => QueueInfo {
                name,
                messages: Some(messages),
                consumers: Some(consumers),
                error: None,
            },
            Err(e) => QueueInfo {
                name,
                messages: None,
                consumers: None,
                error: Some(match e {
                    // A passive declare of a missing queue is refused.
                    scheduler_broker::BrokerError::Amqp(_) => {
                        "not declared yet (no worker or run has used it)".to_string()
                    }
                    other => other.to_string(),
                }),
            },
        };
        out.push(info);
    }
    out
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    nav: &'static str,
    workers: Vec<WorkerRow>,
    queues: Vec<QueueInfo>,
    alive: usize,
}

struct WorkerRow {
    host: String,
    pid: i32,
    version: String,
    /// `alive`, `draining`, `stopped` or `lost` (no heartbeat).
    status: String,
    concurrency: i32,
    running: i64,
    queues: String,
    heartbeat: Stamp,
    started: Stamp,
    id: String,
}

pub(crate) async fn page(State(state): State<AppState>) -> PageResult<Html<String>> {
    let now = Utc::now();
    let workers = load_workers(&state, now).await?;
    let queues = load_queues(&state, &workers).await;
    let alive = workers.iter().filter(|w| w.alive).count();
    let workers = workers
        .into_iter()
        .map(|w| {
            let status = match (w.alive, w.worker.state.as_str()) {
                (_, "stopped") => "stopped",
                (true, "draining") => "draining",
                (true, _) => "alive",
                (false, _) => "lost",
            };
            WorkerRow {
                status: status.into(),
                host: w.worker.host,
                pid: w.worker.pid,
                version: w.worker.version,
                concurrency: w.worker.concurrency,
                running: w.worker.running,
                queues: w.worker.queues.join(", "),
                heartbeat: Stamp::new(w.worker.heartbeat_at, now),
                started: Stamp::new(w.worker.started_at, now),
                id: view::short_id(&w.worker.id),
            }
        })
        .collect();
    html(&WorkersPage {
        nav: "workers",
        workers,
        queues,
        alive,
    })
}
