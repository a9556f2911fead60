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
pub mod placeholder;
pub mod policy;
pub mod retry;
pub mod state;

pub use definition::{DefinitionError, ModuleDef, Modules, OnStall, Sequence, Snapshot, SnapshotStep, Step};
pub use message::{DecodeError, MAX_MESSAGE_BYTES, MESSAGE_VERSION, Message};
pub use policy::{Concurrency, DEFAULT_QUEUE, OnConflict};
pub use retry::{RetryPolicy, RetrySettings};
pub use state::{ExecState, RunState};

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`, for
/// messages and logs (database and broker URLs alike).
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
