//! `scheduler beat` (and `scheduler worker --beat`): fires the slots of
//! `schedules.json`. SIGTERM or Ctrl-C stops it between two slots (a slot
//! is recorded with its run in one transaction, or not at all); SIGHUP
//! re-reads the file.

use crate::cli::Global;
use crate::connect;
use scheduler_beat::BeatConfig;
use scheduler_broker::Transport;
use scheduler_producer::Project;
use scheduler_tracker::Store;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub async fn beat(g: &Global, timing: (u64, u64, u64)) -> anyhow::Result<ExitCode> {
    let project = connect::project(g)?;
    let store = connect::store(g, 4).await?;
    let transport = connect::transport(g, &format!("scheduler beat {}", std::process::id())).await?;
    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("beat stopping");
        token.cancel();
    });
    spawn(g, &project, store, transport.clone(), timing, shutdown)?.await??;
    transport.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Starts the beat as a task (`timing`: tick in ms, the on-time bound and
/// the late bound in seconds) that ends with `shutdown`; SIGHUP re-reads
/// `schedules.json`. Fails at once if the file does not validate.
pub fn spawn(
    g: &Global,
    project: &Project,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    (tick_ms, on_time_secs, late_after_secs): (u64, u64, u64),
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    scheduler_beat::load(project)?;
    let reload = Arc::new(Notify::new());
    let mut hup = signal(SignalKind::hangup())?;
    let notify = reload.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            notify.notify_one();
        }
    });
    let config = BeatConfig {
        queue: g.queue.clone(),
        tick: std::time::Duration::from_millis(tick_ms.max(10)),
        on_time: std::time::Duration::from_secs(on_time_secs.max(1)),
        late_after: std::time::Duration::from_secs(late_after_secs.max(1)),
    };
    Ok(tokio::spawn(scheduler_beat::run(
        store,
        transport,
        project.clone(),
        config,
        shutdown,
        reload,
    )))
}
