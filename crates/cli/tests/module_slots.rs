//! Module slots apart from runs in flight (`--extra-runs`), through the
//! real binary and the real store and queue: extra runs never make more
//! modules run at once than `--concurrency`, and a continuation that finds
//! no slot is handed back and still runs exactly once.

mod common;

use common::{Env, seq};
use serde_json::Value;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

/// Notes its start and end (nanoseconds) in slots.log, 10 ms apart.
const NOTED: &str =
    "#!/bin/sh\necho \"s $(date +%s%N)\" >> slots.log\nsleep 0.01\necho \"e $(date +%s%N)\" >> slots.log\n";

/// The most intervals of slots.log open at one instant.
fn most_at_once(log: &str) -> usize {
    let mut events: Vec<(u128, i32)> = log
        .lines()
        .filter_map(|l| {
            let (kind, at) = l.split_once(' ')?;
            Some((at.trim().parse().ok()?, if kind == "s" { 1 } else { -1 }))
        })
        .collect();
    // At a tie an end comes first: touching intervals do not overlap.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[test]
fn the_intervals_are_counted_as_they_overlap() {
    assert_eq!(most_at_once("s 1\ne 5\ns 2\ne 3\ns 4\ne 6\n"), 2);
    assert_eq!(most_at_once("s 1\ne 2\ns 2\ne 3\n"), 1);
}

#[test]
fn extra_runs_in_flight_never_run_more_modules_at_once_than_the_concurrency() {
    let mut env = Env::new(&[("noted", NOTED)], &[("five", &seq(&["noted"; 5]))]);
    // Queued before the worker starts, so that they are all in flight.
    let runs: Vec<_> = (0..24).map(|_| env.start("five")).collect();
    env.spawn_worker(&["--concurrency", "2", "--extra-runs", "2"]);
    for run in &runs {
        let v = env.wait_final(*run, MINUTE);
        assert_eq!(v["state"], "succeeded", "{v:#}");
    }
    let log = env.read("slots.log");
    assert_eq!(log.lines().count(), 24 * 5 * 2, "every module ran once:\n{log}");
    let most = most_at_once(&log);
    assert!(most <= 2, "{most} modules ran at once with --concurrency 2");
    assert_eq!(most, 2, "two slots were used at once");
    let worker = env.worker_log(0);
    assert!(
        worker.contains("modules are short: holding up to 2 runs beyond the module slots"),
        "the extra room opened: {worker}"
    );
}

/// Appends its run to long.log, then runs a second.
const LONG: &str = "#!/bin/sh\necho \"$ETL_RUN_ID\" >> long.log\nsleep 1\n";
/// Runs 150 ms: long enough for both runs to be in flight before either
/// ends, short of the wait bound.
const FIRST: &str = "#!/bin/sh\nsleep 0.15\n";
const QUICK: &str = "#!/bin/sh\nexit 0\n";

#[test]
fn a_continuation_that_finds_no_slot_is_handed_back_and_runs_once() {
    let mut env = Env::new(
        &[("quick", QUICK), ("first", FIRST), ("long", LONG)],
        &[("warm", &seq(&["quick"; 10])), ("pair", &seq(&["first", "long"]))],
    );
    env.spawn_worker(&["--concurrency", "1", "--extra-runs", "1"]);
    // Short modules open the extra room.
    let warm = env.start("warm");
    assert_eq!(env.wait_final(warm, MINUTE)["state"], "succeeded");
    env.wait_for_log(0, "modules are short", Duration::from_secs(10));
    // Two runs in flight for one slot: the first steps run one after the
    // other; one run's long step takes the slot for a second, and the
    // other's continuation, claimed when its first step was recorded,
    // waits past the bound and is handed back.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| env.start("pair"));
        let b = s.spawn(|| env.start("pair"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (va, vb) = (env.wait_final(a, MINUTE), env.wait_final(b, MINUTE));
    assert_eq!(va["state"], "succeeded", "{va:#}");
    assert_eq!(vb["state"], "succeeded", "{vb:#}");
    let handed: Vec<&Value> = [&va, &vb]
        .iter()
        .flat_map(|v| v["executions"].as_array().unwrap().iter())
        .filter(|e| e["state"] == "abandoned")
        .collect();
    assert_eq!(handed.len(), 1, "one continuation handed back: {va:#} {vb:#}");
    let e = handed[0];
    assert_eq!(e["module"], "long");
    assert_eq!(e["attempt"], 1);
    assert_eq!(e["pid"], Value::Null, "it never started: {e:#}");
    assert_eq!(e["given_back"], true, "not a lost attempt: {e:#}");
    let error = e["error"].as_str().unwrap();
    assert!(
        error.contains("was not started: this worker had no free module slot") && error.contains("as attempt 2"),
        "{error}"
    );
    // Each run's long module ran exactly once.
    let mut long = env.read("long.log").lines().map(str::to_owned).collect::<Vec<_>>();
    long.sort();
    let mut want = vec![a.to_string(), b.to_string()];
    want.sort();
    assert_eq!(long, want);
}

/// Runs a second and a half.
const SLOW: &str = "#!/bin/sh\nsleep 1.5\n";

#[test]
fn a_fresh_run_that_finds_no_slot_is_put_back_unclaimed_and_runs_after() {
    let mut env = Env::new(
        &[("quick", QUICK), ("slow", SLOW)],
        &[
            ("warm", &seq(&["quick"; 10])),
            ("slow", &seq(&["slow"])),
            ("after", &seq(&["quick", "quick"])),
        ],
    );
    env.spawn_worker(&["--concurrency", "1", "--extra-runs", "1"]);
    let warm = env.start("warm");
    assert_eq!(env.wait_final(warm, MINUTE)["state"], "succeeded");
    env.wait_for_log(0, "modules are short", Duration::from_secs(10));
    // The slow module holds the one slot; the next run is taken in the
    // extra room, finds no slot within the bound and goes back unclaimed.
    let slow = env.start("slow");
    env.wait_exec(slow, MINUTE, |e| e["state"] == "running");
    let after = env.start("after");
    env.wait_for_log(0, "no module slot came free", Duration::from_secs(10));
    let v = env.wait_final(after, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let execs = v["executions"].as_array().unwrap();
    assert_eq!(execs.len(), 2, "each step ran once, as its first attempt: {v:#}");
    assert!(
        execs.iter().all(|e| e["attempt"] == 1 && e["state"] == "succeeded"),
        "{v:#}"
    );
    let slow = env.wait_final(slow, MINUTE);
    assert_eq!(slow["state"], "succeeded");
    // It started only once the slow module had ended.
    let slow_end: chrono::DateTime<chrono::Utc> =
        slow["executions"][0]["finished_at"].as_str().unwrap().parse().unwrap();
    let after_start: chrono::DateTime<chrono::Utc> = execs[0]["started_at"].as_str().unwrap().parse().unwrap();
    assert!(after_start >= slow_end, "{after_start} before {slow_end}");
}
