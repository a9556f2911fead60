//! The worker and the application layer around it: it consumes the broker's
//! messages, asks `scheduler_core::machine` what each one means given what
//! PostgreSQL recorded, applies the decision through the tracker, runs
//! modules through the executor, and publishes what follows.
//!
//! # Layout
//! - [`worker`]: the consume loop, slots, graceful shutdown: [`worker::run`];
//!   [`worker::handle_delivery`], what the loop does with one delivery
//!   (callable from a test with a [`Ctx`] and no process around it).
//! - [`handlers`]: `start_etl`, `end_etl`, `error_handler`.
//! - [`step`]: `exec_module`: claim, run the module, record, continue.
//! - [`permits`]: the module slots (`--concurrency`), apart from the runs in
//!   flight, and the extra room that lets recording overlap the next module.
//! - [`permit_queue`]: the permits themselves, handed to waiting
//!   continuations before waiting fresh deliveries.
//! - [`module`]: turning a claimed step into a process spec, and its outcome
//!   into the recorded result.
//! - [`clock`]: the time the worker's own timers read, given to it.
//! - [`heartbeat`]: worker liveness, lease renewal, cancel and lease-loss kills.
//! - [`health`]: the health file a probe reads (`--health-file`), and its
//!   verdict (`scheduler health`).
//! - [`keeper`]: starting and minding the keeper process beside the worker.
//! - [`logs`]: shipping every byte of module output to the record, in
//!   batches, apart from the step's commit.
//! - [`contract`]: the output contract (a declared local output must be
//!   written for an exit 0 to succeed) and the input check.
//! - [`stall`]: the stall watch of a module with `stall_secs`.
//! - [`watchdog`]: rebuilding a consumer that silently stopped receiving.
//! - [`reaper`]: recovery: unpublished work, expired leases, stuck runs.
//!
//! Starting runs and applying decisions is the producer's
//! (`scheduler_producer`); the worker calls it.
//!
//! Architecture invariants: no SQL (it holds a `dyn Store`), no AMQP details
//! (a `dyn Transport`), no process handling (the executor) here. Every message is
//! handled idempotently: decisions come from the recorded state, writes are
//! compare-and-set, and a message whose write does not apply is acknowledged
//! and dropped with a log line. A delivery is acknowledged once its effect is
//! committed; an `exec_module` delivery once its step is claimed, before the
//! module runs.

pub mod clock;
pub mod config;
pub mod contract;
pub mod handlers;
pub mod health;
pub mod heartbeat;
pub mod keeper;
pub mod logs;
pub mod module;
pub mod permit_queue;
pub mod permits;
pub mod reaper;
pub mod stall;
pub mod step;
pub mod watchdog;
pub mod worker;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::WorkerConfig;
pub use worker::{Ctx, StopReason, handle_delivery};
