//! What `scheduler keeper` does once its worker is gone and its modules are
//! stopped (`scheduler_executor::keeper::keep`): tell the store, so that
//! recovery re-attempts the worker's steps at its next pass (seconds)
//! instead of when their leases lapse. The lease stays the backstop when the
//! whole host is gone.

use crate::cli::Global;
use std::time::Duration;

/// Ends the leases the dead worker held. Best effort, bounded: a store that
/// does not answer within a few seconds only means recovery waits for the
/// leases, as it would without a keeper.
pub fn report_death(g: &Global, worker_id: &str) {
    let Ok(worker) = worker_id.parse::<uuid::Uuid>() else {
        tracing::warn!(
            worker_id,
            "keeper: the worker id is not a UUID; not reporting its death"
        );
        return;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "keeper: cannot report the worker's death (no runtime)");
            return;
        }
    };
    let reported = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            let store: Box<dyn scheduler_tracker::Store> = match crate::mode::Mode::of(g)? {
                crate::mode::Mode::Embedded { path } => {
                    let mut config = scheduler_tracker::EmbeddedConfig::new(path);
                    config.max_connections = 2;
                    Box::new(scheduler_tracker::Embedded::open(&config).await?)
                }
                crate::mode::Mode::Distributed { database_url, .. } => {
                    let mut config = scheduler_tracker::TrackerConfig::new(database_url);
                    config.max_connections = 1;
                    Box::new(scheduler_tracker::Tracker::connect(&config).await?)
                }
            };
            let ended = store.worker_died(worker).await;
            store.close().await;
            anyhow::Ok(ended?)
        })
        .await
    });
    match reported {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::warn!(
            worker_id,
            steps = n,
            "keeper: the worker is gone; its steps are handed to recovery now"
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "keeper: could not report the worker's death; recovery waits for its leases")
        }
        Err(_) => tracing::warn!("keeper: the store did not answer; recovery waits for the worker's leases"),
    }
}
