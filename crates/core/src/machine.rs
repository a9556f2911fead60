//! The run state machine, as pure functions: given what PostgreSQL recorded
//! and what just happened, decide what to write and what to publish. The
//! worker applies a [`Decision`] with compare-and-set writes (`WHERE state =
//! <the state this decision was made from>`), so a decision made from a stale
//! view simply does not apply.
//!
//! ```text
//!   waiting ──slot frees──▶ queued          (a new run of a limited sequence
//!     │ cancel                 │             may also be recorded `skipped`)
//!     ▼                        │ start_etl            last step ok -> end_etl
//!  canceled ◀── cancel ── queued/running ─────────────────────────▶ succeeded
//!                              │ step failed, retries spent -> error_handler
//!                              └──────────────────────────────────▶ failed ──┐
//!                                                      running ◀── retry ────┘
//! ```
//!
//! Who moves a run out of each state: `waiting` — the hand-over of a freed
//! slot (the tracker's admission, not this module), or a cancel; `queued` —
//! the worker handling `start_etl` (or a cancel); `running` — the worker
//! handling `end_etl` or `error_handler` (or a cancel); `failed` — only an
//! operator's retry (within the sequence's limit). `skipped` is final.

use crate::message::Message;
use crate::retry::RetryPolicy;
use crate::state::{ExecState, RunState};
use std::time::Duration;
use uuid::Uuid;

/// What the decision functions need to know about a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunView {
    pub id: Uuid,
    pub state: RunState,
    pub step_count: u32,
}

/// Writes and publishes, in the order they are applied: the run move, the
/// failure and the queued execution in one statement (the tracker's
/// `Store::apply`), then the publish once that committed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Move the run between states (compare-and-set on `from`).
    pub run: Option<RunMove>,
    /// Record the failing step and reason with the run.
    pub failure: Option<Failure>,
    /// Insert a new queued execution of a step. Applies only if the run
    /// move applied, or, without a move, only while the run is `running`.
    pub queue: Option<StepAttempt>,
    /// Publish after the commit, only if every write above applied.
    pub publish: Option<Message>,
}

/// A compare-and-set move of a run from one state to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunMove {
    pub from: RunState,
    pub to: RunState,
}

/// Why a run failed: the step (0-based) and a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub step: u32,
    pub reason: String,
}

/// One attempt (1-based) of one step (0-based) to queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StepAttempt {
    pub step: u32,
    pub attempt: u32,
    /// How many retries of the step's failures this attempt is (0: none).
    /// Attempts that replace one lost to a dead worker keep the number.
    pub retry: u32,
    /// A retry waits this long before it is due; it is published when due
    /// (by recovery), not with the plan.
    pub delay: Option<Duration>,
}

const fn moves(from: RunState, to: RunState) -> Option<RunMove> {
    Some(RunMove { from, to })
}

const fn queued(step: u32, attempt: u32) -> Option<StepAttempt> {
    Some(StepAttempt {
        step,
        attempt,
        retry: 0,
        delay: None,
    })
}

/// What the retry decision needs about a failed step: its policy, how many
/// retries it already had, and a jitter sample in `[-1, 1]` drawn by the
/// caller.
#[derive(Debug, Clone, Copy)]
pub struct Retry<'a> {
    pub policy: &'a RetryPolicy,
    pub done: u32,
    pub jitter: f64,
}

/// The policy of a step that is never retried.
pub const NO_RETRY: RetryPolicy = RetryPolicy {
    retries: 0,
    delay_secs: 0.0,
    backoff: 1.0,
    max_delay_secs: 0.0,
    jitter_factor: 0.0,
    on_exit_codes: None,
};

impl StepAttempt {
    /// Attempt `attempt` of `step`, not a retry, due at once.
    pub const fn at(step: u32, attempt: u32) -> StepAttempt {
        StepAttempt {
            step,
            attempt,
            retry: 0,
            delay: None,
        }
    }
}

impl Retry<'static> {
    /// No retry left (or none configured).
    pub const fn none(done: u32) -> Retry<'static> {
        Retry {
            policy: &NO_RETRY,
            done,
            jitter: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Apply(Plan),
    /// Nothing to do; acknowledge and drop, logging why.
    Drop(&'static str),
}

/// How one execution ended, as far as the run is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Succeeded,
    Failed {
        reason: String,
        /// `None`: a timeout, a signal, a program that could not start.
        exit_code: Option<i32>,
    },
    /// The worker gave the step up before it finished (shutdown past the
    /// drain bound): the step is handed back as its next attempt.
    Interrupted,
}

/// Handling `start_etl`.
pub fn on_start(run: RunView) -> Decision {
    match run.state {
        RunState::Queued => Decision::Apply(Plan {
            run: moves(RunState::Queued, RunState::Running),
            queue: queued(0, 1),
            publish: Some(Message::ExecModule {
                run_id: run.id,
                step: 0,
                attempt: 1,
            }),
            ..Plan::default()
        }),
        RunState::Running => Decision::Drop("run already started (duplicate start_etl)"),
        RunState::Waiting => Decision::Drop("run waits for a slot (stale start_etl); it starts when admitted"),
        _ => Decision::Drop("run already finished"),
    }
}

/// What to do with an `exec_module` for an execution in `exec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Take it: compare-and-set `queued -> running` with a lease, then run.
    Take,
    /// The run ended (canceled) before the step started: mark it canceled.
    CancelQueued,
    Drop(&'static str),
}

pub fn on_exec(run: RunState, exec: Option<ExecState>) -> Claim {
    match (run, exec) {
        (_, None) => Claim::Drop("no such execution recorded (stale or foreign message)"),
        (RunState::Running, Some(ExecState::Queued)) => Claim::Take,
        (_, Some(ExecState::Queued)) => Claim::CancelQueued,
        (_, Some(ExecState::Running)) => Claim::Drop("execution already claimed by a worker (duplicate exec_module)"),
        (_, Some(_)) => Claim::Drop("execution already finished (duplicate exec_module)"),
    }
}

/// After a module exited (or could not start). The execution's own result is
/// always recorded; this decides what follows it. A failure with retries
/// left queues the next attempt, due after the policy's delay, and does not
/// fail the run; once they are spent, `error_handler` names how many
/// attempts were made.
pub fn on_step_done(run: RunView, step: u32, attempt: u32, outcome: &StepOutcome, retry: Retry) -> Decision {
    if run.state != RunState::Running {
        return Decision::Drop("run is no longer running; nothing follows this step");
    }
    let next = step + 1;
    let publish = match outcome {
        StepOutcome::Succeeded if next < run.step_count => {
            return Decision::Apply(Plan {
                queue: queued(next, 1),
                publish: Some(Message::ExecModule {
                    run_id: run.id,
                    step: next,
                    attempt: 1,
                }),
                ..Plan::default()
            });
        }
        StepOutcome::Succeeded => Message::EndEtl { run_id: run.id },
        StepOutcome::Interrupted => {
            return Decision::Apply(Plan {
                queue: Some(StepAttempt {
                    retry: retry.done,
                    ..StepAttempt::at(step, attempt + 1)
                }),
                publish: Some(Message::ExecModule {
                    run_id: run.id,
                    step,
                    attempt: attempt + 1,
                }),
                ..Plan::default()
            });
        }
        StepOutcome::Failed { exit_code, .. }
            if retry.done < retry.policy.retries && retry.policy.retries_on(*exit_code) =>
        {
            return Decision::Apply(Plan {
                queue: Some(StepAttempt {
                    step,
                    attempt: attempt + 1,
                    retry: retry.done + 1,
                    delay: Some(retry.policy.delay(retry.done + 1, retry.jitter)),
                }),
                ..Plan::default()
            });
        }
        StepOutcome::Failed { reason, .. } => Message::ErrorHandler {
            run_id: run.id,
            step,
            attempt,
            reason: match retry.done {
                0 => reason.clone(),
                n => format!("after {} attempts, {reason}", n + 1),
            },
        },
    };
    Decision::Apply(Plan {
        publish: Some(publish),
        ..Plan::default()
    })
}

/// Handling `end_etl`. `last_step_succeeded` is whether the final step's
/// latest execution is recorded as succeeded.
pub fn on_end(run: RunView, last_step_succeeded: bool) -> Decision {
    match run.state {
        RunState::Running if last_step_succeeded => Decision::Apply(Plan {
            run: moves(RunState::Running, RunState::Succeeded),
            ..Plan::default()
        }),
        RunState::Running => Decision::Drop("end_etl before the last step succeeded (stale message)"),
        s if s.is_final() => Decision::Drop("run already finished (duplicate end_etl)"),
        _ => Decision::Drop("end_etl for a run that has not started"),
    }
}

/// Handling `error_handler`.
pub fn on_error(run: RunView, step: u32, reason: &str) -> Decision {
    match run.state {
        RunState::Running => Decision::Apply(Plan {
            run: moves(RunState::Running, RunState::Failed),
            failure: Some(Failure {
                step,
                reason: reason.to_string(),
            }),
            ..Plan::default()
        }),
        s if s.is_final() => Decision::Drop("run already finished (duplicate error_handler)"),
        _ => Decision::Drop("error_handler for a run that has not started"),
    }
}

/// Local delivery of a step's run-level follow-up. When the plan of a
/// finished step publishes `end_etl` or `error_handler`, the worker that
/// records the step applies what that message would decide in the same
/// write instead (the step's close and the run's move commit together, or
/// neither does): the run ends without a trip through the broker and a
/// second statement. The decision is still `on_end`'s or `on_error`'s; any
/// other plan is returned as it is.
pub fn settle_here(run: RunView, plan: Plan) -> Plan {
    if plan.run.is_some() || plan.queue.is_some() {
        return plan;
    }
    let decided = match &plan.publish {
        // The write that records the last step as succeeded is the check
        // `end_etl` makes by reading it back.
        Some(Message::EndEtl { .. }) => on_end(run, true),
        Some(Message::ErrorHandler { step, reason, .. }) => on_error(run, *step, reason),
        _ => return plan,
    };
    match decided {
        Decision::Apply(settled) => settled,
        Decision::Drop(_) => plan,
    }
}

/// An operator asked to cancel.
pub fn on_cancel(run: RunView) -> Decision {
    match run.state {
        RunState::Waiting | RunState::Queued | RunState::Running => Decision::Apply(Plan {
            run: moves(run.state, RunState::Canceled),
            ..Plan::default()
        }),
        _ => Decision::Drop("run already finished; nothing to cancel"),
    }
}

/// An operator asked to retry a failed run from its failed step; `attempts`
/// is how many executions that step already had.
pub fn on_retry(run: RunView, failed_step: Option<u32>, attempts: u32) -> Decision {
    match (run.state, failed_step) {
        (RunState::Failed, Some(step)) if step < run.step_count => Decision::Apply(Plan {
            run: moves(RunState::Failed, RunState::Running),
            queue: queued(step, attempts + 1),
            publish: Some(Message::ExecModule {
                run_id: run.id,
                step,
                attempt: attempts + 1,
            }),
            ..Plan::default()
        }),
        (RunState::Failed, _) => Decision::Drop("failed run has no recorded failing step to retry from"),
        _ => Decision::Drop("only a failed run can be retried"),
    }
}

/// Recovery found an execution whose lease expired (its worker died or was
/// cut off). `attempt` is the expired one, `retry` its retry number (kept
/// by the attempt that replaces it), `lost_before` how many attempts of the
/// step were already lost (abandoned by recovery; an attempt its own worker
/// gave back, `StepOutcome::Interrupted`, is not lost); `max_attempts`
/// bounds the lost ones, counted apart from the retries of failures and
/// from operators' retries.
pub fn on_lease_expired(
    run: RunView,
    step: u32,
    attempt: u32,
    retry: u32,
    lost_before: u32,
    max_attempts: u32,
) -> Decision {
    if run.state != RunState::Running {
        return Decision::Drop("run is no longer running; the expired step is just closed");
    }
    let lost = lost_before.saturating_add(1);
    if lost >= max_attempts {
        let reason = format!(
            "step {} lost its worker {lost} time(s) (worker killed or unreachable); giving up after {max_attempts} attempts",
            step + 1
        );
        return Decision::Apply(Plan {
            publish: Some(Message::ErrorHandler {
                run_id: run.id,
                step,
                attempt,
                reason,
            }),
            ..Plan::default()
        });
    }
    Decision::Apply(Plan {
        queue: Some(StepAttempt {
            retry,
            ..StepAttempt::at(step, attempt + 1)
        }),
        publish: Some(Message::ExecModule {
            run_id: run.id,
            step,
            attempt: attempt + 1,
        }),
        ..Plan::default()
    })
}

/// The latest execution of a run that recovery found with nothing queued or
/// running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastExec {
    pub step: u32,
    pub attempt: u32,
    pub retry: u32,
    pub state: ExecState,
    pub error: Option<String>,
}

/// Recovery found a `running` run with no execution queued or running: the
/// message that should have followed its latest execution was lost (a crash
/// between a commit and a publish). Decide it again.
pub fn on_stuck(run: RunView, last: Option<&LastExec>) -> Decision {
    if run.state != RunState::Running {
        return Decision::Drop("run is not running");
    }
    let Some(last) = last else {
        return Decision::Apply(Plan {
            queue: queued(0, 1),
            publish: Some(Message::ExecModule {
                run_id: run.id,
                step: 0,
                attempt: 1,
            }),
            ..Plan::default()
        });
    };
    match last.state {
        ExecState::Succeeded => on_step_done(run, last.step, last.attempt, &StepOutcome::Succeeded, Retry::none(0)),
        // A retry is queued in the same write that records the failure, so
        // a failure with nothing after it had no retry left.
        ExecState::Failed => {
            let reason = last
                .error
                .clone()
                .unwrap_or_else(|| format!("step {} failed", last.step));
            let failed = StepOutcome::Failed {
                reason,
                exit_code: None,
            };
            on_step_done(run, last.step, last.attempt, &failed, Retry::none(last.retry))
        }
        ExecState::Abandoned | ExecState::Canceled => on_step_done(
            run,
            last.step,
            last.attempt,
            &StepOutcome::Interrupted,
            Retry::none(last.retry),
        ),
        ExecState::Queued | ExecState::Running => Decision::Drop("an execution is in flight"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_step_settles_its_run_in_the_same_write() {
        let r = run(RunState::Running, 3);
        let done = |outcome: &StepOutcome| match on_step_done(r, 2, 1, outcome, Retry::none(0)) {
            Decision::Apply(plan) => plan,
            Decision::Drop(why) => panic!("{why}"),
        };
        let settled = settle_here(r, done(&StepOutcome::Succeeded));
        assert_eq!(settled.run, moves(RunState::Running, RunState::Succeeded));
        assert_eq!((settled.queue, settled.publish), (None, None));
        let failed = StepOutcome::Failed {
            reason: "exit 3".into(),
            exit_code: Some(3),
        };
        let settled = settle_here(r, done(&failed));
        assert_eq!(settled.run, moves(RunState::Running, RunState::Failed));
        assert_eq!(
            settled.failure,
            Some(Failure {
                step: 2,
                reason: "exit 3".into()
            })
        );
        assert_eq!(settled.publish, None);
        // A step that continues, or a run that is not running, is left as it was.
        let next = on_step_done(r, 0, 1, &StepOutcome::Succeeded, Retry::none(0));
        let Decision::Apply(next) = next else { panic!() };
        assert_eq!(settle_here(r, next.clone()), next);
        let ended = run(RunState::Canceled, 3);
        let end = Plan {
            publish: Some(Message::EndEtl { run_id: ended.id }),
            ..Plan::default()
        };
        assert_eq!(settle_here(ended, end.clone()), end);
    }

    fn run(state: RunState, steps: u32) -> RunView {
        RunView {
            id: Uuid::nil(),
            state,
            step_count: steps,
        }
    }

    fn plan(d: Decision) -> Plan {
        match d {
            Decision::Apply(p) => p,
            Decision::Drop(why) => panic!("expected a plan, got a drop: {why}"),
        }
    }

    #[test]
    fn start_etl_queues_the_first_step_only_from_queued() {
        for state in RunState::ALL.iter().copied() {
            let d = on_start(run(state, 3));
            if state == RunState::Queued {
                let p = plan(d);
                assert_eq!(p.run, moves(RunState::Queued, RunState::Running));
                assert_eq!(p.queue, queued(0, 1));
                assert_eq!(
                    p.publish,
                    Some(Message::ExecModule {
                        run_id: Uuid::nil(),
                        step: 0,
                        attempt: 1
                    })
                );
            } else {
                assert!(matches!(d, Decision::Drop(_)), "{state:?}");
            }
        }
    }

    #[test]
    fn only_a_queued_execution_of_a_running_run_is_claimed() {
        for r in RunState::ALL.iter().copied() {
            for e in ExecState::ALL.iter().copied().map(Some).chain([None]) {
                let c = on_exec(r, e);
                let expected = match (r, e) {
                    (RunState::Running, Some(ExecState::Queued)) => Claim::Take,
                    (_, Some(ExecState::Queued)) => Claim::CancelQueued,
                    _ => c,
                };
                assert_eq!(c, expected, "{r:?} {e:?}");
                if e.is_some_and(|e| e != ExecState::Queued) || e.is_none() {
                    assert!(matches!(c, Claim::Drop(_)), "{r:?} {e:?} must drop");
                }
            }
        }
    }

    #[test]
    fn a_successful_step_queues_the_next_one() {
        let p = plan(on_step_done(
            run(RunState::Running, 3),
            0,
            1,
            &StepOutcome::Succeeded,
            Retry::none(0),
        ));
        assert_eq!(p.queue, queued(1, 1));
        assert_eq!(
            p.publish,
            Some(Message::ExecModule {
                run_id: Uuid::nil(),
                step: 1,
                attempt: 1
            })
        );
        assert_eq!(p.run, None);
    }

    #[test]
    fn the_last_successful_step_publishes_end_etl() {
        let p = plan(on_step_done(
            run(RunState::Running, 3),
            2,
            4,
            &StepOutcome::Succeeded,
            Retry::none(0),
        ));
        assert_eq!(p.queue, None);
        assert_eq!(p.publish, Some(Message::EndEtl { run_id: Uuid::nil() }));
    }

    #[test]
    fn a_failed_step_publishes_error_handler_and_queues_nothing() {
        let p = plan(on_step_done(
            run(RunState::Running, 3),
            1,
            2,
            &StepOutcome::Failed {
                reason: "exit code 2".into(),
                exit_code: Some(2),
            },
            Retry::none(0),
        ));
        assert_eq!(p.queue, None);
        assert_eq!(
            p.publish,
            Some(Message::ErrorHandler {
                run_id: Uuid::nil(),
                step: 1,
                attempt: 2,
                reason: "exit code 2".into()
            })
        );
    }

    #[test]
    fn an_interrupted_step_is_handed_back_as_its_next_attempt() {
        let p = plan(on_step_done(
            run(RunState::Running, 3),
            1,
            2,
            &StepOutcome::Interrupted,
            Retry::none(0),
        ));
        assert_eq!(p.queue, queued(1, 3));
        assert_eq!(
            p.publish,
            Some(Message::ExecModule {
                run_id: Uuid::nil(),
                step: 1,
                attempt: 3
            })
        );
    }

    #[test]
    fn nothing_follows_a_step_of_a_run_that_is_no_longer_running() {
        for state in RunState::ALL.iter().copied().filter(|s| *s != RunState::Running) {
            for outcome in [
                StepOutcome::Succeeded,
                StepOutcome::Failed {
                    reason: "x".into(),
                    exit_code: Some(1),
                },
                StepOutcome::Interrupted,
            ] {
                assert!(matches!(
                    on_step_done(run(state, 3), 0, 1, &outcome, Retry::none(0)),
                    Decision::Drop(_)
                ));
            }
        }
    }

    #[test]
    fn end_etl_succeeds_a_running_run_whose_last_step_succeeded() {
        for state in RunState::ALL.iter().copied() {
            for last_ok in [true, false] {
                let d = on_end(run(state, 2), last_ok);
                if state == RunState::Running && last_ok {
                    assert_eq!(plan(d).run, moves(RunState::Running, RunState::Succeeded));
                } else {
                    assert!(matches!(d, Decision::Drop(_)), "{state:?} {last_ok}");
                }
            }
        }
    }

    #[test]
    fn error_handler_fails_a_running_run_with_step_and_reason() {
        for state in RunState::ALL.iter().copied() {
            let d = on_error(run(state, 2), 1, "exit code 1");
            if state == RunState::Running {
                let p = plan(d);
                assert_eq!(p.run, moves(RunState::Running, RunState::Failed));
                assert_eq!(
                    p.failure,
                    Some(Failure {
                        step: 1,
                        reason: "exit code 1".into()
                    })
                );
                assert_eq!(p.publish, None);
            } else {
                assert!(matches!(d, Decision::Drop(_)), "{state:?}");
            }
        }
    }

    #[test]
    fn cancel_applies_to_unfinished_runs_only() {
        for state in RunState::ALL.iter().copied() {
            let d = on_cancel(run(state, 2));
            if state.is_final() {
                assert!(matches!(d, Decision::Drop(_)));
            } else {
                assert_eq!(plan(d).run, moves(state, RunState::Canceled));
            }
        }
    }

    #[test]
    fn retry_requeues_the_failed_step_with_the_next_attempt() {
        let p = plan(on_retry(run(RunState::Failed, 3), Some(1), 2));
        assert_eq!(p.run, moves(RunState::Failed, RunState::Running));
        assert_eq!(p.queue, queued(1, 3));
        assert_eq!(
            p.publish,
            Some(Message::ExecModule {
                run_id: Uuid::nil(),
                step: 1,
                attempt: 3
            })
        );
        assert!(matches!(on_retry(run(RunState::Failed, 3), None, 0), Decision::Drop(_)));
        assert!(matches!(
            on_retry(run(RunState::Failed, 3), Some(7), 1),
            Decision::Drop(_)
        ));
        for state in RunState::ALL.iter().copied().filter(|s| *s != RunState::Failed) {
            assert!(matches!(on_retry(run(state, 3), Some(1), 1), Decision::Drop(_)));
        }
    }

    #[test]
    fn an_expired_lease_requeues_the_step_until_the_attempt_limit() {
        let p = plan(on_lease_expired(run(RunState::Running, 3), 1, 1, 0, 0, 3));
        assert_eq!(p.queue, queued(1, 2));
        assert_eq!(
            p.publish,
            Some(Message::ExecModule {
                run_id: Uuid::nil(),
                step: 1,
                attempt: 2
            })
        );
        let p = plan(on_lease_expired(run(RunState::Running, 3), 1, 3, 0, 2, 3));
        assert_eq!(p.queue, None);
        assert!(matches!(
            p.publish,
            Some(Message::ErrorHandler {
                step: 1,
                attempt: 3,
                ..
            })
        ));
        for state in RunState::ALL.iter().copied().filter(|s| *s != RunState::Running) {
            assert!(matches!(
                on_lease_expired(run(state, 3), 1, 1, 0, 0, 3),
                Decision::Drop(_)
            ));
        }
    }

    #[test]
    fn a_stuck_run_is_decided_again_from_its_latest_execution() {
        let last = |step, state| LastExec {
            step,
            attempt: 1,
            retry: 0,
            state,
            error: Some("exit code 2".into()),
        };
        let r = run(RunState::Running, 3);
        assert_eq!(plan(on_stuck(r, None)).queue, queued(0, 1));
        assert_eq!(
            plan(on_stuck(r, Some(&last(0, ExecState::Succeeded)))).queue,
            queued(1, 1)
        );
        assert_eq!(
            plan(on_stuck(r, Some(&last(2, ExecState::Succeeded)))).publish,
            Some(Message::EndEtl { run_id: Uuid::nil() })
        );
        assert!(matches!(
            plan(on_stuck(r, Some(&last(1, ExecState::Failed)))).publish,
            Some(Message::ErrorHandler { step: 1, ref reason, .. }) if reason == "exit code 2"
        ));
        assert_eq!(
            plan(on_stuck(r, Some(&last(1, ExecState::Abandoned)))).queue,
            queued(1, 2)
        );
        assert!(matches!(
            on_stuck(r, Some(&last(1, ExecState::Running))),
            Decision::Drop(_)
        ));
        assert!(matches!(on_stuck(run(RunState::Failed, 3), None), Decision::Drop(_)));
    }

    #[test]
    fn a_whole_run_walks_from_queued_to_succeeded() {
        let mut state = RunState::Queued;
        let steps = 3;
        let p = plan(on_start(run(state, steps)));
        state = p.run.unwrap().to;
        let mut step = p.queue.unwrap().step;
        loop {
            assert_eq!(on_exec(state, Some(ExecState::Queued)), Claim::Take);
            let p = plan(on_step_done(
                run(state, steps),
                step,
                1,
                &StepOutcome::Succeeded,
                Retry::none(0),
            ));
            match p.publish.unwrap() {
                Message::ExecModule { step: s, .. } => step = s,
                Message::EndEtl { .. } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(step, steps - 1);
        assert_eq!(
            plan(on_end(run(state, steps), true)).run.unwrap().to,
            RunState::Succeeded
        );
    }

    fn failed(code: Option<i32>) -> StepOutcome {
        StepOutcome::Failed {
            reason: "step 2 (m) failed: exit code 3".into(),
            exit_code: code,
        }
    }

    #[test]
    fn a_failure_with_retries_left_queues_a_delayed_attempt_and_publishes_nothing() {
        let policy = RetryPolicy {
            retries: 2,
            delay_secs: 10.0,
            ..RetryPolicy::default()
        };
        let r = run(RunState::Running, 3);
        let p = plan(on_step_done(
            r,
            1,
            1,
            &failed(Some(3)),
            Retry {
                policy: &policy,
                done: 0,
                jitter: 0.0,
            },
        ));
        assert_eq!(
            p.queue,
            Some(StepAttempt {
                step: 1,
                attempt: 2,
                retry: 1,
                delay: Some(Duration::from_secs(10)),
            })
        );
        assert_eq!((p.publish, p.run), (None, None), "published when due, by recovery");
        let p = plan(on_step_done(
            r,
            1,
            2,
            &failed(Some(3)),
            Retry {
                policy: &policy,
                done: 1,
                jitter: 1.0,
            },
        ));
        assert_eq!(
            p.queue.unwrap().delay,
            Some(Duration::from_secs(25)),
            "20 s, +25 % jitter"
        );
        // Spent: the run fails, saying after how many attempts.
        let p = plan(on_step_done(
            r,
            1,
            3,
            &failed(Some(3)),
            Retry {
                policy: &policy,
                done: 2,
                jitter: 0.0,
            },
        ));
        assert_eq!(p.queue, None);
        assert!(matches!(
            p.publish,
            Some(Message::ErrorHandler { ref reason, .. }) if reason == "after 3 attempts, step 2 (m) failed: exit code 3"
        ));
    }

    #[test]
    fn only_the_listed_exit_codes_are_retried() {
        let policy = RetryPolicy {
            retries: 5,
            on_exit_codes: Some(vec![75]),
            ..RetryPolicy::default()
        };
        let r = run(RunState::Running, 3);
        let retry = Retry {
            policy: &policy,
            done: 0,
            jitter: 0.0,
        };
        assert!(plan(on_step_done(r, 0, 1, &failed(Some(75)), retry)).queue.is_some());
        for other in [Some(1), None] {
            let p = plan(on_step_done(r, 0, 1, &failed(other), retry));
            assert!(
                p.queue.is_none() && matches!(p.publish, Some(Message::ErrorHandler { .. })),
                "{other:?}"
            );
        }
    }

    #[test]
    fn attempts_lost_to_workers_are_counted_apart_from_retries() {
        // Attempt 4 is the third retry (attempts 2-4 were retries): lost once.
        let p = plan(on_lease_expired(run(RunState::Running, 3), 1, 4, 3, 0, 2));
        let q = p.queue.unwrap();
        assert_eq!(
            (q.attempt, q.retry, q.delay),
            (5, 3, None),
            "same retry number, at once"
        );
        // Attempts 1 and 2 both lost (no retry): the limit of 2 is reached.
        let r = run(RunState::Running, 3);
        assert!(plan(on_lease_expired(r, 1, 2, 0, 1, 2)).queue.is_none());
        // After an operator's retry (attempt 5, retry 0), only the lost
        // attempts count: one lost before, this one the second of three.
        assert!(plan(on_lease_expired(r, 1, 5, 0, 1, 3)).queue.is_some());
        // An interrupted retry keeps its number too.
        let p = plan(on_step_done(
            run(RunState::Running, 3),
            1,
            3,
            &StepOutcome::Interrupted,
            Retry::none(2),
        ));
        assert_eq!(p.queue.unwrap().retry, 2);
    }
}
