//! A worker and the UI in one process, for trying the UI and for the browser
//! tests until `scheduler ui` exists (then prefer the real binary):
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/ui_demo SCHEDULER_PROJECT=. \
//!   cargo run -p scheduler-ui --example serve -- --bind 127.0.0.1:8080
//! ```
//!
//! Reads DATABASE_URL, AMQP_URL, SCHEDULER_QUEUE, SCHEDULER_PROJECT,
//! SCHEDULER_QUEUE_EXPIRES_MS and SCHEDULER_UI_TOKEN like the CLI does.
//! `--no-worker` serves the UI alone.

use anyhow::Context;
use scheduler_broker::{Broker, BrokerConfig};
use scheduler_tracker::{Tracker, TrackerConfig};
use scheduler_ui::UiConfig;
use scheduler_worker::{Project, WorkerConfig};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bind = args
        .iter()
        .position(|a| a == "--bind")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let with_worker = !args.iter().any(|a| a == "--no-worker");

    let queue = env("SCHEDULER_QUEUE", "etl");
    let tracker = Tracker::open(&TrackerConfig::new(env(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/scheduler",
    )))
    .await?;
    let broker_config = BrokerConfig {
        url: env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        queue_expires_ms: std::env::var("SCHEDULER_QUEUE_EXPIRES_MS")
            .ok()
            .and_then(|v| v.parse().ok()),
    };
    let project = Project::new(&PathBuf::from(env("SCHEDULER_PROJECT", ".")))?;
    let shutdown = CancellationToken::new();
    let config = UiConfig {
        bind: bind.parse().context("--bind wants host:port")?,
        token: std::env::var("SCHEDULER_UI_TOKEN").ok().filter(|t| !t.is_empty()),
        queue: queue.clone(),
    };
    config.check()?;

    let worker = with_worker.then(|| {
        let (tracker, project, shutdown) = (tracker.clone(), project.clone(), shutdown.clone());
        let broker_config = broker_config.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            let broker = Broker::connect(&broker_config, "scheduler-ui-example-worker").await?;
            let config = WorkerConfig {
                queue,
                ..WorkerConfig::default()
            };
            scheduler_worker::worker::run(tracker, broker, project, config, shutdown, |_| {}).await
        })
    });

    let broker = Broker::connect(&broker_config, "scheduler-ui").await?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        stop.cancel();
    });
    let served = scheduler_ui::serve(listener, tracker, broker, project, config, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(w) = worker {
        w.await??;
    }
    served
}
