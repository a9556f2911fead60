//! Retention through the real binary: `scheduler prune` deletes old finished
//! runs with their executions and logs and nothing else (`--dry-run` counts
//! them first), keeps the newest of each sequence with `--keep-last`, goes
//! in batches, refuses an age it cannot read; and a worker told to
//! (`--prune-older-than`) prunes on its own from its recovery loop; alert
//! events go too once delivered or given up, never one still pending, and
//! outlive their runs. Runs and events are made old by moving their times
//! back 40 days in the test's store.

mod common;

use common::receiver::Receiver;
use common::sql::{now, shifted, uuid};
use common::{Env, seq, wait_until};
use std::time::Duration;
use uuid::Uuid;

const SAY: &str = "#!/bin/sh\necho \"hello from step $ETL_STEP\"\n";
const NAP: &str = "#!/bin/sh\nsleep 60\n";

/// Runs `sql` (a statement, or a query of one bigint) on the test's store.
fn sql(env: &Env, sql: &str) -> i64 {
    env.sql(sql)
}

fn exists(env: &Env, run: Uuid) -> bool {
    sql(env, &format!("SELECT count(*) FROM runs WHERE id = {}", uuid(run))) == 1
}

/// Waits until every execution of a finished run has its whole log written
/// (the worker ships logs apart from the step's commit).
fn wait_logs_complete(env: &Env) {
    wait_until(
        "every finished execution's log complete",
        Duration::from_secs(20),
        || {
            let open = sql(
                env,
                "SELECT count(*) FROM executions WHERE state = 'succeeded' AND log_bytes IS NULL",
            );
            if open == 0 {
                Ok(())
            } else {
                Err(format!("{open} logs still open"))
            }
        },
    );
}

/// Moves every run and execution 40 days back in time.
fn age_everything(env: &Env) {
    sql(
        env,
        &format!(
            "UPDATE runs SET created_at = {}, finished_at = {}",
            shifted("created_at", -40),
            shifted("finished_at", -40)
        ),
    );
}

fn prune(env: &Env, args: &[&str]) -> (String, String, i32) {
    let out = env.run(&[&["prune"], args].concat());
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn prune_deletes_old_finished_runs_with_their_executions_and_logs_and_nothing_else() {
    let (say, nap) = (SAY, NAP);
    let mut env = Env::new(
        &[("say", say), ("nap", nap)],
        &[
            ("two", &seq(&["say", "say"])),
            ("one", &seq(&["say"])),
            (
                "slow",
                r#"{"max_concurrent": 1, "on_conflict": "queue", "steps": [{"module_name": "nap"}]}"#,
            ),
        ],
    );
    // Its start goes to a queue no worker serves: it stays queued.
    std::fs::write(
        env.project.join("etl_sequences/elsewhere.json"),
        format!(
            r#"{{"queue": "{}-nobody", "steps": [{{"module_name": "say"}}]}}"#,
            env.queue
        ),
    )
    .unwrap();
    env.spawn_worker(&[]);
    let finished: Vec<Uuid> = ["two", "two", "one", "one", "one"]
        .iter()
        .map(|s| env.start(s))
        .collect();
    for run in &finished {
        assert_eq!(env.wait_final(*run, Duration::from_secs(60))["state"], "succeeded");
    }
    wait_logs_complete(&env);
    let running = env.start("slow");
    env.wait_exec(running, Duration::from_secs(30), |e| e["state"] == "running");
    let waiting = env.start("slow");
    let queued = env.start("elsewhere");
    assert_eq!(env.show(waiting)["state"], "waiting");
    assert_eq!(env.show(queued)["state"], "queued");
    age_everything(&env);
    // A schedule slot that started one of the pruned runs.
    sql(
        &env,
        &format!(
            "INSERT INTO schedule_slots (schedule, slot_at, fate, run_id)
             VALUES ('nightly', {}, 'started', {})",
            shifted(&now(), -40),
            uuid(finished[0])
        ),
    );
    let ids = finished.iter().map(|r| uuid(*r)).collect::<Vec<_>>().join(",");
    let executions = sql(
        &env,
        &format!("SELECT count(*) FROM executions WHERE run_id IN ({ids})"),
    );
    let log_rows = sql(
        &env,
        &format!("SELECT count(*) FROM execution_logs WHERE run_id IN ({ids})"),
    );
    assert_eq!(executions, 7);
    assert!(log_rows >= 7, "each step said hello: {log_rows} log rows");
    let expected = format!("5 runs, 7 executions, {log_rows} log rows");

    // Nothing young enough to go yet.
    let (out, err, code) = prune(&env, &["--older-than", "41d", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would delete 0 runs, 0 executions, 0 log rows"), "{out}");

    let (out, err, code) = prune(&env, &["--older-than", "30d", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("would delete {expected}")), "{out}");
    assert!(out.contains("(older than 30d)"), "{out}");
    assert!(finished.iter().all(|r| exists(&env, *r)), "a dry run deletes nothing");

    let (out, err, code) = prune(&env, &["--older-than", "30d"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("deleted {expected}")), "{out}");
    for run in &finished {
        assert!(!exists(&env, *run));
        let shown = env.run(&["show", &run.to_string()]);
        assert_eq!(shown.status.code(), Some(1), "a pruned run is no longer recorded");
    }
    assert_eq!(
        sql(
            &env,
            &format!("SELECT count(*) FROM executions WHERE run_id IN ({ids})")
        ),
        0
    );
    assert_eq!(
        sql(
            &env,
            &format!("SELECT count(*) FROM execution_logs WHERE run_id IN ({ids})")
        ),
        0
    );
    for (run, state) in [(running, "running"), (waiting, "waiting"), (queued, "queued")] {
        assert_eq!(env.show(run)["state"], state, "an unfinished run stays, however old");
    }
    assert_eq!(
        sql(
            &env,
            "SELECT count(*) FROM schedule_slots WHERE schedule = 'nightly' AND run_id IS NULL"
        ),
        1,
        "the slot stays, without its run"
    );

    let (out, _, code) = prune(&env, &["--older-than", "30d"]);
    assert_eq!(code, 0);
    assert!(out.contains("deleted 0 runs"), "nothing more the second time: {out}");
}

#[test]
fn keep_last_keeps_the_newest_of_each_sequence_and_batches_are_small() {
    let mut env = Env::new(&[("say", SAY)], &[("a", &seq(&["say"])), ("b", &seq(&["say"]))]);
    env.spawn_worker(&[]);
    let a: Vec<Uuid> = (0..5).map(|_| env.start("a")).collect();
    let b: Vec<Uuid> = (0..2).map(|_| env.start("b")).collect();
    for run in a.iter().chain(&b) {
        env.wait_final(*run, Duration::from_secs(60));
    }
    wait_logs_complete(&env);
    age_everything(&env);

    let (out, err, code) = prune(&env, &["--older-than", "30d", "--keep-last", "2", "--batch-size", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("keeping the 2 newest of each sequence"), "{out}");
    // Seven runs looked at two by two: 2 + 2 + 2 + 1.
    assert!(out.contains("deleted 3 runs, 3 executions"), "{out}");
    assert!(out.contains("in 4 batches"), "{out}");
    let kept: Vec<bool> = a.iter().chain(&b).map(|r| exists(&env, *r)).collect();
    assert_eq!(kept, [false, false, false, true, true, true, true]);
}

#[test]
fn an_age_it_cannot_read_is_refused_with_what_to_write() {
    let env = Env::new(&[], &[]);
    for bad in ["30", "30 days", "1.5d", "3w"] {
        let (_, err, code) = prune(&env, &["--older-than", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("30d, 12h, 90m, 45s"), "{bad}: {err}");
    }
    let (_, err, code) = prune(&env, &["--keep-last", "3"]);
    assert_eq!(code, 2);
    assert!(err.contains("--older-than"), "{err}");
    let out = env.run(&["worker", "--prune-keep-last", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --prune-older-than"));
}

#[test]
fn a_worker_told_to_prunes_old_finished_runs_from_its_recovery_loop() {
    let mut env = Env::new(
        &[("say", SAY), ("nap", NAP)],
        &[("s", &seq(&["say"])), ("slow", &seq(&["nap"]))],
    );
    env.spawn_worker(&["--prune-older-than", "30d", "--prune-every", "1", "--reap-every", "1"]);
    let old: Vec<Uuid> = (0..3).map(|_| env.start("s")).collect();
    for run in &old {
        env.wait_final(*run, Duration::from_secs(60));
    }
    let slow = env.start("slow");
    env.wait_exec(slow, Duration::from_secs(30), |e| e["state"] == "running");
    wait_logs_complete(&env);
    age_everything(&env);
    let young = env.start("s");
    env.wait_final(young, Duration::from_secs(60));

    // An old alert event, delivered long ago (no target wanted it).
    sql(
        &env,
        &format!(
            "INSERT INTO events (kind, at, message, routed_at) VALUES ('test', {}, 'old', {})",
            shifted(&now(), -40),
            now()
        ),
    );

    wait_until("the worker to prune the old runs", Duration::from_secs(30), || {
        let left = old.iter().filter(|r| exists(&env, **r)).count()
            + sql(&env, "SELECT count(*) FROM events WHERE kind = 'test'") as usize;
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} old runs left"))
        }
    });
    env.wait_for_log(0, "retention: pruned finished runs", Duration::from_secs(5));
    assert!(env.worker_log(0).contains("runs=3"), "{}", env.worker_log(0));
    assert!(env.worker_log(0).contains("events=1"), "{}", env.worker_log(0));
    assert!(exists(&env, young), "young: kept");
    assert_eq!(env.show(slow)["state"], "running", "running: kept, however old");
}

#[test]
fn prune_deletes_old_alert_events_once_delivered_and_keeps_a_pending_one_past_its_run() {
    let hook = Receiver::start(&[]);
    let mut env = Env::new(&[("fail", "#!/bin/sh\nexit 3\n")], &[("f", &seq(&["fail"]))]);
    let alerts = serde_json::json!({"targets": {"hook": {"type": "webhook", "url": hook.url("/hook"), "events": ["run_failed"]}}});
    std::fs::write(env.project.join("alerts.json"), alerts.to_string()).unwrap();
    env.spawn_worker(&[]);
    let runs: Vec<Uuid> = (0..3).map(|_| env.start("f")).collect();
    for run in &runs {
        assert_eq!(env.wait_final(*run, Duration::from_secs(60))["state"], "failed");
    }
    wait_until("three alerts sent", Duration::from_secs(60), || {
        match sql(&env, "SELECT count(*) FROM alert_deliveries WHERE state = 'sent'") {
            3 => Ok(()),
            n => Err(format!("{n} sent\n{}", hook.summary())),
        }
    });
    // The newest is still to be tried again (as after a 500), tomorrow.
    // (The newest: retention keeps the newest alert let go to a target for
    // its kind and subject, which its max_frequency counts from.)
    let listed: serde_json::Value = serde_json::from_slice(&env.run(&["alerts", "--json"]).stdout).unwrap();
    let newest = listed
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|d| (d["created_at"].as_str().map(str::to_string), d["event_id"].as_i64()))
        .unwrap()
        .clone();
    let pending: Uuid = newest["run_id"].as_str().unwrap().parse().unwrap();
    sql(
        &env,
        &format!(
            "UPDATE alert_deliveries SET state = 'pending', next_at = {}
              WHERE event_id = {}",
            shifted(&now(), 1),
            newest["event_id"]
        ),
    );
    age_everything(&env);
    sql(&env, &format!("UPDATE events SET at = {}", shifted("at", -40)));

    let (out, err, code) = prune(&env, &["--older-than", "30d", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would delete 3 runs, 3 executions"), "{out}");
    assert!(
        out.contains("would delete 2 alert events and 2 deliveries (sent, given up or folded; none pending or held)"),
        "{out}"
    );
    assert_eq!(sql(&env, "SELECT count(*) FROM events"), 3, "a dry run deletes nothing");

    let (out, err, code) = prune(&env, &["--older-than", "30d"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted 3 runs"), "{out}");
    assert!(out.contains("deleted 2 alert events and 2 deliveries"), "{out}");
    assert!(runs.iter().all(|r| !exists(&env, *r)));
    // The pending one outlives its run, and is still listed.
    assert_eq!(
        sql(
            &env,
            &format!("SELECT count(*) FROM events WHERE run_id = {}", uuid(pending))
        ),
        1
    );
    let listed: serde_json::Value = serde_json::from_slice(&env.run(&["alerts", "--json"]).stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(
        (listed[0]["state"].as_str(), listed[0]["run_id"].as_str()),
        (Some("pending"), Some(pending.to_string().as_str()))
    );

    // Sent at last, it stays all the same: the newest alert of its kind let
    // go to the hook. The two pruned took their attempts with them.
    sql(
        &env,
        &format!("UPDATE alert_deliveries SET state = 'sent', sent_at = {}", now()),
    );
    let (out, _, code) = prune(&env, &["--older-than", "30d"]);
    assert_eq!(code, 0);
    assert!(out.contains("deleted 0 alert events and 0 deliveries"), "{out}");
    assert_eq!(
        sql(&env, "SELECT count(*) FROM alert_attempts"),
        1,
        "attempts with their deliveries"
    );
}
