//! `/workers`: each worker with its host, slots, queues, last heartbeat and
//! what it runs now, and whether it is alive; and each queue: its depth (and
//! its dead-letter queue's) as RabbitMQ reports it, the work the record says
//! waits on it, and the live workers serving it, flagged when work waits and
//! nobody serves it.

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

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct WorkerInfo {
    #[serde(flatten)]
    pub worker: WorkerView,
    /// Not stopped, and heartbeating within the last 30 s.
    pub alive: bool,
    pub heartbeat_age_secs: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct QueueInfo {
    pub name: String,
    /// Messages ready in the queue; `None` when the broker did not say.
    pub messages: Option<u32>,
    pub consumers: Option<u32>,
    /// Why the depth is unknown (e.g. the queue is not declared yet).
    pub error: Option<String>,
    /// Due steps the record says wait on it (0 for a `.dead` queue).
    pub waiting_steps: i64,
    /// Runs recorded but not started yet whose start goes to it.
    pub waiting_runs: i64,
    /// Hosts of the live workers serving it (empty: nobody).
    pub served_by: Vec<String>,
    /// Work waits on it (ready messages, or waiting steps or runs) and no
    /// live worker serves it: it waits until one starts.
    pub no_worker: bool,
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

/// The UI's queue, every live worker's queues and every queue the record
/// has work waiting on, each followed by its `.dead` queue.
pub(crate) async fn load_queues(state: &AppState, workers: &[WorkerInfo]) -> Result<Vec<QueueInfo>, Problem> {
    let loads = state.store.queue_loads().await?;
    let mut names: BTreeSet<String> = BTreeSet::from([state.config.queue.clone()]);
    for w in workers.iter().filter(|w| w.alive) {
        names.extend(w.worker.queues.iter().cloned());
    }
    names.extend(loads.iter().map(|l| l.queue.clone()));
    let mut out = Vec::new();
    for name in names {
        let load = loads.iter().find(|l| l.queue == name);
        let mut info = depth(state, name.clone()).await;
        info.waiting_steps = load.map_or(0, |l| l.waiting_steps);
        info.waiting_runs = load.map_or(0, |l| l.waiting_runs);
        info.served_by = load.map(|l| l.served_by.clone()).unwrap_or_default();
        let waits = info.messages.unwrap_or(0) > 0 || info.waiting_steps + info.waiting_runs > 0;
        info.no_worker = waits && info.served_by.is_empty();
        out.push(info);
        out.push(depth(state, format!("{name}.dead")).await);
    }
    Ok(out)
}

/// A queue's depth as the broker reports it, nothing from the record yet.
async fn depth(state: &AppState, name: String) -> QueueInfo {
    let (messages, consumers, error) = match state.transport.queue_depth(&name).await {
        Ok((messages, consumers)) => (Some(messages), Some(consumers), None),
        // A passive declare of a missing queue is refused.
        Err(scheduler_broker::BrokerError::Amqp(_)) => (
            None,
            None,
            Some("not declared yet (no worker or run has used it)".to_string()),
        ),
        Err(other) => (None, None, Some(other.to_string())),
    };
    QueueInfo {
        name,
        messages,
        consumers,
        error,
        waiting_steps: 0,
        waiting_runs: 0,
        served_by: vec![],
        no_worker: false,
    }
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
    let queues = load_queues(&state, &workers).await?;
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
