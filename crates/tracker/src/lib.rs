//! The tracker: every read and write of the scheduler's record of truth in
//! PostgreSQL. Runs, executions (one row per attempt of a step), workers.
//!
//! # Layout
//! - [`connect`]: pool, create-the-database-if-missing, embedded migrations.
//! - [`runs`]: recording a run and moving it between states.
//! - [`executions`]: claiming, leasing and finishing one step execution.
//! - [`workers`]: registration and heartbeats (which also renew leases).
//! - [`views`]: read models for the CLI and the UI.
//!
//! Architecture invariants: all SQL of the project lives in this crate. Every
//! state write is compare-and-set (`WHERE state = <expected>`) and reports
//! whether it applied; callers treat "did not apply" as a normal outcome
//! (a duplicate or stale message), never as an error. No function here holds
//! a transaction open across anything but SQL: never across a module run or a
//! broker round trip.

pub mod bench_fill;
pub mod connect;
pub mod executions;
pub mod recovery;
pub mod runs;
pub mod stats;
pub mod ui_queries;
pub mod views;
pub mod workers;

pub use connect::{Tracker, TrackerConfig};
pub use executions::{Claimed, ExecKey, ExecResult, Finished};
pub use runs::{Applied, NewRun, Transition};
pub use views::{ExecutionView, RunDetail, RunFilter, RunSummary, WorkerView};
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
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("the database holds an unreadable value: {0}")]
    Corrupt(String),
}

pub type Result<T, E = TrackerError> = std::result::Result<T, E>;

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`, for
/// messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &creds[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            super::redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
    }
}
