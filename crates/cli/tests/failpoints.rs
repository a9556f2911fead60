//! One test per crash window named in ARCHITECTURE.md: a worker aborts at
//! that exact point (`SCHEDULER_FAILPOINTS`), another worker takes over, and
//! the run still ends correctly with every step succeeded exactly once.

mod common;

use common::{Env, seq, wait_until};
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

/// Every step of `s` succeeded exactly once in `v`.
fn each_step_once(v: &serde_json::Value, steps: u64) {
    assert_eq!(v["state"], "succeeded", "{v:#}");
    for step in 0..steps {
        let ok = v["executions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["step"] == step && e["state"] == "succeeded")
            .count();
        assert_eq!(ok, 1, "step {step} must have succeeded exactly once: {v:#}");
    }
}

/// A worker serving only the sequence's queue runs step 0 and hands step
/// 1, which runs on another queue, on with a publish; it aborts at
/// `failpoint` on the way. A worker serving both queues takes over; its log
/// is returned with the run.
fn crash_handing_on(failpoint: &str) -> (Env, serde_json::Value) {
    let mut env = Env::new(&[("m", MODULE)], &[]);
    let other = format!("{}-other", env.queue);
    let steps = serde_json::json!([{"module_name": "m"}, {"module_name": "m", "queue": other}]);
    std::fs::write(env.project.join("etl_sequences/s.json"), steps.to_string()).unwrap();
    let crashing = env.spawn_worker_with_env(&FAST, &[("SCHEDULER_FAILPOINTS", failpoint)]);
    let run = env.start("s");
    assert!(
        !env.wait_worker(crashing, MINUTE).success(),
        "the worker must have aborted at {failpoint}"
    );
    assert!(env.worker_log(crashing).contains(&format!("failpoint {failpoint}")));
    let both = format!("{},{other}", env.queue);
    let mut args = FAST.to_vec();
    args.extend(["--queue", &both]);
    env.spawn_worker(&args);
    let v = env.wait_final(run, 2 * MINUTE);
    each_step_once(&v, 2);
    assert_eq!(v["executions"].as_array().unwrap().len(), 2, "nothing ran twice: {v:#}");
    (env, v)
}

#[test]
fn a_crash_after_a_commit_that_hands_a_step_to_another_queue_is_recovered() {
    // Step 0's success and step 1's execution, queued on a queue this
    // worker does not serve, are committed; its exec_module is never
    // published: recovery publishes it.
    let (env, _) = crash_handing_on("after-commit");
    let log = env.worker_log(1);
    assert!(
        log.contains("recovery: published an exec_module that was committed but never sent"),
        "{log}"
    );
}

#[test]
fn a_draining_worker_that_crashes_after_the_last_commit_is_recovered() {
    // Draining, the worker does not end the run in the step's write: it
    // publishes end_etl, and dies before that. Recovery finds the run with
    // nothing in flight and decides again what follows its last step.
    let mut env = Env::new(&[("m", MODULE)], &[("s", &seq(&["m", "m"]))]);
    let crashing = env.spawn_worker_with_env(&FAST, &[("SCHEDULER_FAILPOINTS", "after-commit")]);
    let run = env.start("s");
    wait_until("the last step started", MINUTE, || {
        match env.read("ledger.txt").contains("start 1 ") {
            true => Ok(()),
            false => Err(env.read("ledger.txt")),
        }
    });
    env.signal_worker(crashing, nix::sys::signal::Signal::SIGTERM);
    assert!(
        !env.wait_worker(crashing, MINUTE).success(),
        "the worker must have aborted at after-commit"
    );
    env.spawn_worker(&FAST);
    let v = env.wait_final(run, 2 * MINUTE);
    each_step_once(&v, 2);
    let log = env.worker_log(1);
    assert!(log.contains("recovery: run had nothing in flight"), "{log}");
    assert_eq!(v["executions"].as_array().unwrap().len(), 2, "nothing ran twice: {v:#}");
}

#[test]
fn a_run_ends_in_the_write_that_records_its_last_step() {
    // Not draining, nothing is published after the last step: the armed
    // after-commit failpoint never fires and the run ends on one worker.
    let mut env = Env::new(&[("m", MODULE)], &[("s", &seq(&["m", "m"]))]);
    env.spawn_worker_with_env(&FAST, &[("SCHEDULER_FAILPOINTS", "after-commit")]);
    let v = env.wait_final(env.start("s"), MINUTE);
    each_step_once(&v, 2);
    assert!(!env.worker_log(0).contains("failpoint"), "{}", env.worker_log(0));
}

#[test]
fn a_crash_after_the_publish_before_it_is_noted_is_harmless() {
    // The exec_module is on the other queue, unnoted: the new worker runs
    // it; recovery may publish it again, and that duplicate is dropped.
    crash_handing_on("after-publish");
}
