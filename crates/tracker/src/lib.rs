//! The tracker: every read and write of the scheduler's record of truth in
//! PostgreSQL. Runs, executions (one row per attempt of a step), workers.
//!
//! # Layout
//! - [`store`]: the [`Store`] trait every caller uses, implemented here for
//!   PostgreSQL by [`Tracker`].
//! - [`connect`]: pool, create-the-database-if-missing, embedded migrations.
//! - `hot`: the hot path's own connections (generic plans, no ping).
//! - [`apply`]: the one statement that writes a decision of the state
//!   machine (close an execution, move the run, queue the next execution).
//! - [`runs`]: what the state machine reads about a run.
//! - [`schedules`]: schedule state and the slot ledger (a slot fires once).
//! - [`slots`]: recording a run, and its sequence's concurrency limit
//!   (admission under a per-sequence advisory lock).
//! - [`executions`]: claiming, leasing and the bookkeeping of one execution.
//! - [`workers`]: registration and heartbeats (which also renew leases).
//! - [`recovery`]: the reaper's lease and what it looks for.
//! - [`events`]: events (recorded with the changes that cause them) and
//!   their deliveries to alert targets: routing, claims, attempts.
//! - [`retention`]: pruning finished runs in small batches; storage figures.
//! - [`views`], [`ui_queries`]: read models for the CLI and the UI;
//!   [`history`]: a sequence's recent runs and step figures (its UI page);
//!   [`activity`]: the last hour's activity and the slot totals for `/metrics`.
//!
//! Architecture invariants: all SQL of the project lives in this crate. Every
//! state write is compare-and-set (`WHERE state = <expected>`) and reports
//! whether it applied; callers treat "did not apply" as a normal outcome
//! (a duplicate or stale message), never as an error. No function here holds
//! a transaction open across anything but SQL: never across a module run or a
//! broker round trip.

pub mod activity;
pub mod apply;
pub mod connect;
pub mod events;
pub mod executions;
pub mod history;
mod hot;
pub mod logs;
pub mod recovery;
pub mod retention;
pub mod runs;
pub mod schedules;
pub mod slots;
pub mod sqlite;
pub mod store;
pub mod ui_queries;
pub mod views;
pub mod workers;

pub use activity::{Activity, ModuleHistogram};
pub use apply::{ClaimFor, Close, Write, Written};
pub use connect::{Tracker, TrackerConfig};
pub use events::{AttemptRecord, DeliveryView, DueDelivery, EventRow, HeldGroup, NewEvent, Route};
pub use executions::{Claimed, ExecKey, ExecResult, OutputFacts, StepWatch};
pub use history::{SequenceHistory, StepStats};
pub use logs::{LogPiece, LogRow, LogState, omitted_line};
pub use recovery::{Expired, Stuck};
pub use retention::{
    EventCursor, EventPruneBatch, PRUNE_BATCH, PRUNE_PAUSE, PruneBatch, PruneCounts, PruneCursor, Retention,
    StorageFigures,
};
pub use schedules::{Cursor, LateSlot, ScheduleState, SlotView};
pub use slots::{Admitted, NewRun};
pub use sqlite::queue::EmbeddedQueue;
pub use sqlite::{Embedded, EmbeddedConfig};
pub use store::Store;
pub use ui_queries::StateCounts;
pub use views::{ExecutionView, QueueLoad, RunDetail, RunFilter, RunSummary, WorkerView};
pub use workers::{Held, WorkerInfo};

/// Errors from the record of truth.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error(
        "cannot connect to PostgreSQL at {url}: {source}. Start PostgreSQL, or point \
         DATABASE_URL (or --database-url) at a running server"
    )]
    Connect { url: String, source: sqlx::Error },
    #[error("applying the database migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the database at {url} was migrated by a newer version of scheduler (schema version {version} is \
         unknown to this one). Upgrade scheduler here (every worker, beat and UI on one database runs a \
         version at least as new as the newest that started on it), or point DATABASE_URL at another database"
    )]
    NewerSchema { url: String, version: i64 },
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("the embedded store {path} cannot be used: {what}")]
    Embedded { path: String, what: String },
    #[error("the database holds an unreadable value: {0}")]
    Corrupt(String),
}

pub type Result<T, E = TrackerError> = std::result::Result<T, E>;
