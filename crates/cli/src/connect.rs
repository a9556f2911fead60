//! Opening the services a command needs, with the context a user needs when
//! it fails.

use crate::cli::Global;
use anyhow::Context;
use scheduler_broker::{Broker, BrokerConfig, Transport};
use scheduler_producer::Project;
use scheduler_tracker::{Store, Tracker, TrackerConfig};
use std::sync::Arc;

/// The store of record (PostgreSQL), migrated.
pub async fn store(g: &Global, max_connections: u32) -> anyhow::Result<Arc<dyn Store>> {
    let mut config = TrackerConfig::new(&g.database_url);
    config.max_connections = max_connections;
    Ok(Arc::new(Tracker::open(&config).await?))
}

/// The transport (RabbitMQ); `name` shows in the broker's connection list.
pub async fn transport(g: &Global, name: &str) -> anyhow::Result<Arc<dyn Transport>> {
    Ok(Arc::new(broker(g, name).await?))
}

pub async fn broker(g: &Global, name: &str) -> anyhow::Result<Broker> {
    let config = BrokerConfig {
        url: g.amqp_url.clone(),
        queue_expires_ms: g.queue_expires_ms,
        queue_type: g.queue_type,
        delivery_limit: g.delivery_limit,
    };
    Ok(Broker::connect(&config, name).await?)
}

pub fn project(g: &Global) -> anyhow::Result<Project> {
    Project::new(&g.project).context("opening the project directory")
}
