//! Opening the services a command needs, with the context a user needs when
//! it fails.

use crate::cli::Global;
use anyhow::Context;
use scheduler_broker::{Broker, BrokerConfig};
use scheduler_tracker::{Tracker, TrackerConfig};
use scheduler_worker::Project;

pub async fn tracker(g: &Global, max_connections: u32) -> anyhow::Result<Tracker> {
    let mut config = TrackerConfig::new(&g.database_url);
    config.max_connections = max_connections;
    Ok(Tracker::open(&config).await?)
}

pub async fn broker(g: &Global, name: &str) -> anyhow::Result<Broker> {
    let config = BrokerConfig {
        url: g.amqp_url.clone(),
        queue_expires_ms: g.queue_expires_ms,
    };
    Ok(Broker::connect(&config, name).await?)
}

pub fn project(g: &Global) -> anyhow::Result<Project> {
    Project::new(&g.project).context("opening the project directory")
}
