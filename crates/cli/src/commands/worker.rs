//! `scheduler worker` and `scheduler run`.
//!
//! Signals: the first SIGTERM or Ctrl-C starts a graceful shutdown (stop
//! consuming, let running modules finish within `--drain-timeout`, hand the
//! rest back); a second one kills the running modules' process groups and
//! exits at once (their steps are re-run by recovery).

use crate::cli::{Global, WorkerArgs};
use crate::{connect, output};
use scheduler_producer::{default_trigger, start_run};
use scheduler_tracker::Admitted;
use scheduler_worker::WorkerConfig;
use scheduler_worker::worker::WorkerHandle;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

fn config(g: &Global, a: &WorkerArgs) -> anyhow::Result<WorkerConfig> {
    if a.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    if a.lease < 3 {
        anyhow::bail!("--lease must be at least 3 seconds");
    }
    let lease = Duration::from_secs(a.lease);
    if a.prune_keep_last.is_some() && a.prune_older_than.is_none() {
        anyhow::bail!("--prune-keep-last (SCHEDULER_PRUNE_KEEP_LAST) needs --prune-older-than: say which runs may go");
    }
    Ok(WorkerConfig {
        concurrency: a.concurrency,
        extra_runs: a.extra_runs.unwrap_or(a.concurrency),
        queues: queues(&g.queue)?,
        lease,
        heartbeat_every: lease / 3,
        drain_timeout: Duration::from_secs(a.drain_timeout),
        default_timeout: (a.module_timeout > 0).then(|| Duration::from_secs(a.module_timeout)),
        kill_grace: Duration::from_secs(a.kill_grace),
        max_attempts: a.max_attempts.max(1),
        reap_every: Duration::from_secs(a.reap_every.max(1)),
        republish_after: Duration::from_secs(a.republish_after),
        stall_after: Duration::from_secs(a.stall_after.max(1)),
        prune: a.prune_older_than.map(|older_than| scheduler_tracker::Retention {
            older_than,
            keep_last: a.prune_keep_last,
        }),
        prune_every: Duration::from_secs(a.prune_every.max(1)),
        keeper: keeper_command(),
        keeper_env: keeper_env(g)?,
        health_file: a.health_file.clone(),
        logs: scheduler_worker::logs::LogLimits {
            cap: a.log_cap,
            ..Default::default()
        },
        ..WorkerConfig::default()
    })
}

/// SIGTERM from the kernel when the process that started this one dies
/// (`PR_SET_PDEATHSIG`), whatever killed it; an error if it is gone already.
fn stop_with_parent(parent: u32) -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .map_err(|e| anyhow::anyhow!("--stop-with-parent: could not ask for a parent-death signal: {e}"))?;
    if nix::unistd::getppid().as_raw() as u32 != parent {
        anyhow::bail!("--stop-with-parent {parent}: that process is gone (or did not start this worker)");
    }
    Ok(())
}

/// What the keeper needs to find the store the worker uses: the same mode,
/// with the embedded store's path made absolute (the keeper may start
/// elsewhere).
fn keeper_env(g: &Global) -> anyhow::Result<Vec<(std::ffi::OsString, std::ffi::OsString)>> {
    Ok(match crate::mode::Mode::of(g)? {
        crate::mode::Mode::Embedded { path } => {
            let path = std::path::absolute(&path).unwrap_or(path);
            vec![("DATABASE_URL".into(), format!("sqlite://{}", path.display()).into())]
        }
        crate::mode::Mode::Distributed { database_url, amqp_url } => vec![
            ("DATABASE_URL".into(), database_url.into()),
            ("AMQP_URL".into(), amqp_url.into()),
        ],
    })
}

/// The queues a worker serves: `--queue etl,heavy`, each checked.
fn queues(list: &str) -> anyhow::Result<Vec<String>> {
    let mut queues: Vec<String> = Vec::new();
    for q in list.split(',').map(str::trim) {
        scheduler_core::policy::check_queue(q).map_err(|e| {
            anyhow::anyhow!("--queue / SCHEDULER_QUEUE: {e} (a comma-separated list such as etl,heavy)")
        })?;
        if !queues.iter().any(|x| x == q) {
            queues.push(q.to_string());
        }
    }
    Ok(queues)
}

/// This very program, as `scheduler keeper`.
fn keeper_command() -> Option<Vec<std::ffi::OsString>> {
    match std::env::current_exe() {
        Ok(exe) => Some(vec![exe.into_os_string(), "keeper".into()]),
        Err(e) => {
            tracing::error!(error = %e, "cannot find this program's path to start the keeper");
            None
        }
    }
}

/// Installs the two-stage signal handling; returns the shutdown token.
fn handle_signals(handle: Arc<OnceLock<WorkerHandle>>) -> anyhow::Result<CancellationToken> {
    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutting down: no new work; running modules may finish (signal again to stop at once)");
        token.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        let pids = handle.get().map(|h| h.ctx.running_pids()).unwrap_or_default();
        tracing::warn!(
            modules = pids.len(),
            "second signal: killing running modules and exiting now"
        );
        for pid in pids {
            scheduler_executor::kill_group_now(pid);
        }
        std::process::exit(130);
    });
    Ok(shutdown)
}

pub async fn worker(g: &Global, args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    if let Some(parent) = args.stop_with_parent {
        stop_with_parent(parent)?;
    }
    let config = config(g, args)?;
    // A previous run's report must not vouch for this one before it is up.
    if let Some(path) = &config.health_file {
        scheduler_worker::health::remove(path);
    }
    let project = connect::project(g)?;
    let store = connect::store(g, args.concurrency as u32 + 4).await?;
    let transport = connect::transport(g, &format!("scheduler worker {}", std::process::id())).await?;
    let handle = Arc::new(OnceLock::new());
    let shutdown = handle_signals(handle.clone())?;
    let beat = match args.beat {
        true => Some(super::beat::spawn(
            g,
            &project,
            store.clone(),
            transport.clone(),
            (250, 10, 60),
            shutdown.clone(),
        )?),
        false => None,
    };
    scheduler_worker::worker::run(store, transport.clone(), project, config, shutdown, |h| {
        let _ = handle.set(h);
    })
    .await?;
    if let Some(beat) = beat {
        beat.await??;
    }
    transport.close().await;
    Ok(ExitCode::SUCCESS)
}

pub async fn run(g: &Global, sequence: &str, args: &WorkerArgs, wait_timeout: Option<u64>) -> anyhow::Result<ExitCode> {
    let mut config = config(g, args)?;
    let project = connect::project(g)?;
    let modules = project.modules()?;
    let seq = project.sequence(sequence, &modules)?;
    // One process runs the whole sequence: its worker serves every queue
    // the sequence's steps are routed to.
    let run_queue = seq.run_queue(&g.queue);
    config.queues = vec![run_queue.clone()];
    for step in seq.snapshot(&modules, &run_queue).steps {
        if let Some(q) = step.queue
            && !config.queues.contains(&q)
        {
            config.queues.push(q);
        }
    }
    let store = connect::store(g, args.concurrency as u32 + 4).await?;
    let transport = connect::transport(g, &format!("scheduler run {}", std::process::id())).await?;
    let handle = Arc::new(OnceLock::new());
    let shutdown = handle_signals(handle.clone())?;
    let worker = tokio::spawn(scheduler_worker::worker::run(
        store.clone(),
        transport.clone(),
        project.clone(),
        config,
        shutdown.clone(),
        move |h| {
            let _ = handle.set(h);
        },
    ));
    let started = Instant::now();
    let recorded = start_run(
        &project,
        &*store,
        &*transport,
        sequence,
        &g.queue,
        &default_trigger("cli-run"),
    )
    .await?;
    let run_id = recorded.run_id;
    match &recorded.admitted {
        Admitted::Queued => eprintln!("run {run_id} of {sequence} started"),
        Admitted::Waiting(note) => eprintln!("run {run_id} of {sequence} is {note}; it starts when a slot frees"),
        Admitted::Skipped(note) => eprintln!("run {run_id} of {sequence} {note}"),
    }
    let deadline = wait_timeout.map(|s| started + Duration::from_secs(s));
    let final_state = loop {
        if shutdown.is_cancelled() || worker.is_finished() {
            break None;
        }
        if let Some(view) = store.run_view(run_id).await?
            && view.state.is_final()
        {
            break Some(view.state);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            eprintln!(
                "error: run {run_id} did not finish within {}s",
                wait_timeout.unwrap_or(0)
            );
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    shutdown.cancel();
    match worker.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("error: the worker stopped: {e:#}"),
        Err(e) => eprintln!("error: the worker crashed: {e}"),
    }
    transport.close().await;
    if let Some(detail) = store.run_detail(run_id).await? {
        print!("{}", output::run_detail(&detail));
    }
    Ok(match final_state {
        Some(scheduler_core::RunState::Succeeded) => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}
