//! The pure core of the scheduler: what a sequence *is*, what travels on the
//! broker, and how a run moves between states.
//!
//! # Layout
//! - [`definition`]: parsing and validating `etl_sequences/*.json` and
//!   `modules.json` from text, and freezing them into a run [`Snapshot`].
//! - [`message`]: the versioned JSON messages (`start_etl`, `exec_module`,
//!   `end_etl`, `error_handler`).
//! - [`machine`]: the run and step state machine: given what is recorded and
//!   what happened, what to write and what to publish.
//!
//! Architecture invariant: this crate does no I/O. It reads no file, opens no
//! socket and never looks at the clock; callers pass text and times in. That
//! is what lets every decision be unit-tested exhaustively.

pub mod definition;
pub mod machine;
pub mod message;
pub mod state;

pub use definition::{DefinitionError, ModuleDef, Modules, Sequence, Snapshot, SnapshotStep, Step};
pub use message::{DecodeError, MAX_MESSAGE_BYTES, MESSAGE_VERSION, Message};
pub use state::{ExecState, RunState};
