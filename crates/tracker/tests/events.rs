//! Events are recorded with the state change that causes them, once, and
//! their deliveries are routed, claimed and recorded once per target,
//! against a real PostgreSQL (a database per test).

mod common;

use chrono::{TimeZone, Utc};
use scheduler_core::machine::{Failure, Plan, RunMove, StepAttempt};
use scheduler_core::policy::{Concurrency, OnConflict};
use scheduler_core::{ExecState, Modules, RunState, Sequence};
use scheduler_tracker::{
    Admitted, AttemptRecord, Close, ExecKey, ExecResult, NewEvent, NewRun, Route, Store, WorkerInfo, Write,
};
use std::time::Duration;
use uuid::Uuid;

async fn with_store<F, Fut>(test: F)
where
    F: Fn(common::TestStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    common::each_backend("events_t", test).await;
}

fn new_run(steps: usize, healthcheck: Option<&str>) -> NewRun {
    let modules = Modules::parse("modules.json", r#"{"m": {"cmd": "./m.sh"}}"#).unwrap();
    let body: Vec<String> = (0..steps).map(|_| r#"{"module_name": "m"}"#.to_string()).collect();
    let seq = Sequence::parse("nightly", "f", &format!("[{}]", body.join(",")), &modules).unwrap();
    let mut snapshot = seq.snapshot(&modules, "q1");
    snapshot.healthcheck_url = healthcheck.map(str::to_string);
    NewRun {
        id: Uuid::now_v7(),
        queue: "q1".into(),
        trigger: "test".into(),
        snapshot,
        schedule: None,
        logical_date: None,
    }
}

fn moving(from: RunState, to: RunState) -> Plan {
    Plan {
        run: Some(RunMove { from, to }),
        ..Plan::default()
    }
}

fn write<'a>(run_id: Uuid, close: Option<Close<'a>>, plan: &'a Plan) -> Write<'a> {
    Write {
        run_id,
        close,
        plan,
        claim_for: None,
    }
}

async fn kinds(s: &dyn Store, run_id: Uuid) -> Vec<String> {
    s.run_events(run_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// Starts a run (its first step queued, not claimed).
async fn start(s: &dyn Store, run: &NewRun) {
    s.create_run(run).await.unwrap();
    let plan = Plan {
        queue: Some(StepAttempt::at(0, 1)),
        ..moving(RunState::Queued, RunState::Running)
    };
    assert!(s.apply(&write(run.id, None, &plan)).await.unwrap().complete(&plan));
}

fn failing() -> Plan {
    Plan {
        failure: Some(Failure {
            step: 0,
            reason: "exit code 3".into(),
        }),
        ..moving(RunState::Running, RunState::Failed)
    }
}

#[tokio::test]
async fn a_failed_run_records_one_run_failed_and_the_next_success_one_run_recovered() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let a = new_run(1, Some("https://hc.example/p/1"));
        start(s, &a).await;
        assert_eq!(kinds(s, a.id).await, ["healthcheck_start"]);
        assert!(s.apply(&write(a.id, None, &failing())).await.unwrap().run);
        // A duplicate error_handler does not apply, and records nothing.
        assert!(!s.apply(&write(a.id, None, &failing())).await.unwrap().run);
        assert_eq!(
            kinds(s, a.id).await,
            ["healthcheck_start", "run_failed", "healthcheck_fail"]
        );
        let failed = &s.run_events(a.id).await.unwrap()[1];
        assert_eq!((failed.step, failed.message.as_deref()), (Some(0), Some("exit code 3")));
        assert_eq!(
            (failed.sequence.as_deref(), &failed.detail["module"]),
            (Some("nightly"), &serde_json::json!("m"))
        );

        // A second failure lengthens the streak; the next success ends it.
        let b = new_run(1, None);
        start(s, &b).await;
        s.apply(&write(b.id, None, &failing())).await.unwrap();
        assert_eq!(kinds(s, b.id).await, ["run_failed"], "no healthcheck: no pings");
        let c = new_run(1, Some("https://hc.example/p/1"));
        start(s, &c).await;
        s.apply(&write(c.id, None, &moving(RunState::Running, RunState::Succeeded)))
            .await
            .unwrap();
        assert_eq!(
            kinds(s, c.id).await,
            ["healthcheck_start", "run_recovered", "healthcheck_success"]
        );
        let recovered = &s.run_events(c.id).await.unwrap()[1];
        assert_eq!(recovered.detail["failures"], 2);
        // Green stays green: no second recovery.
        let d = new_run(1, None);
        start(s, &d).await;
        s.apply(&write(d.id, None, &moving(RunState::Running, RunState::Succeeded)))
            .await
            .unwrap();
        assert!(kinds(s, d.id).await.is_empty());
        // A canceled run tells nothing.
        let e = new_run(1, None);
        start(s, &e).await;
        s.apply(&write(e.id, None, &moving(RunState::Running, RunState::Canceled)))
            .await
            .unwrap();
        assert!(kinds(s, e.id).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_step_waiting_to_retry_records_step_retrying_and_a_step_that_succeeds_records_nothing() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let mut run = new_run(2, None);
        run.snapshot.steps[0].retry.retries = 2;
        let id = run.id;
        s.create_run(&run).await.unwrap();
        let worker = Uuid::now_v7();
        let plan = Plan {
            queue: Some(StepAttempt::at(0, 1)),
            ..moving(RunState::Queued, RunState::Running)
        };
        s.apply(&write(id, None, &plan)).await.unwrap();
        let key = ExecKey {
            run_id: id,
            step: 0,
            attempt: 1,
        };
        s.claim(key, worker, Duration::from_secs(30)).await.unwrap().unwrap();
        let mut failed = ExecResult::new(ExecState::Failed);
        failed.exit_code = Some(3);
        failed.error = Some("exit code 3".into());
        let retry = Plan {
            queue: Some(StepAttempt {
                retry: 1,
                delay: Some(Duration::from_secs(60)),
                ..StepAttempt::at(0, 2)
            }),
            ..Plan::default()
        };
        let finish = Close::Finish {
            key,
            worker_id: worker,
            result: &failed,
        };
        assert!(
            s.apply(&write(id, Some(finish), &retry))
                .await
                .unwrap()
                .complete(&retry)
        );
        // The same result again: the close does not apply, nothing is recorded.
        assert!(!s.apply(&write(id, Some(finish), &retry)).await.unwrap().closed);
        let events = s.run_events(id).await.unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(
            (e.kind.as_str(), e.step, e.attempt),
            ("step_retrying", Some(0), Some(1))
        );
        assert_eq!(e.detail["retry"], 1);
        assert_eq!(e.detail["retries"], 2);
        assert_eq!(e.detail["next_attempt"], 2);
        assert_eq!(e.detail["exit_code"], 3);
        assert!(e.detail["due_at"].is_string());

        // The retry succeeds and hands on: the hot path records no event.
        let key2 = ExecKey { attempt: 2, ..key };
        s.claim(key2, worker, Duration::from_secs(30)).await.unwrap();
        let ok = ExecResult::new(ExecState::Succeeded);
        let next = Plan {
            queue: Some(StepAttempt::at(1, 1)),
            ..Plan::default()
        };
        let finish = Close::Finish {
            key: key2,
            worker_id: worker,
            result: &ok,
        };
        assert!(s.apply(&write(id, Some(finish), &next)).await.unwrap().complete(&next));
        assert_eq!(s.run_events(id).await.unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_missed_slot_and_a_skipped_slot_are_told_once_with_their_ledger_rows() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let slot = Utc.with_ymd_and_hms(2026, 11, 28, 9, 0, 0).unwrap();
        assert!(
            s.record_slot("hourly", slot, "missed", Some("passed while no scheduler ran"))
                .await
                .unwrap()
        );
        assert!(!s.record_slot("hourly", slot, "missed", Some("again")).await.unwrap());
        let later = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
        assert!(s.record_slot("hourly", later, "coalesced", None).await.unwrap());
        let events = s.recent_events(10).await.unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            (
                events[0].kind.as_str(),
                events[0].schedule.as_deref(),
                events[0].slot_at
            ),
            ("slot_missed", Some("hourly"), Some(slot))
        );
        assert_eq!(events[0].message.as_deref(), Some("passed while no scheduler ran"));

        // One run holds the only slot; the schedule's next slot is skipped.
        let limited = Concurrency {
            max_concurrent: Some(1),
            on_conflict: OnConflict::Skip,
        };
        let mut holder = new_run(1, None);
        holder.snapshot.concurrency = limited;
        assert_eq!(s.create_run(&holder).await.unwrap(), Admitted::Queued);
        let mut run = new_run(1, None);
        run.snapshot.concurrency = limited;
        let at = Utc.with_ymd_and_hms(2026, 11, 28, 11, 0, 0).unwrap();
        let admitted = s.fire_slot("hourly", at, "started", &run).await.unwrap().unwrap();
        assert!(matches!(admitted, Admitted::Skipped(_)));
        assert!(
            s.fire_slot("hourly", at, "started", &new_run(1, None))
                .await
                .unwrap()
                .is_none()
        );
        let skipped = s.run_events(run.id).await.unwrap();
        assert_eq!(skipped.len(), 1);
        assert_eq!(
            (skipped[0].kind.as_str(), skipped[0].slot_at),
            ("slot_skipped", Some(at))
        );
        assert_eq!(skipped[0].sequence.as_deref(), Some("nightly"));
    })
    .await;
}

#[tokio::test]
async fn a_silent_worker_is_lost_once_per_silence_and_a_stopped_one_never() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let info = |id| WorkerInfo {
            id,
            host: "etl-3".into(),
            pid: 4242,
            version: "t".into(),
            concurrency: 1,
            queues: vec!["q1".into()],
        };
        let (lost, stopped) = (Uuid::now_v7(), Uuid::now_v7());
        s.register_worker(&info(lost)).await.unwrap();
        s.register_worker(&info(stopped)).await.unwrap();
        s.worker_stopped(stopped).await.unwrap();
        assert!(
            s.mark_lost_workers(Duration::from_secs(60)).await.unwrap().is_empty(),
            "heartbeating"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            s.mark_lost_workers(Duration::from_millis(10)).await.unwrap(),
            vec![(lost, "etl-3".to_string())]
        );
        assert!(
            s.mark_lost_workers(Duration::from_millis(10)).await.unwrap().is_empty(),
            "once"
        );
        // It comes back, then goes silent again: told again.
        s.heartbeat(lost, false, Duration::from_secs(30), &[]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(s.mark_lost_workers(Duration::from_millis(10)).await.unwrap().len(), 1);
        let events = s.recent_events(10).await.unwrap();
        assert_eq!(events.len(), 2);
        assert!(
            events
                .iter()
                .all(|e| e.kind == "worker_lost" && e.worker_id == Some(lost))
        );
        assert_eq!(events[0].detail["host"], "etl-3");
        assert_eq!(events[0].detail["pid"], 4242);
    })
    .await;
}

fn route(event_id: i64, target: &str, held: bool) -> Route {
    Route {
        event_id,
        target: target.into(),
        kind: "run_failed".into(),
        subject: "nightly".into(),
        held,
        url: None,
    }
}

#[tokio::test]
async fn a_worker_whose_keeper_reports_its_death_is_lost_at_once_with_the_steps_it_held_once() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let info = |id| WorkerInfo {
            id,
            host: "etl-7".into(),
            pid: 777,
            version: "t".into(),
            concurrency: 2,
            queues: vec!["q1".into()],
        };
        let (dead, stopped) = (Uuid::now_v7(), Uuid::now_v7());
        s.register_worker(&info(dead)).await.unwrap();
        s.register_worker(&info(stopped)).await.unwrap();
        s.worker_stopped(stopped).await.unwrap();
        let run = new_run(2, None);
        start(s, &run).await;
        let key = ExecKey {
            run_id: run.id,
            step: 0,
            attempt: 1,
        };
        assert!(s.claim(key, dead, Duration::from_secs(30)).await.unwrap().is_some());
        assert!(s.take_alert_lease(dead, Duration::from_secs(30)).await.unwrap());

        assert_eq!(s.worker_died(dead).await.unwrap(), 1);
        let events = s.recent_events(10).await.unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!((e.kind.as_str(), e.worker_id), ("worker_lost", Some(dead)));
        assert_eq!(
            e.message.as_deref(),
            Some("the worker process died; its keeper stopped its modules")
        );
        assert_eq!(e.detail["host"], "etl-7");
        assert_eq!(e.detail["pid"], 777);
        assert_eq!(
            e.detail["runs"],
            serde_json::json!([{"run_id": run.id, "sequence": "nightly", "step": 1, "attempt": 1}]),
            "the step it held, counted from 1"
        );
        assert!(
            s.take_alert_lease(Uuid::now_v7(), Duration::from_secs(30))
                .await
                .unwrap(),
            "its alert lease is free for another sender"
        );
        // Told once: neither a second report nor recovery's look for silent
        // workers tells it again.
        assert_eq!(s.worker_died(dead).await.unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let silent: Vec<Uuid> = s
            .mark_lost_workers(Duration::from_millis(10))
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert!(!silent.contains(&dead), "{silent:?}");
        // A worker that stopped on purpose is not lost when its keeper ends.
        s.worker_died(stopped).await.unwrap();
        assert_eq!(s.recent_events(10).await.unwrap().len(), 1, "still the one event");
    })
    .await;
}

#[tokio::test]
async fn a_delivery_is_routed_once_claimed_by_one_sender_and_its_attempts_recorded() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let event = NewEvent {
            kind: "run_failed".into(),
            sequence: Some("nightly".into()),
            message: Some("exit code 1".into()),
            ..Default::default()
        };
        let id = s.record_event(&event).await.unwrap();
        assert_eq!(s.unrouted_events(10).await.unwrap().len(), 1);
        let routes = [route(id, "a", false), route(id, "b", false)];
        s.route_events(&[id], &routes).await.unwrap();
        // Routing again (a second sender) adds nothing.
        s.route_events(&[id], &routes).await.unwrap();
        assert!(s.unrouted_events(10).await.unwrap().is_empty());
        assert_eq!(s.recent_deliveries(10).await.unwrap().len(), 2);

        // Two senders claim at once: each delivery goes to one of them.
        let (w1, w2) = (Uuid::now_v7(), Uuid::now_v7());
        let hold = Duration::from_secs(60);
        let (c1, c2) = tokio::join!(s.claim_deliveries(w1, 10, hold), s.claim_deliveries(w2, 10, hold));
        let (c1, c2) = (c1.unwrap(), c2.unwrap());
        assert_eq!(c1.len() + c2.len(), 2, "{c1:?} {c2:?}");
        let mut all: Vec<_> = c1.iter().chain(&c2).map(|d| d.target.clone()).collect();
        all.sort();
        assert_eq!(all, ["a", "b"]);
        assert!(s.claim_deliveries(w1, 10, hold).await.unwrap().is_empty(), "claimed");
        let (first, holder) = if c1.iter().any(|d| d.target == "a") {
            (&c1, w1)
        } else {
            (&c2, w2)
        };
        let a = first.iter().find(|d| d.target == "a").unwrap();
        assert_eq!((a.attempt, a.event.message.as_deref()), (1, Some("exit code 1")));

        let record = |worker, attempt, outcome, retry_in| AttemptRecord {
            event_id: id,
            target: "a",
            worker_id: worker,
            attempt,
            outcome,
            status: Some(500),
            response: "boom",
            elapsed: Duration::from_millis(12),
            retry_in,
        };
        let other = if holder == w1 { w2 } else { w1 };
        assert!(
            !s.record_attempt(&record(other, 1, "sent", None)).await.unwrap(),
            "not its claim"
        );
        assert!(
            s.record_attempt(&record(holder, 1, "retry", Some(Duration::ZERO)))
                .await
                .unwrap()
        );
        assert!(
            !s.record_attempt(&record(holder, 1, "sent", None)).await.unwrap(),
            "recorded once"
        );
        let again = s.claim_deliveries(other, 10, hold).await.unwrap();
        assert_eq!(
            (again.len(), again[0].attempt),
            (1, 2),
            "due again, at its second attempt"
        );
        assert!(s.record_attempt(&record(other, 2, "sent", None)).await.unwrap());
        let a = s
            .recent_deliveries(10)
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.target == "a")
            .unwrap();
        assert_eq!((a.state.as_str(), a.attempts), ("sent", 2));
        let counts = s.alert_counts().await.unwrap();
        assert!(counts.contains(&("a".into(), "retry".into(), 1)) && counts.contains(&("a".into(), "sent".into(), 1)));
    })
    .await;
}

#[tokio::test]
async fn held_deliveries_are_counted_into_the_one_that_goes() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let mut ids = vec![];
        for _ in 0..4 {
            let e = NewEvent {
                kind: "run_failed".into(),
                sequence: Some("nightly".into()),
                ..Default::default()
            };
            ids.push(s.record_event(&e).await.unwrap());
        }
        s.route_events(
            &ids,
            &[
                route(ids[0], "a", false),
                route(ids[1], "a", true),
                route(ids[2], "a", true),
            ],
        )
        .await
        .unwrap();
        let groups = s.held_groups().await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].count, 2);
        assert!(
            groups[0].last_sent.is_some(),
            "the first went (not answered yet): the period counts from it"
        );
        assert!(s.flush_held("a", "run_failed", "nightly").await.unwrap());
        assert!(
            !s.flush_held("a", "run_failed", "nightly").await.unwrap(),
            "nothing held any more"
        );
        let ds = s.recent_deliveries(10).await.unwrap();
        let state = |id: i64| {
            ds.iter()
                .find(|d| d.event_id == id)
                .map(|d| (d.state.clone(), d.folded))
                .unwrap()
        };
        assert_eq!(
            state(ids[2]),
            ("pending".into(), 1),
            "the newest goes, counting the other"
        );
        assert_eq!(state(ids[1]), ("folded".into(), 0));
        // A new event that goes at once takes whatever was held.
        s.route_events(&[ids[3]], &[route(ids[3], "a", false)]).await.unwrap();
        assert!(s.held_groups().await.unwrap().is_empty());
        let claimed = s
            .claim_deliveries(Uuid::now_v7(), 10, Duration::from_secs(60))
            .await
            .unwrap();
        let newest = claimed.iter().find(|d| d.event.id == ids[2]).unwrap();
        assert_eq!(newest.folded, 1);
        assert!(newest.folded_since.is_some());
        assert!(
            s.alert_counts()
                .await
                .unwrap()
                .contains(&("a".into(), "folded".into(), 1))
        );
    })
    .await;
}

#[tokio::test]
async fn a_stall_mark_records_step_stalled_once_per_stall() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let mut run = new_run(1, None);
        run.snapshot.steps[0].stall_secs = Some(300);
        let id = run.id;
        start(s, &run).await;
        let key = ExecKey {
            run_id: id,
            step: 0,
            attempt: 1,
        };
        s.claim(key, Uuid::now_v7(), Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert!(s.mark_stalled(key, true).await.unwrap());
        assert!(
            !s.mark_stalled(key, true).await.unwrap(),
            "marked already: nothing more"
        );
        assert!(s.mark_stalled(key, false).await.unwrap(), "it wrote again");
        assert!(s.mark_stalled(key, true).await.unwrap(), "and went silent again");
        let events = s.run_events(id).await.unwrap();
        assert_eq!(events.len(), 2, "{events:?}");
        let e = &events[0];
        assert_eq!((e.kind.as_str(), e.step, e.attempt), ("step_stalled", Some(0), Some(1)));
        assert_eq!(e.message.as_deref(), Some("no output for 300 s"));
        assert_eq!(
            (e.detail["module"].as_str(), e.detail["stall_secs"].as_i64()),
            (Some("m"), Some(300))
        );
    })
    .await;
}

/// The worker that records a run's last step ends the run in the same
/// write (close, then move): both apply or neither does, and the run's
/// events come with it.
#[tokio::test]
async fn a_close_that_ends_the_run_moves_it_with_its_events_only_if_the_close_applied() {
    with_store(|t| async move {
        let s: &dyn Store = &*t;
        let worker = Uuid::now_v7();
        let claim = |id| async move {
            let key = ExecKey {
                run_id: id,
                step: 0,
                attempt: 1,
            };
            s.claim(key, worker, Duration::from_secs(30)).await.unwrap().unwrap();
            key
        };
        // Succeeded: the run moves with its healthcheck ping.
        let a = new_run(1, Some("https://hc.example/p/1"));
        start(s, &a).await;
        let key = claim(a.id).await;
        let ok = ExecResult::new(ExecState::Succeeded);
        let end = moving(RunState::Running, RunState::Succeeded);
        let finish = Close::Finish {
            key,
            worker_id: worker,
            result: &ok,
        };
        let written = s.apply(&write(a.id, Some(finish), &end)).await.unwrap();
        assert!(written.closed && written.run && written.complete(&end), "{written:?}");
        let d = s.run_detail(a.id).await.unwrap().unwrap();
        assert_eq!(
            (d.run.state.as_str(), d.executions[0].state.as_str()),
            ("succeeded", "succeeded")
        );
        assert!(d.run.finished_at.is_some());
        assert_eq!(kinds(s, a.id).await, ["healthcheck_start", "healthcheck_success"]);
        // Again (a duplicate write): neither part applies, nothing is recorded.
        let again = s.apply(&write(a.id, Some(finish), &end)).await.unwrap();
        assert!(!again.closed && !again.run, "{again:?}");
        assert_eq!(kinds(s, a.id).await.len(), 2);

        // Failed: the run fails with its step and reason, and says so once.
        let b = new_run(1, None);
        start(s, &b).await;
        let key = claim(b.id).await;
        let mut bad = ExecResult::new(ExecState::Failed);
        bad.error = Some("exit code 3".into());
        let fail = failing();
        let finish = Close::Finish {
            key,
            worker_id: worker,
            result: &bad,
        };
        assert!(
            s.apply(&write(b.id, Some(finish), &fail))
                .await
                .unwrap()
                .complete(&fail)
        );
        let d = s.run_detail(b.id).await.unwrap().unwrap();
        assert_eq!((d.run.state.as_str(), d.run.failed_step), ("failed", Some(0)));
        assert_eq!(kinds(s, b.id).await, ["run_failed"]);

        // Another worker's close does not apply: the run stays running.
        let c = new_run(1, None);
        start(s, &c).await;
        let key = claim(c.id).await;
        let stranger = Close::Finish {
            key,
            worker_id: Uuid::now_v7(),
            result: &ok,
        };
        let written = s.apply(&write(c.id, Some(stranger), &end)).await.unwrap();
        assert!(!written.closed && !written.run, "{written:?}");
        assert_eq!(s.run_detail(c.id).await.unwrap().unwrap().run.state, "running");

        // A run canceled meanwhile: the step is recorded, the run is not moved.
        s.apply(&write(c.id, None, &moving(RunState::Running, RunState::Canceled)))
            .await
            .unwrap();
        let finish = Close::Finish {
            key,
            worker_id: worker,
            result: &ok,
        };
        let written = s.apply(&write(c.id, Some(finish), &end)).await.unwrap();
        assert!(written.closed && !written.run, "{written:?}");
        assert_eq!(s.run_detail(c.id).await.unwrap().unwrap().run.state, "canceled");
        assert!(kinds(s, c.id).await.is_empty());
    })
    .await;
}
