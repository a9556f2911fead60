//! Benchmarks, kept out of the production crates: the UI benchmark
//! (`scheduler bench-ui`: a year of synthetic history, then the pages'
//! server-side latency), the retention benchmark (`scheduler bench-prune`:
//! half of that history pruned while a worker runs steps), the capture
//! benchmark (`scheduler bench-flood`: a module printing 50 MB under a worker
//! against the same to `/dev/null`), what `scheduler bench` needs besides
//! the store (`machine`: CPU and memory from `/proc`, the wait for a quiet
//! machine; `worker`: a real `scheduler worker` process) and the SQL the
//! benchmarks need beyond the store's contract (filling a database of their
//! own, timing a set of runs, emptying it).
//!
//! Architecture invariant: nothing here is reachable from a worker or the
//! UI; only the CLI's `bench`, `bench-ui`, `bench-prune` and `bench-flood` commands call
//! it, and only on a database whose name says it is a benchmark's (or that
//! the CLI's `bench` derives for itself).

pub mod fill;
pub mod flood;
pub mod machine;
pub mod prune;
pub mod stats;
pub mod ui;
pub mod worker;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// A pool on a benchmark's own database, for the SQL in this crate.
#[derive(Debug, Clone)]
pub struct BenchDb {
    pool: PgPool,
}

impl BenchDb {
    /// Connects to a database that exists and is migrated (open it with
    /// `scheduler_tracker::Tracker::open` first).
    pub async fn connect(url: &str) -> sqlx::Result<BenchDb> {
        let pool = PgPoolOptions::new().max_connections(4).connect(url).await?;
        Ok(BenchDb { pool })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
