//! One test per crash window named in ARCHITECTURE.md: a worker aborts at
//! that exact point (`SCHEDULER_FAILPOINTS`), another worker takes over, and
//! the run still ends correctly with every step succeeded exactly once.

mod common;

use common::{Env, seq};
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
const FAST: [&str; 8] = [
    "--lease",
    "3",
    "--reap-every",
    "1",
    "--republish-after",
    "2",
    "--kill-grace",
    "1",
];
/// Notes each start and end in the ledger, with the attempt and pid.
const MODULE: &str = "#!/bin/sh\necho \"start $ETL_STEP $ETL_ATTEMPT $$\" >> ledger.txt\nsleep 1\necho \"end $ETL_STEP $ETL_ATTEMPT $$\" >> ledger.txt\n";

fn crash_at(failpoint: &str) -> (Env, serde_json::Value) {
    crash_with(failpoint, MODULE)
}

fn crash_with(failpoint: &str, module: &str) -> (Env, serde_json::Value) {
    let mut env = Env::new(&[("m", module)], &[("s", &seq(&["m", "m"]))]);
    let crashing = env.spawn_worker_with_env(&FAST, &[("SCHEDULER_FAILPOINTS", failpoint)]);
    let run = env.start("s");
    let status = env.wait_worker(crashing, MINUTE);
    assert!(!status.success(), "the worker must have aborted at {failpoint}");
    let crash = failpoint.split(',').next().unwrap();
    assert!(env.worker_log(crashing).contains(&format!("failpoint {crash}")));
    env.spawn_worker(&FAST);
    let v = env.wait_final(run, 2 * MINUTE);
    assert_eq!(v["state"], "succeeded", "after a crash at {failpoint}: {v:#}");
    for step in 0..2 {
        let ok = v["executions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["step"] == step && e["state"] == "succeeded")
            .count();
        assert_eq!(ok, 1, "step {step} must have succeeded exactly once: {v:#}");
    }
    (env, v)
}

/// No other execution of a step starts while one that ran to its end is
/// running. (An execution without an end line was killed; recovery kills
/// it before it queues the next attempt, which the tests check by its log.)
fn assert_no_overlap(env: &Env) {
    let ledger = env.read("ledger.txt");
    let lines: Vec<Vec<&str>> = ledger.lines().map(|l| l.split(' ').collect()).collect();
    for (i, start) in lines.iter().enumerate().filter(|(_, l)| l[0] == "start") {
        let Some(end) = lines[i..].iter().position(|l| l[0] == "end" && l[3] == start[3]) else {
            continue;
        };
        let inside = &lines[i + 1..i + end];
        assert!(
            !inside.iter().any(|l| l[0] == "start" && l[1] == start[1]),
            "two executions of step {} overlapped:\n{ledger}",
            start[1]
        );
    }
}

#[test]
fn a_crash_after_the_claim_commit_is_recovered() {
    let (env, v) = crash_at("after-claim");
    assert_eq!(v["executions"][0]["state"], "abandoned", "{v:#}");
    assert_no_overlap(&env);
}

/// A crash after the spawn, before the pid is recorded: `failpoints` arms
/// it (with or without the keeper); `stopper` is the log line, in the log of
/// worker `by`, of what stopped the orphaned first attempt before it ended.
fn orphan_after_spawn_is_stopped(failpoints: &str, by: usize, stopper: &str) {
    // Long enough that the orphan would still be running when recovery acts.
    let (env, v) = crash_with(failpoints, &MODULE.replace("sleep 1", "sleep 8"));
    assert!(v["executions"][0]["pid"].is_null(), "the pid was never recorded: {v:#}");
    assert_eq!(v["executions"][0]["state"], "abandoned");
    let log = env.worker_log(by);
    assert!(log.contains(stopper), "{log}");
    assert!(
        !env.read("ledger.txt").contains("end 0 1 "),
        "the orphaned first attempt was killed before it ended"
    );
    assert_no_overlap(&env);
}

#[test]
fn a_crash_after_the_spawn_before_the_pid_is_recorded_is_stopped_by_the_keeper_and_rerun() {
    orphan_after_spawn_is_stopped(
        "after-spawn",
        0,
        "the worker is gone: stopping its module's process group",
    );
}

#[test]
fn a_crash_after_the_spawn_without_a_keeper_is_found_by_recovery_and_rerun() {
    // No keeper (as if the OOM killer took it too): recovery's own search.
    orphan_after_spawn_is_stopped(
        "after-spawn,no-keeper",
        1,
        "killing the process group of an execution whose worker died",
    );
}

#[test]
fn a_crash_after_the_success_commit_before_the_publish_is_recovered() {
    // The last step's success is committed, end_etl never published:
    // recovery finds the run with nothing in flight and decides it again.
    let (env, v) = crash_at("after-commit");
    assert!(
        env.worker_log(1).contains("recovery: run had nothing in flight"),
        "{}",
        env.worker_log(1)
    );
    assert_eq!(v["executions"].as_array().unwrap().len(), 2, "nothing ran twice: {v:#}");
}

#[test]
fn a_crash_after_the_publish_before_it_is_noted_is_harmless() {
    let (_env, v) = crash_at("after-publish");
    assert_eq!(v["executions"].as_array().unwrap().len(), 2, "nothing ran twice: {v:#}");
}
