//! The worker process: register, consume, dispatch each message to its
//! handler on its own task, heartbeat, and shut down gracefully.
//!
//! Shutdown (first SIGTERM / Ctrl-C, i.e. `shutdown` fires): stop consuming,
//! report `draining`, let running modules finish for up to `drain_timeout`,
//! then stop the rest and hand their steps back as a new attempt; record the
//! worker as stopped. A second signal is the caller's business (the CLI kills
//! the running process groups and exits at once).

use crate::clock::{Clock, SystemClock};
use crate::config::WorkerConfig;
use crate::{handlers, heartbeat, keeper, reaper, step, watchdog};
use anyhow::Context as _;
use scheduler_broker::{Inbox, Incoming, Slots, Transport};
use scheduler_core::Message;
use scheduler_producer::{Project, failpoint};
use scheduler_tracker::{ExecKey, Store, WorkerInfo};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

/// Why the worker stopped a module before it ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Its run was canceled by an operator.
    RunCanceled,
    /// The worker could not renew its lease (database unreachable for a whole
    /// lease, or recovery gave the step to another worker): stop it so that
    /// two copies of a step never run at once.
    LeaseLost,
    /// Graceful shutdown ran past its bound: hand the step back.
    Shutdown,
    /// Its stall watch found it silent past `stall_secs` with
    /// `"on_stall": "kill"`: a failure of the step (its retries apply).
    Stalled,
}

/// A module this worker is running.
pub struct Active {
    pub stop: CancellationToken,
    pub reason: Arc<OnceLock<StopReason>>,
    pub since: Instant,
    pub pid: Option<u32>,
}

/// What every handler needs; shared by all tasks of one worker.
pub struct Ctx {
    pub store: Arc<dyn Store>,
    pub transport: Arc<dyn Transport>,
    pub project: Project,
    pub config: WorkerConfig,
    pub worker_id: Uuid,
    pub slots: Slots,
    pub active: Mutex<HashMap<ExecKey, Active>>,
    /// Set once shutdown begins: no local continuation, heartbeats say so.
    pub draining: AtomicBool,
    /// When the consumer last received a message (for the stall watchdog).
    pub last_delivery: Mutex<Instant>,
    /// What the worker's own timers read.
    pub clock: Arc<dyn Clock>,
    /// Where its modules' output goes.
    pub logs: Arc<crate::logs::Shipper>,
    /// Whether it reaches its database and broker, for `--health-file`.
    pub health: crate::health::Health,
    /// The module slots, apart from the runs in flight (`permits.rs`).
    pub permits: crate::permits::Permits,
}

impl Ctx {
    /// A worker's context: what [`run`] builds, and what a test builds to
    /// call [`handle_delivery`] directly.
    pub fn new(
        store: Arc<dyn Store>,
        transport: Arc<dyn Transport>,
        project: Project,
        config: WorkerConfig,
        worker_id: Uuid,
        slots: Slots,
        clock: Arc<dyn Clock>,
    ) -> Ctx {
        Ctx {
            logs: crate::logs::Shipper::new(store.clone(), config.logs),
            permits: crate::permits::Permits::new(config.concurrency, config.extra_runs, slots.clone()),
            store,
            transport,
            project,
            config,
            worker_id,
            slots,
            active: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            last_delivery: Mutex::new(clock.now()),
            clock,
            health: crate::health::Health::new(std::time::SystemTime::now()),
        }
    }

    /// What this worker registers itself as.
    pub fn info(&self) -> WorkerInfo {
        WorkerInfo {
            id: self.worker_id,
            host: scheduler_producer::hostname(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            concurrency: self.config.concurrency as u32,
            queues: self.config.queues.clone(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Stops one running module for `reason` (first reason wins).
    pub fn stop(&self, key: &ExecKey, reason: StopReason) {
        if let Some(a) = self.active.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            let _ = a.reason.set(reason);
            a.stop.cancel();
        }
    }

    pub fn stop_all(&self, reason: StopReason) {
        for a in self.active.lock().unwrap_or_else(|p| p.into_inner()).values() {
            let _ = a.reason.set(reason);
            a.stop.cancel();
        }
    }

    /// Process group ids of the running modules (for an emergency kill).
    pub fn running_pids(&self) -> Vec<u32> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|a| a.pid)
            .collect()
    }
}

/// Handle for the CLI: lets it kill the modules on a second signal.
#[derive(Clone)]
pub struct WorkerHandle {
    pub ctx: Arc<Ctx>,
}

/// Runs a worker until `shutdown` fires and it has drained. `on_ready` is
/// called once it consumes (tests and `scheduler run` wait for it).
pub async fn run(
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    project: Project,
    config: WorkerConfig,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(WorkerHandle),
) -> anyhow::Result<()> {
    let worker_id = Uuid::now_v7();
    for queue in &config.queues {
        transport
            .declare(queue)
            .await
            .with_context(|| format!("declaring queue {queue:?}"))?;
    }
    let mut inbox = transport
        .consume(
            &config.queues,
            config.concurrency.saturating_add(config.extra_runs),
            &format!("worker-{worker_id}"),
        )
        .await
        .context("opening the consumer channel")?;
    let ctx = Arc::new(Ctx::new(
        store,
        transport,
        project,
        config,
        worker_id,
        inbox.slots(),
        Arc::new(SystemClock),
    ));
    ctx.permits.start().await;
    ctx.store
        .register_worker(&ctx.info())
        .await
        .context("registering the worker")?;
    let keeper = keeper::start(&ctx).await;
    tracing::info!(%worker_id, queues = %ctx.config.queues.join(","), concurrency = ctx.config.concurrency, "worker started");
    on_ready(WorkerHandle { ctx: ctx.clone() });

    let tasks = TaskTracker::new();
    let beat_stop = CancellationToken::new();
    let keep = tokio::spawn(keeper::mind(ctx.clone(), keeper, beat_stop.clone()));
    let beat = tokio::spawn(heartbeat::run(ctx.clone(), beat_stop.clone()));
    let reap = tokio::spawn(reaper::run(ctx.clone(), beat_stop.clone()));

    let watch = tokio::spawn(watchdog::run(ctx.clone(), beat_stop.clone()));
    // Alerts: on their own task, never in a step's way.
    let alerts = ctx.config.alerts_every.map(|every| {
        let config = scheduler_alerts::sender::SenderConfig {
            every,
            ..scheduler_alerts::sender::SenderConfig::new(ctx.project.dir())
        };
        tokio::spawn(scheduler_alerts::sender::run(
            ctx.store.clone(),
            worker_id,
            config,
            beat_stop.clone(),
        ))
    });
    consume(&ctx, &mut inbox, &tasks, &shutdown).await;
    drain(&ctx, &mut inbox, &tasks).await;
    // The last output of the modules that just ended.
    ctx.logs.flush(std::time::Duration::from_secs(5)).await;
    beat_stop.cancel();
    let _ = beat.await;
    let _ = watch.await;
    if let Some(alerts) = alerts {
        let _ = alerts.await;
    }
    let _ = reap.await;
    let _ = keep.await;
    if let Some(path) = &ctx.config.health_file {
        crate::health::remove(path);
    }
    if let Err(e) = ctx.store.worker_stopped(worker_id).await {
        tracing::warn!(error = %e, "could not record the worker as stopped");
    }
    inbox.close().await;
    tracing::info!(%worker_id, "worker stopped");
    Ok(())
}

/// The consume loop: each delivery handled on its own task, until shutdown.
/// A lost consumer or connection is rebuilt; running modules go on.
async fn consume(ctx: &Arc<Ctx>, inbox: &mut Box<dyn Inbox>, tasks: &TaskTracker, shutdown: &CancellationToken) {
    // `inbox.next()` is the only branch besides shutdown: it is not
    // cancel-safe while it registers a consumer, so nothing else may win
    // the select (a lost registration would strand deliveries).
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            next = inbox.next() => match next {
                Ok(Some(incoming)) => {
                    *ctx.last_delivery.lock().unwrap_or_else(|p| p.into_inner()) = ctx.clock.now();
                    let ctx = ctx.clone();
                    tasks.spawn(async move { handle_delivery(&ctx, incoming).await });
                }
                // The consumer or the connection is gone (broker restart,
                // network cut, queue deleted): running modules go on; rebuild
                // the connection and the consumer, then resume.
                Ok(None) => {
                    tracing::warn!("the broker canceled this worker's consumer; reconnecting");
                    ctx.health.broker(false, std::time::SystemTime::now());
                    if !reconnect(ctx, inbox, shutdown).await { return }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the connection to RabbitMQ; running modules go on, reconnecting");
                    ctx.health.broker(false, std::time::SystemTime::now());
                    if !reconnect(ctx, inbox, shutdown).await { return }
                }
            }
        }
    }
}

/// Graceful shutdown: no new work; running modules may finish within
/// `drain_timeout`, then the rest are stopped and their steps handed back.
async fn drain(ctx: &Ctx, inbox: &mut Box<dyn Inbox>, tasks: &TaskTracker) {
    ctx.draining.store(true, Ordering::Relaxed);
    if let Err(e) = inbox.stop().await {
        tracing::warn!(error = %e, "could not cancel the consumer cleanly");
    }
    tasks.close();
    let busy = ctx.active.lock().unwrap_or_else(|p| p.into_inner()).len();
    if busy > 0 {
        tracing::info!(running = busy, bound = ?ctx.config.drain_timeout, "draining: waiting for running modules");
    }
    if tokio::time::timeout(ctx.config.drain_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(bound = ?ctx.config.drain_timeout, "drain bound reached: stopping running modules and handing their steps back");
        ctx.stop_all(StopReason::Shutdown);
        let bound = ctx.config.kill_grace + std::time::Duration::from_secs(10);
        if tokio::time::timeout(bound, tasks.wait()).await.is_err() {
            tracing::error!("some steps did not finish after their modules were stopped; recovery will take them over");
        }
    }
}

/// Reconnects to the broker with backoff (0.5 s doubling to 15 s) until it
/// answers or shutdown begins; returns false on shutdown. Deliveries taken
/// before the loss cannot be acknowledged any more: RabbitMQ redelivers
/// them and the idempotent handlers drop what was already done.
async fn reconnect(ctx: &Ctx, inbox: &mut Box<dyn Inbox>, shutdown: &CancellationToken) -> bool {
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        let attempt = async {
            ctx.transport.reconnect().await?;
            for queue in &ctx.config.queues {
                ctx.transport.declare(queue).await?;
            }
            inbox.reopen().await
        };
        match attempt.await {
            Ok(()) => {
                tracing::info!("reconnected to RabbitMQ; consuming again");
                ctx.health.broker(true, std::time::SystemTime::now());
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "RabbitMQ still unreachable");
                delay = (delay * 2).min(std::time::Duration::from_secs(15));
            }
        }
    }
}

/// Handles one delivery to its end: decodes it, hands it to its handler,
/// which settles it (acknowledged once its effect is committed, requeued
/// when the store is unavailable) and, for a step, runs its module and the
/// steps it continues into. Undecodable input goes to the dead-letter
/// queue: retrying it can never succeed.
pub async fn handle_delivery(ctx: &Ctx, incoming: Incoming) {
    if failpoint::once(failpoint::SWALLOW_DELIVERY) {
        tracing::warn!("failpoint swallow-delivery: dropping a delivery without acknowledging it");
        std::mem::forget(incoming);
        return;
    }
    let message = match Message::decode(&incoming.data) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, bytes = incoming.data.len(), "rejecting a malformed message to the dead-letter queue");
            // Dead-lettering is final for this message: it cannot be handled.
            if let Err(e) = incoming.dead_letter().await {
                tracing::warn!(error = %e, "could not reject the malformed message");
            }
            return;
        }
    };
    let span = tracing::info_span!("message", kind = message.kind(), run_id = %message.run_id());
    async move {
        match message {
            Message::ExecModule { run_id, step, attempt } => {
                step::handle(ctx, incoming, ExecKey { run_id, step, attempt }).await;
            }
            other => handlers::handle(ctx, incoming, other).await,
        }
    }
    .instrument(span)
    .await
}
