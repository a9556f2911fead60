//! The states a run and a step execution can be in, and their text form in
//! the database and the JSON output.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The state of a run. `Succeeded`, `Failed`, `Canceled` and `Skipped` are
/// final: no transition leaves them except an explicit retry of a failed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Recorded, waiting for a slot of its sequence's `max_concurrent`; it
    /// moves to `queued` (first in, first out) when one frees.
    Waiting,
    /// Recorded, `start_etl` published or about to be; no step queued yet.
    Queued,
    /// Started: exactly one step is queued or executing.
    Running,
    Succeeded,
    Failed,
    Canceled,
    /// Never started: its sequence's concurrency policy turned it away.
    Skipped,
}

/// The state of one execution (one attempt of one step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecState {
    /// Recorded and (to be) published as `exec_module`; nobody runs it yet.
    Queued,
    /// Claimed by a worker holding a lease; the module process may be alive.
    Running,
    Succeeded,
    Failed,
    /// Never ran, or was stopped, because its run was canceled.
    Canceled,
    /// Its worker went away (shutdown past the drain bound, lost lease); a
    /// later attempt of the same step replaces it.
    Abandoned,
}

macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),* }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($ty::$variant),)*
                    other => Err(format!(
                        "unknown state {other:?}; expected one of: {}",
                        [$($text),*].join(", ")
                    )),
                }
            }
        }
    };
}

text_enum!(RunState {
    Waiting => "waiting",
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Canceled => "canceled",
    Skipped => "skipped",
});

text_enum!(ExecState {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Canceled => "canceled",
    Abandoned => "abandoned",
});

impl RunState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Canceled | RunState::Skipped
        )
    }
}

impl ExecState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ExecState::Succeeded | ExecState::Failed | ExecState::Canceled | ExecState::Abandoned
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_text() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), *s);
        }
        for s in ExecState::ALL {
            assert_eq!(s.as_str().parse::<ExecState>().unwrap(), *s);
        }
        assert!(
            "done"
                .parse::<RunState>()
                .unwrap_err()
                .contains("waiting, queued, running")
        );
    }
}
