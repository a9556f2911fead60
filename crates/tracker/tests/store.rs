//! Every call of the [`Store`] contract, once at least, against a real
//! PostgreSQL (a database per test): each statement parses, binds and
//! decodes into its typed row, and the compare-and-set writes answer "did
//! not apply" where they must.

mod common;

use scheduler_core::machine::{Failure, Plan, RunMove, StepAttempt};
use scheduler_core::{ExecState, Message, Modules, RunState, Sequence};
use scheduler_tracker::{Admitted, ClaimFor, Close, ExecKey, ExecResult, NewRun, RunFilter, Store, WorkerInfo, Write};
use std::time::Duration;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);

async fn with_store<F, Fut>(test: F)
where
    F: Fn(common::TestStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    common::each_backend("store_t", test).await;
}

fn new_run(steps: usize) -> NewRun {
    let modules = Modules::parse("modules.json", r#"{"m": {"cmd": "./m.sh", "timeout_secs": 7}}"#).unwrap();
    let body: Vec<String> = (0..steps)
        .map(|i| format!(r#"{{"module_name": "m", "input": "in{i}", "output": "out{i}", "conf": ""}}"#))
        .collect();
    let seq = Sequence::parse("s", "etl_sequences/s.json", &format!("[{}]", body.join(",")), &modules).unwrap();
    NewRun {
        id: Uuid::now_v7(),
        queue: "q1".into(),
        trigger: "test".into(),
        snapshot: seq.snapshot(&modules, "q1"),
        schedule: None,
        logical_date: None,
    }
}

fn write<'a>(run_id: Uuid, close: Option<Close<'a>>, plan: &'a Plan, claim_for: Option<(Uuid, Duration)>) -> Write<'a> {
    Write {
        run_id,
        close,
        plan,
        claim_for: claim_for.map(|(worker_id, lease)| ClaimFor {
            worker_id,
            lease,
            queues: served(),
        }),
    }
}

/// The queues the claiming worker of these tests serves.
fn served() -> &'static [String] {
    static SERVED: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| vec!["q1".into()]);
    &SERVED
}

fn key(run_id: Uuid, step: u32, attempt: u32) -> ExecKey {
    ExecKey { run_id, step, attempt }
}

fn starting() -> Plan {
    Plan {
        run: Some(RunMove {
            from: RunState::Queued,
            to: RunState::Running,
        }),
        queue: Some(StepAttempt::at(0, 1)),
        ..Plan::default()
    }
}

/// A new run of `steps` steps, started: its first step claimed by `worker`
/// with `lease`.
async fn started(s: &dyn Store, steps: usize, worker: Uuid, lease: Duration) -> Uuid {
    let run = new_run(steps);
    s.create_run(&run).await.unwrap();
    let w = s
        .apply(&write(run.id, None, &starting(), Some((worker, lease))))
        .await
        .unwrap();
    assert!(w.claimed.is_some(), "{w:?}");
    run.id
}

/// Recovery's close of `key` (its lease expired) with `plan`.
async fn abandon(s: &dyn Store, key: ExecKey, reason: &str, plan: &Plan) -> scheduler_tracker::Written {
    s.apply(&write(key.run_id, Some(Close::Abandon { key, reason }), plan, None))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_run_walks_through_every_write_of_the_contract() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let run = new_run(2);
        let id = run.id;
        s.create_run(&run).await.unwrap();
        let view = s.run_view(id).await.unwrap().unwrap();
        assert_eq!((view.state, view.step_count), (RunState::Queued, 2));
        assert_eq!(s.run_queue(id).await.unwrap().as_deref(), Some("q1"));
        assert!(s.run_view(Uuid::now_v7()).await.unwrap().is_none());
        assert_eq!(
            s.unpublished_runs(Duration::ZERO, 10).await.unwrap(),
            vec![(id, "q1".to_string())]
        );
        s.mark_run_published(id).await.unwrap();
        assert!(s.unpublished_runs(Duration::ZERO, 10).await.unwrap().is_empty());

        let worker = Uuid::now_v7();
        s.register_worker(&WorkerInfo {
            id: worker,
            host: "h".into(),
            pid: 1,
            version: "t".into(),
            concurrency: 2,
            queues: vec!["q1".into()],
        })
        .await
        .unwrap();

        // Start, with step 0 queued (not claimed): it waits to be published.
        let plan = starting();
        let w = s.apply(&write(id, None, &plan, None)).await.unwrap();
        assert!(w.complete(&plan) && w.claimed.is_none(), "{w:?}");
        assert_eq!(w.queue.as_deref(), Some("q1"));
        // The same move again does not apply (compare-and-set).
        let again = s.apply(&write(id, None, &plan, None)).await.unwrap();
        assert!(!again.run && !again.queued, "{again:?}");
        let k0 = key(id, 0, 1);
        assert_eq!(
            s.unpublished_executions(Duration::ZERO, 10).await.unwrap(),
            vec![(k0, "q1".to_string())]
        );
        s.mark_exec_published(k0).await.unwrap();
        assert!(s.unpublished_executions(Duration::ZERO, 10).await.unwrap().is_empty());
        assert_eq!(
            s.exec_states(k0).await.unwrap(),
            Some((RunState::Running, Some(ExecState::Queued)))
        );

        // Claim: once only.
        let claimed = s.claim(k0, worker, LEASE).await.unwrap().expect("claimable");
        assert_eq!(claimed.module, "m");
        assert_eq!(claimed.timeout_secs, Some(7));
        assert_eq!(claimed.step_count, 2);
        assert!(claimed.argv.contains(&"in0".to_string()), "{:?}", claimed.argv);
        assert!(s.claim(k0, Uuid::now_v7(), LEASE).await.unwrap().is_none());
        s.record_pid(k0, worker, 4242).await.unwrap();
        assert!(
            s.heartbeat(worker, false, LEASE, &[]).await.unwrap().is_empty(),
            "renews only what it holds"
        );
        let held = s.heartbeat(worker, false, LEASE, &[k0]).await.unwrap();
        assert_eq!(held.len(), 1);
        assert!(held[0].key == k0 && !held[0].canceled);

        // Another worker cannot record it; its holder records it and claims
        // the next step in the same write.
        let ok = ExecResult {
            duration_ms: 12,
            exit_code: Some(0),
            stdout_tail: "out\0put".into(),
            stdout_bytes: 7,
            pid: Some(4242),
            ..ExecResult::new(ExecState::Succeeded)
        };
        let next = Plan {
            queue: Some(StepAttempt::at(1, 1)),
            publish: Some(Message::ExecModule {
                run_id: id,
                step: 1,
                attempt: 1,
            }),
            ..Plan::default()
        };
        let stranger = s
            .apply(&write(
                id,
                Some(Close::Finish {
                    key: k0,
                    worker_id: Uuid::now_v7(),
                    result: &ok,
                }),
                &next,
                None,
            ))
            .await
            .unwrap();
        assert!(!stranger.closed && !stranger.queued, "{stranger:?}");
        let w = s
            .apply(&write(
                id,
                Some(Close::Finish {
                    key: k0,
                    worker_id: worker,
                    result: &ok,
                }),
                &next,
                Some((worker, LEASE)),
            ))
            .await
            .unwrap();
        assert!(w.complete(&next), "{w:?}");
        assert_eq!(w.claimed.as_ref().map(|c| c.module.as_str()), Some("m"));
        let d = s.run_detail(id).await.unwrap().unwrap();
        assert_eq!(d.executions[0].pid, Some(4242), "the pid is recorded with the result");

        // Step 1 fails; error_handler's move records the failure.
        let k1 = key(id, 1, 1);
        let failed = ExecResult {
            exit_code: Some(3),
            error: Some("exit code 3".into()),
            ..ExecResult::new(ExecState::Failed)
        };
        let w = s
            .apply(&write(
                id,
                Some(Close::Finish {
                    key: k1,
                    worker_id: worker,
                    result: &failed,
                }),
                &Plan::default(),
                None,
            ))
            .await
            .unwrap();
        assert!(w.closed && w.run, "{w:?}");
        assert!(!s.last_step_succeeded(id).await.unwrap());
        let fail = Plan {
            run: Some(RunMove {
                from: RunState::Running,
                to: RunState::Failed,
            }),
            failure: Some(Failure {
                step: 1,
                reason: "step 2 (m) failed: exit code 3".into(),
            }),
            ..Plan::default()
        };
        let w = s.apply(&write(id, None, &fail, None)).await.unwrap();
        assert!(w.complete(&fail));
        assert_eq!(s.failed_step_attempts(id).await.unwrap(), Some((1, 1)));

        // Reads for the CLI and the UI.
        let detail = s.run_detail(id).await.unwrap().unwrap();
        assert_eq!(detail.run.state, "failed");
        assert_eq!(detail.run.failed_step, Some(1));
        assert_eq!(detail.executions.len(), 2);
        assert_eq!(detail.executions[0].stdout_tail.as_deref(), Some("out\u{FFFD}put"));
        assert_eq!(detail.executions[0].pid, Some(4242));
        let runs = s
            .list_runs(&RunFilter {
                state: Some(RunState::Failed),
                limit: 10,
                ..RunFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(s.last_runs_by_sequence(&["s".into()], 5).await.unwrap().len(), 1);
        assert_eq!(s.list_workers().await.unwrap().len(), 1);
        assert!(!s.runs_fingerprint().await.unwrap().is_empty());
        assert!(s.run_fingerprint(id).await.unwrap().is_some());
        assert!(s.run_fingerprint(Uuid::now_v7()).await.unwrap().is_none());
        let counts = s.state_counts(Duration::from_secs(60)).await.unwrap();
        assert_eq!(counts.runs, vec![("failed".to_string(), 1)]);
        assert_eq!(counts.workers_alive, 1);
        let a = s
            .activity(Duration::from_secs(3600), &[10, 100], &[1024])
            .await
            .unwrap();
        assert_eq!(a.durations.iter().map(|h| h.count).sum::<i64>(), 2);
        assert_eq!(s.sequence_history("s", 50).await.unwrap().runs.len(), 1);
        s.ping().await.unwrap();
        s.worker_stopped(worker).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn recovery_finds_expired_leases_and_stuck_runs_and_cancel_takes_the_queue() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let worker = Uuid::now_v7();
        assert!(s.take_reaper_lease(worker, LEASE).await.unwrap());
        assert!(!s.take_reaper_lease(Uuid::now_v7(), LEASE).await.unwrap());

        // Claimed with a lease that is already over: recovery's to take.
        let id = started(s, 3, worker, Duration::ZERO).await;
        let expired = s.expired_executions(10).await.unwrap();
        assert_eq!(expired.len(), 1);
        // A dead worker's leases, and the reaper lease it held, end at once.
        let run_b = started(s, 1, worker, LEASE).await;
        assert_eq!(s.expired_executions(10).await.unwrap().len(), 1, "run_b's lease holds");
        assert_eq!(s.worker_died(worker).await.unwrap(), 1);
        assert_eq!(s.worker_died(worker).await.unwrap(), 0, "once");
        assert_eq!(s.expired_executions(10).await.unwrap().len(), 2);
        assert!(
            s.take_reaper_lease(Uuid::now_v7(), LEASE).await.unwrap(),
            "the dead worker's reaper lease is free"
        );
        let w = abandon(s, key(run_b, 0, 1), "worker died", &Plan::default()).await;
        assert!(w.closed);
        let k0 = key(id, 0, 1);
        assert_eq!(expired[0].key, k0);
        assert_eq!(expired[0].run.state, RunState::Running);
        assert_eq!(expired[0].worker_id, Some(worker));
        let retry = Plan {
            queue: Some(StepAttempt::at(0, 2)),
            ..Plan::default()
        };
        let w = abandon(s, k0, "worker gone", &retry).await;
        assert!(w.complete(&retry), "{w:?}");
        assert_eq!(
            s.exec_states(k0).await.unwrap(),
            Some((RunState::Running, Some(ExecState::Abandoned)))
        );
        assert!(s.expired_executions(10).await.unwrap().is_empty());

        // Nothing in flight once attempt 2 is canceled: a stuck run.
        assert!(s.cancel_queued(key(id, 0, 2)).await.unwrap());
        assert!(!s.cancel_queued(key(id, 0, 2)).await.unwrap());
        let stuck = s.stuck_runs(Duration::ZERO, 10).await.unwrap();
        assert_eq!(stuck.len(), 2, "this run and run_b, abandoned above");
        let this = stuck.iter().find(|r| r.run.id == id).unwrap();
        let last = this.last.as_ref().unwrap();
        assert_eq!((last.step, last.attempt, last.state), (0, 2, ExecState::Canceled));

        // A queue part without a move applies to a running run (recovery's
        // re-decision); a cancel then takes the queued execution with it.
        let requeue = Plan {
            queue: Some(StepAttempt::at(0, 3)),
            ..Plan::default()
        };
        let w = s.apply(&write(id, None, &requeue, None)).await.unwrap();
        assert!(w.complete(&requeue), "{w:?}");
        let cancel = Plan {
            run: Some(RunMove {
                from: RunState::Running,
                to: RunState::Canceled,
            }),
            ..Plan::default()
        };
        let w = s.apply(&write(id, None, &cancel, None)).await.unwrap();
        assert!(w.complete(&cancel));
        assert_eq!(
            s.exec_states(key(id, 0, 3)).await.unwrap(),
            Some((RunState::Canceled, Some(ExecState::Canceled)))
        );
        // And nothing is queued on a run that is no longer running.
        let w = s
            .apply(&Write {
                run_id: id,
                close: None,
                plan: &Plan {
                    queue: Some(StepAttempt::at(1, 1)),
                    ..Plan::default()
                },
                claim_for: None,
            })
            .await
            .unwrap();
        assert!(!w.run && !w.queued, "{w:?}");
    })
    .await;
}

/// Attempts a worker gave back itself (`abandoned` in its own close: a
/// shutdown past the drain bound, no module slot in time) are not lost
/// workers: recovery's count of lost attempts, which `max_attempts` bounds,
/// skips them, and counts the attempts it abandoned itself.
#[tokio::test]
async fn attempts_given_back_by_their_worker_are_not_counted_as_lost() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let worker = Uuid::now_v7();
        let id = started(s, 1, worker, LEASE).await;
        // Given back twice by its worker, each time as the next attempt.
        let mut given_back = ExecResult::new(ExecState::Abandoned);
        given_back.error = Some("was not started: this worker had no free module slot within 250ms".into());
        for attempt in 1..=2 {
            let next = Plan {
                queue: Some(StepAttempt::at(0, attempt + 1)),
                ..Plan::default()
            };
            let w = s
                .apply(&write(
                    id,
                    Some(Close::Finish {
                        key: key(id, 0, attempt),
                        worker_id: worker,
                        result: &given_back,
                    }),
                    &next,
                    None,
                ))
                .await
                .unwrap();
            assert!(w.complete(&next), "{w:?}");
            assert!(s.claim(key(id, 0, attempt + 1), worker, LEASE).await.unwrap().is_some());
        }
        // Attempt 3 loses its worker: nothing lost before it.
        assert_eq!(s.worker_died(worker).await.unwrap(), 1);
        let expired = s.expired_executions(10).await.unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].key, key(id, 0, 3));
        assert_eq!(expired[0].lost_before, 0, "two attempts given back, none lost");
        let retry = Plan {
            queue: Some(StepAttempt::at(0, 4)),
            ..Plan::default()
        };
        let w = abandon(s, key(id, 0, 3), "worker gone", &retry).await;
        assert!(w.complete(&retry), "{w:?}");
        // Attempt 4 loses its worker too: one lost before it, attempt 3.
        let other = Uuid::now_v7();
        assert!(s.claim(key(id, 0, 4), other, LEASE).await.unwrap().is_some());
        assert_eq!(s.worker_died(other).await.unwrap(), 1);
        let expired = s.expired_executions(10).await.unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].lost_before, 1, "attempt 3, abandoned by recovery");
        // What the UI and the API show of each attempt.
        let detail = s.run_detail(id).await.unwrap().unwrap();
        let shown: Vec<(i32, &str, bool)> = detail
            .executions
            .iter()
            .map(|e| (e.attempt, e.state.as_str(), e.given_back))
            .collect();
        assert_eq!(
            shown,
            [
                (1, "abandoned", true),
                (2, "abandoned", true),
                (3, "abandoned", false),
                (4, "running", false)
            ]
        );
        assert_eq!(
            t.raw_i64(
                "SELECT count(*) FROM executions WHERE given_back",
                "SELECT count(*) FROM executions WHERE given_back = 1",
                &[]
            )
            .await,
            2
        );
    })
    .await;
}

#[tokio::test]
async fn a_close_and_a_move_in_one_write_apply_together_or_not_at_all() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let run = new_run(1);
        let id = run.id;
        s.create_run(&run).await.unwrap();
        let worker = Uuid::now_v7();
        let plan = starting();
        let w = s.apply(&write(id, None, &plan, Some((worker, LEASE)))).await.unwrap();
        assert!(w.claimed.is_some());
        let failed = ExecResult {
            exit_code: Some(1),
            ..ExecResult::new(ExecState::Failed)
        };
        let fail = Plan {
            run: Some(RunMove {
                from: RunState::Running,
                to: RunState::Failed,
            }),
            failure: Some(Failure {
                step: 0,
                reason: "exit code 1".into(),
            }),
            ..Plan::default()
        };
        let write = |worker_id| Write {
            run_id: id,
            close: Some(Close::Finish {
                key: key(id, 0, 1),
                worker_id,
                result: &failed,
            }),
            plan: &fail,
            claim_for: None,
        };
        // Not the holder: neither the close nor the move applies.
        let w = s.apply(&write(Uuid::now_v7())).await.unwrap();
        assert!(!w.closed && !w.run, "{w:?}");
        assert_eq!(s.run_view(id).await.unwrap().unwrap().state, RunState::Running);
        let w = s.apply(&write(worker)).await.unwrap();
        assert!(w.complete(&fail), "{w:?}");
        assert_eq!(s.run_view(id).await.unwrap().unwrap().state, RunState::Failed);
        assert_eq!(s.failed_step_attempts(id).await.unwrap(), Some((0, 1)));
    })
    .await;
}

#[tokio::test]
async fn a_retry_waits_unpublished_until_it_is_due_and_carries_its_policy() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        assert_eq!(
            s.next_retry_due().await.unwrap(),
            None,
            "no retry waiting: nothing due (the reaper sleeps its whole pass)"
        );
        let mut run = new_run(1);
        run.snapshot.steps[0].retry.retries = 2;
        let id = run.id;
        s.create_run(&run).await.unwrap();
        let worker = Uuid::now_v7();
        let w = s
            .apply(&write(id, None, &starting(), Some((worker, LEASE))))
            .await
            .unwrap();
        assert_eq!(w.claimed.as_ref().unwrap().retry, 0);
        assert_eq!(s.retry_policy(id, 0).await.unwrap().retries, 2, "from the snapshot");
        assert_eq!(s.retry_policy(id, 7).await.unwrap().retries, 0, "no such step: none");
        let failed = ExecResult::new(ExecState::Failed);
        let retry_in = |secs: u64| Plan {
            queue: Some(StepAttempt {
                retry: 1,
                delay: Some(Duration::from_secs(secs)),
                ..StepAttempt::at(0, 2)
            }),
            ..Plan::default()
        };
        let plan = retry_in(3600);
        // Asked to continue here: a delayed retry is never claimed.
        let w = s
            .apply(&write(
                id,
                Some(Close::Finish {
                    key: key(id, 0, 1),
                    worker_id: worker,
                    result: &failed,
                }),
                &plan,
                Some((worker, LEASE)),
            ))
            .await
            .unwrap();
        assert!(w.complete(&plan) && w.claimed.is_none(), "{w:?}");
        assert!(
            s.unpublished_executions(Duration::ZERO, 10).await.unwrap().is_empty(),
            "not due for an hour"
        );
        let due = s.next_retry_due().await.unwrap().unwrap();
        assert!(
            due > Duration::from_secs(3590) && due <= Duration::from_secs(3600),
            "{due:?}"
        );
        let detail = s.run_detail(id).await.unwrap().unwrap();
        let retry = &detail.executions[1];
        assert_eq!((retry.state.as_str(), retry.retry), ("queued", 1));
        assert_eq!(detail.run.retry_at, retry.due_at);
        assert!(detail.run.retry_at.is_some());
        assert!(
            s.stuck_runs(Duration::ZERO, 10).await.unwrap().is_empty(),
            "a waiting retry is in flight"
        );

        // Due at once: published even inside the republish grace, and
        // claimed with its retry number.
        let run2 = new_run(1);
        let id2 = run2.id;
        s.create_run(&run2).await.unwrap();
        s.apply(&write(id2, None, &starting(), Some((worker, LEASE))))
            .await
            .unwrap();
        let plan = retry_in(0);
        s.apply(&write(
            id2,
            Some(Close::Finish {
                key: key(id2, 0, 1),
                worker_id: worker,
                result: &failed,
            }),
            &plan,
            None,
        ))
        .await
        .unwrap();
        let due = s.unpublished_executions(Duration::from_secs(3600), 10).await.unwrap();
        assert_eq!(due, vec![(key(id2, 0, 2), "q1".to_string())]);
        let claimed = s.claim(key(id2, 0, 2), worker, LEASE).await.unwrap().unwrap();
        assert_eq!(claimed.retry, 1);
    })
    .await;
}

/// A run of a sequence whose steps go to `queues` (the run's own is "q1"),
/// with `policy` as its sequence object's extra fields.
fn routed_run(queues: &[&str], policy: &str) -> NewRun {
    let steps: Vec<String> = queues
        .iter()
        .map(|q| format!(r#"{{"module_name": "m", "queue": "{q}"}}"#))
        .collect();
    common::run_of("limited", &format!(r#"{{{policy} "steps": [{}]}}"#, steps.join(",")))
}

#[tokio::test]
async fn a_step_on_a_queue_the_worker_does_not_serve_is_queued_there_not_claimed() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let run = routed_run(&["heavy", "q1"], "");
        s.create_run(&run).await.unwrap();
        let worker = Uuid::now_v7();
        let plan = starting();
        let w = s
            .apply(&write(run.id, None, &plan, Some((worker, LEASE))))
            .await
            .unwrap();
        assert!(w.complete(&plan));
        assert!(w.claimed.is_none(), "q1 only: the heavy step is not claimed here");
        assert_eq!(w.exec_queue.as_deref(), Some("heavy"));
        let exec = Message::ExecModule {
            run_id: run.id,
            step: 0,
            attempt: 1,
        };
        assert_eq!(w.queue_for(&exec), Some("heavy"));
        assert_eq!(w.queue_for(&Message::EndEtl { run_id: run.id }), Some("q1"));
        assert_eq!(
            s.exec_states(key(run.id, 0, 1)).await.unwrap(),
            Some((RunState::Running, Some(ExecState::Queued)))
        );
        // Recovery republishes it to its own queue, not the run's.
        let unpublished = s.unpublished_executions(Duration::ZERO, 10).await.unwrap();
        assert_eq!(unpublished, vec![(key(run.id, 0, 1), "heavy".to_string())]);
    })
    .await;
}

#[tokio::test]
async fn twenty_simultaneous_starts_of_a_max_concurrent_1_sequence_get_one_slot() {
    with_store(|t| async move {
        let runs: Vec<NewRun> = (0..20)
            .map(|_| routed_run(&["q1"], r#""max_concurrent": 1, "on_conflict": "skip","#))
            .collect();
        let answers = futures_util::future::join_all(runs.iter().map(|r| {
            let t = t.clone();
            async move { Store::create_run(&*t, r).await.unwrap() }
        }))
        .await;
        let queued: Vec<_> = answers.iter().filter(|a| **a == Admitted::Queued).collect();
        assert_eq!(queued.len(), 1, "{answers:?}");
        let first = runs[answers.iter().position(|a| *a == Admitted::Queued).unwrap()].id;
        for a in &answers {
            if let Admitted::Skipped(note) = a {
                assert!(note.contains(&format!("run {first} holds the slot")), "{note}");
            }
        }
        let skipped = Store::list_runs(
            &*t,
            &RunFilter {
                state: Some(RunState::Skipped),
                limit: 100,
                ..RunFilter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(skipped.len(), 19);
        assert!(skipped.iter().all(|r| r.finished_at.is_some() && r.note.is_some()));
    })
    .await;
}

#[tokio::test]
async fn a_waiting_run_starts_when_the_slot_frees_first_in_first_out() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let policy = r#""max_concurrent": 1, "on_conflict": "queue","#;
        let (a, b, c) = (
            routed_run(&["q1"], policy),
            routed_run(&["q1"], policy),
            routed_run(&["q1"], policy),
        );
        assert_eq!(s.create_run(&a).await.unwrap(), Admitted::Queued);
        assert!(matches!(s.create_run(&b).await.unwrap(), Admitted::Waiting(_)));
        assert!(matches!(s.create_run(&c).await.unwrap(), Admitted::Waiting(_)));
        assert!(s.admit_waiting("limited").await.unwrap().is_empty(), "a holds the slot");
        assert_eq!(s.waiting_sequences().await.unwrap(), vec!["limited".to_string()]);
        // a runs, then ends: b (the oldest waiting) gets the slot, not c.
        s.apply(&write(a.id, None, &starting(), None)).await.unwrap();
        assert!(
            s.admit_waiting("limited").await.unwrap().is_empty(),
            "running holds it too"
        );
        let end = Plan {
            run: Some(RunMove {
                from: RunState::Running,
                to: RunState::Succeeded,
            }),
            ..Plan::default()
        };
        let w = s.apply(&write(a.id, None, &end, None)).await.unwrap();
        assert!(w.limited && w.sequence.as_deref() == Some("limited"));
        assert_eq!(
            s.admit_waiting("limited").await.unwrap(),
            vec![(b.id, "q1".to_string())]
        );
        assert!(s.admit_waiting("limited").await.unwrap().is_empty(), "b holds it now");
        assert_eq!(s.run_view(c.id).await.unwrap().unwrap().state, RunState::Waiting);
        // Canceling a waiting run takes it out of the line.
        let cancel = Plan {
            run: Some(RunMove {
                from: RunState::Waiting,
                to: RunState::Canceled,
            }),
            ..Plan::default()
        };
        assert!(s.apply(&write(c.id, None, &cancel, None)).await.unwrap().run);
        assert!(s.waiting_sequences().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn cancel_running_cancels_the_oldest_and_waits_for_its_module_to_stop() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let policy = r#""max_concurrent": 1, "on_conflict": "cancel_running","#;
        let (a, b) = (routed_run(&["q1"], policy), routed_run(&["q1"], policy));
        s.create_run(&a).await.unwrap();
        let worker = Uuid::now_v7();
        s.apply(&write(a.id, None, &starting(), Some((worker, LEASE))))
            .await
            .unwrap();
        // a's module runs: b cancels a and waits for the module to stop.
        let Admitted::Waiting(note) = s.create_run(&b).await.unwrap() else {
            panic!("b should wait for a's module")
        };
        assert!(note.contains(&a.id.to_string()), "{note}");
        let detail = s.run_detail(a.id).await.unwrap().unwrap();
        assert_eq!(detail.run.state, "canceled");
        assert!(
            detail
                .run
                .note
                .unwrap()
                .contains(&format!("run {} of the same sequence replaced it", b.id))
        );
        assert!(
            s.admit_waiting("limited").await.unwrap().is_empty(),
            "a's module still runs"
        );
        // The worker stops the module and records it: the slot is free.
        let stopped = ExecResult::new(ExecState::Canceled);
        let close = Close::Finish {
            key: key(a.id, 0, 1),
            worker_id: worker,
            result: &stopped,
        };
        let w = s
            .apply(&write(a.id, Some(close), &Plan::default(), None))
            .await
            .unwrap();
        assert!(w.closed && !w.run);
        assert_eq!(
            s.admit_waiting("limited").await.unwrap(),
            vec![(b.id, "q1".to_string())]
        );
    })
    .await;
}

#[tokio::test]
async fn an_operators_retry_needs_a_free_slot_like_a_start() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let policy = r#""max_concurrent": 1, "on_conflict": "skip","#;
        let (a, b) = (routed_run(&["q1"], policy), routed_run(&["q1"], policy));
        s.create_run(&a).await.unwrap();
        s.apply(&write(a.id, None, &starting(), None)).await.unwrap();
        let fail = Plan {
            run: Some(RunMove {
                from: RunState::Running,
                to: RunState::Failed,
            }),
            failure: Some(Failure {
                step: 0,
                reason: "boom".into(),
            }),
            ..Plan::default()
        };
        s.apply(&write(a.id, None, &fail, None)).await.unwrap();
        assert_eq!(
            s.create_run(&b).await.unwrap(),
            Admitted::Queued,
            "a failed run holds no slot"
        );
        let retry = Plan {
            run: Some(RunMove {
                from: RunState::Failed,
                to: RunState::Running,
            }),
            queue: Some(StepAttempt::at(0, 2)),
            ..Plan::default()
        };
        let refused = s.apply_within_limit(&write(a.id, None, &retry, None)).await.unwrap();
        let why = refused.unwrap_err();
        assert!(why.contains(&format!("run {} holds it", b.id)), "{why}");
        assert_eq!(s.run_view(a.id).await.unwrap().unwrap().state, RunState::Failed);
        let cancel = Plan {
            run: Some(RunMove {
                from: RunState::Queued,
                to: RunState::Canceled,
            }),
            ..Plan::default()
        };
        s.apply(&write(b.id, None, &cancel, None)).await.unwrap();
        let w = s
            .apply_within_limit(&write(a.id, None, &retry, None))
            .await
            .unwrap()
            .unwrap();
        assert!(w.complete(&retry));
        assert_eq!(s.run_view(a.id).await.unwrap().unwrap().state, RunState::Running);
    })
    .await;
}

/// The hot path's own connections (`hot.rs`) after their server processes
/// are killed (what a database restart does to them): one write may fail
/// on a dead connection, and the next one works on a new connection (a
/// failure drops every idle one), so the worker's retry of a step's result
/// lands at once.
#[tokio::test]
async fn the_hot_paths_connections_come_back_after_their_server_processes_die() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                    WHERE datname = current_database() AND pid <> pg_backend_pid()";
        let plan = starting();
        // Two writes at once, so that two connections are idle afterwards.
        let (a, b, c) = (new_run(2), new_run(2), new_run(2));
        for run in [&a, &b, &c] {
            s.create_run(run).await.unwrap();
        }
        let (wa, wb) = (write(a.id, None, &plan, None), write(b.id, None, &plan, None));
        let (ra, rb) = tokio::join!(s.apply(&wa), s.apply(&wb));
        assert!(ra.unwrap().complete(&plan) && rb.unwrap().complete(&plan));
        if t.backend == common::Backend::Postgres {
            t.raw(kill, "SELECT 1", &[]).await;
        }
        let mut failures = 0;
        let written = loop {
            match s.apply(&write(c.id, None, &plan, None)).await {
                Ok(w) => break w,
                Err(e) if failures == 0 => {
                    failures += 1;
                    eprintln!("first write after the kill failed, as it may: {e}");
                }
                Err(e) => panic!("a second write failed too: the dead idle connections were kept: {e}"),
            }
        };
        assert!(written.complete(&plan), "{written:?}");
    })
    .await;
}

/// The hot path's statements find their rows by primary key, however their
/// plan was made: planned once per connection, on the nearly empty tables
/// of a new database, they once took an index on `state` instead (the
/// partial `executions_by_worker`, `runs_by_state`) and read every entry of
/// that state at each step. PostgreSQL only (SQLite plans a lookup by a
/// unique key first): 20 runs of 3 steps through the hot path, a claim, a
/// pid and a published-at note, then no scan of any index other than the
/// two primary keys.
#[tokio::test]
async fn the_hot_path_finds_its_rows_by_primary_key_on_a_new_database() {
    if !common::backends().contains(&common::Backend::Postgres) {
        return;
    }
    let t = common::open(common::Backend::Postgres, "store_t").await;
    let s: &dyn Store = &*t;
    let worker = Uuid::now_v7();
    let ok = ExecResult::new(ExecState::Succeeded);
    for _ in 0..20 {
        let id = started(s, 3, worker, LEASE).await;
        for step in 0..3u32 {
            let plan = if step < 2 {
                Plan {
                    queue: Some(StepAttempt::at(step + 1, 1)),
                    ..Plan::default()
                }
            } else {
                Plan {
                    run: Some(RunMove {
                        from: RunState::Running,
                        to: RunState::Succeeded,
                    }),
                    ..Plan::default()
                }
            };
            let close = Close::Finish {
                key: key(id, step, 1),
                worker_id: worker,
                result: &ok,
            };
            let w = s
                .apply(&write(id, Some(close), &plan, Some((worker, LEASE))))
                .await
                .unwrap();
            assert!(w.complete(&plan), "step {step}: {w:?}");
        }
    }
    // A claim, a pid, a stall mark, a published-at note and a cancel of a
    // queued step, as a worker and a producer make them.
    let run = new_run(2);
    s.create_run(&run).await.unwrap();
    s.mark_run_published(run.id).await.unwrap();
    s.apply(&write(run.id, None, &starting(), None)).await.unwrap();
    let k0 = key(run.id, 0, 1);
    assert!(s.claim(k0, worker, LEASE).await.unwrap().is_some());
    s.record_pid(k0, worker, 42).await.unwrap();
    assert!(
        s.mark_stalled(k0, true).await.unwrap(),
        "a running step is marked stalled"
    );
    // A step queued, not claimed, then canceled by key.
    let queued = new_run(2);
    s.create_run(&queued).await.unwrap();
    s.apply(&write(queued.id, None, &starting(), None)).await.unwrap();
    assert!(
        s.cancel_queued(key(queued.id, 0, 1)).await.unwrap(),
        "a queued step is canceled"
    );
    // The server processes report their scans when they end.
    t.close().await;
    let pool = sqlx::PgPool::connect(&t.location).await.unwrap();
    let scans = || async {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT indexrelname::text, idx_scan FROM pg_stat_user_indexes \
              WHERE relname IN ('runs', 'executions') AND idx_scan > 0 ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = scans().await;
    while !seen.iter().any(|(index, n)| index == "executions_pkey" && *n >= 60) {
        assert!(
            std::time::Instant::now() < deadline,
            "the closes' scans were not reported: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = scans().await;
    }
    assert!(
        seen.iter().all(|(index, _)| index.ends_with("_pkey")),
        "indexes other than the primary keys were scanned: {seen:?}"
    );
    pool.close().await;
    common::remove(t).await;
}

/// A binary older than the database's schema (a rollback, an old worker
/// restarted during a rolling upgrade) is refused with what to do, and the
/// database is left as it was.
#[tokio::test]
async fn a_database_migrated_by_a_newer_version_is_refused_saying_what_to_do() {
    if !common::backends().contains(&common::Backend::Postgres) {
        return;
    }
    let t = common::open(common::Backend::Postgres, "store_t").await;
    let run = new_run(1);
    t.create_run(&run).await.unwrap();
    let pool = sqlx::PgPool::connect(&t.location).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99991231000000, 'from the future', true, '\\x00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let err = scheduler_tracker::Tracker::open(&scheduler_tracker::TrackerConfig::new(&t.location))
        .await
        .expect_err("an older binary is refused");
    let said = err.to_string();
    for part in [
        "migrated by a newer version of scheduler",
        "99991231000000",
        "Upgrade scheduler",
    ] {
        assert!(said.contains(part), "{part:?} not in: {said}");
    }
    let database = t.location.rsplit('/').next().unwrap();
    assert!(said.contains(database), "the message names the database: {said}");
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 99991231000000")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(t.run_view(run.id).await.unwrap().is_some(), "nothing lost");
    common::remove(t).await;
}
