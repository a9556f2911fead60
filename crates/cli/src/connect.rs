//! Opening the services a command needs, with the context a user needs when
//! it fails. The mode ([`Mode`]) decides which implementation of the store
//! and of the transport a command gets; the commands never know which.

use crate::cli::Global;
use crate::mode::Mode;
use anyhow::Context;
use scheduler_broker::{Broker, BrokerConfig, Transport};
use scheduler_producer::Project;
use scheduler_tracker::{Embedded, EmbeddedConfig, EmbeddedQueue, Store, Tracker, TrackerConfig};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// The embedded store, opened once per process: the store and the queue
/// share its pool.
static EMBEDDED: OnceCell<Embedded> = OnceCell::const_new();

async fn embedded(g: &Global, mode: &Mode, max_connections: u32) -> anyhow::Result<Embedded> {
    let Mode::Embedded { path } = mode else {
        unreachable!("embedded() in the distributed mode")
    };
    let opened = EMBEDDED
        .get_or_try_init(|| async {
            tracing::info!("{}", mode.describe());
            let mut config = EmbeddedConfig::new(path);
            config.project = Some(g.project.clone());
            config.max_connections = max_connections.max(4);
            Embedded::open(&config).await
        })
        .await?;
    Ok(opened.clone())
}

/// The store of record, migrated.
pub async fn store(g: &Global, max_connections: u32) -> anyhow::Result<Arc<dyn Store>> {
    let mode = Mode::of(g)?;
    match &mode {
        Mode::Embedded { .. } => Ok(Arc::new(embedded(g, &mode, max_connections).await?)),
        Mode::Distributed { database_url, .. } => {
            tracing::info!("{}", mode.describe());
            let mut config = TrackerConfig::new(database_url);
            config.max_connections = max_connections;
            Ok(Arc::new(Tracker::open(&config).await?))
        }
    }
}

/// The transport: RabbitMQ, or the embedded store's queue; `name` shows in
/// RabbitMQ's connection list.
pub async fn transport(g: &Global, name: &str) -> anyhow::Result<Arc<dyn Transport>> {
    let mode = Mode::of(g)?;
    match &mode {
        Mode::Embedded { .. } => Ok(Arc::new(EmbeddedQueue::new(&embedded(g, &mode, 4).await?))),
        Mode::Distributed { amqp_url, .. } => Ok(Arc::new(broker(g, amqp_url, name).await?)),
    }
}

async fn broker(g: &Global, url: &str, name: &str) -> anyhow::Result<Broker> {
    let config = BrokerConfig {
        url: url.to_string(),
        queue_expires_ms: g.queue_expires_ms,
        queue_type: g.queue_type,
        delivery_limit: g.delivery_limit,
    };
    Ok(Broker::connect(&config, name).await?)
}

pub fn project(g: &Global) -> anyhow::Result<Project> {
    Project::new(&g.project).context("opening the project directory")
}
