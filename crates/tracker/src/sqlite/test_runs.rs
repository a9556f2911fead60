//! Runs for the embedded store's unit tests: created and started, their
//! first step claimed by a worker, as a worker's `start_etl` leaves them.

use super::Embedded;
use crate::{ClaimFor, NewRun, Store, Write};
use scheduler_core::machine::{Plan, RunMove, StepAttempt};
use scheduler_core::{Modules, RunState, Sequence};
use std::time::Duration;
use uuid::Uuid;

/// A run of `body` (a sequence's steps over modules `m` and `n`) on queue `q1`.
pub(super) fn new_run(body: &str) -> NewRun {
    let modules = Modules::parse("modules.json", r#"{"m": {"cmd": "./m.sh"}, "n": {"cmd": "./n.sh"}}"#).unwrap();
    let seq = Sequence::parse("s", "etl_sequences/s.json", body, &modules).unwrap();
    NewRun {
        id: Uuid::now_v7(),
        queue: "q1".into(),
        trigger: "test".into(),
        snapshot: seq.snapshot(&modules, "q1"),
        schedule: None,
        logical_date: None,
    }
}

/// Records `run`, moves it to `running` and inserts its first step claimed
/// by `worker`.
pub(super) async fn start_claimed(t: &Embedded, run: &NewRun, worker: Uuid) {
    t.create_run(run).await.unwrap();
    let starting = Plan {
        run: Some(RunMove {
            from: RunState::Queued,
            to: RunState::Running,
        }),
        queue: Some(StepAttempt::at(0, 1)),
        ..Plan::default()
    };
    let queues = ["q1".to_string()];
    let w = t
        .apply(&Write {
            run_id: run.id,
            close: None,
            plan: &starting,
            claim_for: Some(ClaimFor {
                worker_id: worker,
                lease: Duration::from_secs(30),
                queues: &queues,
            }),
        })
        .await
        .unwrap();
    assert!(w.claimed.is_some(), "{w:?}");
}
