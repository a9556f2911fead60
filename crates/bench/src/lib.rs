//! Benchmarks, kept out of the production crates: the UI benchmark
//! (`scheduler bench-ui`: a year of synthetic history, then the pages'
//! server-side latency), the retention benchmark (`scheduler bench-prune`:
//! half of that history pruned while a worker runs steps), the capture
//! benchmark (`scheduler bench-flood`: a module printing 50 MB under a worker
//! against the same to `/dev/null`), what `scheduler bench` needs besides
//! the store (`machine`: CPU and memory from `/proc`, the wait for a quiet
//! machine; `disk`: the disks' writes and flushes; `worker`: a real
//! `scheduler worker` process) and the SQL the
//! benchmarks need beyond the store's contract (filling a database of their
//! own, timing a set of runs, emptying it).
//!
//! Architecture invariant: nothing here is reachable from a worker or the
//! UI; only the CLI's `bench`, `bench-ui`, `bench-prune` and `bench-flood` commands call
//! it, and only on a database whose name says it is a benchmark's (or that
//! the CLI's `bench` derives for itself).

pub mod disk;
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

    /// The server's write-transaction and log counters now, exact and
    /// immediate (unlike `pg_stat_database`, which a backend updates at most
    /// once a second, or ten seconds after it goes idle): the next
    /// transaction id (one is given to each transaction that writes, read
    /// without taking one) and the log's position in bytes. Cluster-wide.
    pub async fn write_counters(&self) -> sqlx::Result<PgCounters> {
        let (next_xid, wal_bytes): (i64, i64) = sqlx::query_as(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(PgCounters { next_xid, wal_bytes })
    }
}

/// See [`BenchDb::write_counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgCounters {
    pub next_xid: i64,
    pub wal_bytes: i64,
}

/// PostgreSQL's writes per module execution between two readings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PgPerExecution {
    /// Transactions that wrote (each one commits, and a synchronous commit
    /// waits for its log flush).
    pub write_transactions: f64,
    pub wal_kib: f64,
}

impl PgCounters {
    pub fn per_execution(self, later: PgCounters, executions: u64) -> PgPerExecution {
        let n = executions.max(1) as f64;
        PgPerExecution {
            write_transactions: (later.next_xid - self.next_xid).max(0) as f64 / n,
            wal_kib: (later.wal_bytes - self.wal_bytes).max(0) as f64 / 1024.0 / n,
        }
    }
}
