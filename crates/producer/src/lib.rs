//! The producer: the one place that starts runs and applies decisions about
//! them. `scheduler start`, the UI and the worker (its handlers and its
//! recovery) all go through it, so a run is always recorded before its
//! message is sent, and a message is only ever sent to the run's queue
//! after what it follows is committed.
//!
//! # Layout
//! - [`project`]: reading definitions from the project directory.
//! - [`trigger`]: validating, recording and publishing a new run.
//! - [`apply`]: writing a decision of the state machine and publishing
//!   what follows it; the routing rule.
//! - [`actions`]: retry and cancel.
//! - [`failpoint`]: named crash points for the crash-window tests.
//!
//! Architecture invariants: no process handling (it never runs a module:
//! the UI depends on it and must not be able to), no SQL and no AMQP (it
//! talks to a `dyn Store` and a `dyn Transport`). Every message it publishes
//! follows a committed write; a failed publish leaves the record in a state
//! recovery republishes from.

pub mod actions;
pub mod apply;
mod error;
pub mod failpoint;
pub mod project;
pub mod trigger;

pub use actions::{cancel, retry};
pub use apply::{Effect, apply, publish_noted, publish_written};
pub use error::ProducerError;
pub use project::{Project, ProjectError};
pub use trigger::{
    Recorded, Slot, admit_waiting, default_trigger, fire_slot, hostname, publish_start, record_and_start, record_run,
    record_run_for, start_run,
};
