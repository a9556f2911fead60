//! The worker and the application layer around it: it consumes the broker's
//! messages, asks `scheduler_core::machine` what each one means given what
//! PostgreSQL recorded, applies the decision through the tracker, runs
//! modules through the executor, and publishes what follows.
//!
//! # Layout
//! - [`project`]: reading definitions from the project directory.
//! - [`trigger`]: recording and publishing a new run (`scheduler start`).
//! - [`worker`]: the consume loop, slots, graceful shutdown: [`worker::run`].
//! - [`handlers`]: `start_etl`, `end_etl`, `error_handler`.
//! - [`step`]: `exec_module`: claim, run the module, record, publish the next.
//! - [`heartbeat`]: worker liveness, lease renewal, cancel and lease-loss kills.
//! - [`keeper`]: starting and minding the keeper process beside the worker.
//! - [`watchdog`]: rebuilding a consumer that silently stopped receiving.
//! - [`reaper`]: recovery: unpublished work, expired leases, stuck runs.
//!
//! Architecture invariants: no SQL (that is the tracker), no AMQP details
//! (the broker), no process handling (the executor) here. Every message is
//! handled idempotently: decisions come from the recorded state, writes are
//! compare-and-set, and a message whose write does not apply is acknowledged
//! and dropped with a log line. A delivery is acknowledged once its effect is
//! committed; an `exec_module` delivery once its step is claimed, before the
//! module runs.

pub mod config;
pub mod failpoint;
pub mod handlers;
pub mod heartbeat;
pub mod keeper;
pub mod project;
pub mod reaper;
pub mod step;
pub mod trigger;
pub mod watchdog;
pub mod worker;

pub use config::WorkerConfig;
pub use project::{Project, ProjectError};
pub use trigger::{TriggerError, start_run};
