//! A lost worker's step back in seconds, not a lease later: the keeper of a
//! SIGKILLed worker reports its death and recovery re-attempts the step at
//! its next pass; a worker frozen (SIGSTOP) past its lease has its module
//! stopped by its keeper before the step runs again elsewhere.

mod common;

use chrono::{DateTime, Utc};
use common::{Env, seq, wait_until};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::{Duration, Instant};
use uuid::Uuid;

const MINUTE: Duration = Duration::from_secs(60);

/// The id worker `n` logged when it started.
fn worker_id(env: &Env, n: usize) -> String {
    let log = env.worker_log(n);
    let at = log.find("worker_id=").expect("worker_id in the log") + "worker_id=".len();
    log[at..at + 36].to_string()
}

fn running(env: &Env, run: Uuid, attempt: u64) -> Value {
    env.wait_exec(run, MINUTE, |e| {
        e["attempt"] == attempt && e["state"] == "running" && e["pid"].is_number()
    })
}

#[test]
fn a_sigkilled_workers_step_is_attempted_again_within_seconds() {
    const KILLS: usize = 20;
    // One long step; two workers of one slot each, a lease of 30 s.
    let slow = "#!/bin/sh\necho \"start $ETL_ATTEMPT\" >> ledger.txt\nsleep 120\n";
    let mut env = Env::new(&[("slow", slow)], &[("s", &seq(&["slow"]))]);
    // Recovery's pass every second (5 s by default: LOST_WORKER_REAP_EVERY=5
    // measures that).
    let reap = std::env::var("LOST_WORKER_REAP_EVERY").unwrap_or_else(|_| "1".into());
    let args = [
        "--concurrency",
        "1",
        "--reap-every",
        &reap,
        "--max-attempts",
        "100",
        "--kill-grace",
        "1",
    ];
    let mut workers: Vec<(usize, String)> = (0..2)
        .map(|_| {
            let n = env.spawn_worker(&args);
            (n, worker_id(&env, n))
        })
        .collect();
    let run = env.start("s");
    let mut took = Vec::new();
    for attempt in 1..=KILLS as u64 {
        let exec = running(&env, run, attempt);
        let holder = exec["worker_id"].as_str().unwrap().to_string();
        let slot = workers
            .iter()
            .position(|(_, id)| *id == holder)
            .expect("a known worker");
        let killed_at = Utc::now();
        env.signal_worker(workers[slot].0, Signal::SIGKILL);
        let next = running(&env, run, attempt + 1);
        let started: DateTime<Utc> = next["started_at"].as_str().unwrap().parse().unwrap();
        took.push((started - killed_at).as_seconds_f64());
        // Replace the dead worker, so the next kill has a worker to hand to.
        env.wait_worker(workers[slot].0, MINUTE);
        let n = env.spawn_worker(&args);
        workers[slot] = (n, worker_id(&env, n));
    }
    let v = env.show(run);
    let execs = v["executions"].as_array().unwrap();
    assert_eq!(execs.len(), KILLS + 1, "{v:#}");
    assert!(execs[..KILLS].iter().all(|e| e["state"] == "abandoned"));
    let mut sorted = took.clone();
    sorted.sort_by(f64::total_cmp);
    let (p50, max) = (sorted[KILLS / 2], sorted[KILLS - 1]);
    eprintln!(
        "SIGKILL to the next attempt's start over {KILLS} kills: p50 {p50:.2} s, max {max:.2} s \
         (lease 30 s, recovery every {reap} s)"
    );
    assert!(max < 10.0, "the re-attempt waited for the lease: {took:?}");
}

#[test]
fn a_frozen_workers_module_never_runs_beside_the_re_run_of_its_step() {
    // Notes a tick with its attempt every 100 ms, for 20 s.
    let ticker = "#!/bin/sh\ni=0\nwhile [ $i -lt 200 ]; do echo \"$ETL_ATTEMPT $(date +%s.%N)\" >> ticks.txt; sleep 0.1; i=$((i+1)); done\n";
    let mut env = Env::new(&[("ticker", ticker)], &[("s", &seq(&["ticker"]))]);
    let lease = [
        "--concurrency",
        "1",
        "--lease",
        "6",
        "--reap-every",
        "1",
        "--kill-grace",
        "1",
    ];
    let frozen = env.spawn_worker(&lease);
    let run = env.start("s");
    running(&env, run, 1);
    wait_until("the module's first ticks", MINUTE, || {
        let ticks = env.read("ticks.txt");
        if ticks.lines().count() >= 3 { Ok(()) } else { Err(ticks) }
    });
    env.signal_worker(frozen, Signal::SIGSTOP);
    let froze_at = Instant::now();
    // Another worker is there to take the step over once the lease lapses.
    env.spawn_worker(&lease);
    running(&env, run, 2);
    let took_over = froze_at.elapsed();
    wait_until("the second attempt's ticks", MINUTE, || {
        let ticks = env.read("ticks.txt");
        if ticks.lines().filter(|l| l.starts_with("2 ")).count() >= 3 {
            Ok(())
        } else {
            Err(ticks)
        }
    });
    let ticks = env.read("ticks.txt");
    let times = |attempt: &str| -> Vec<f64> {
        ticks
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(a, _)| *a == attempt)
            .map(|(_, t)| t.parse().unwrap())
            .collect()
    };
    let (first, second) = (times("1"), times("2"));
    let last_of_first = first.iter().copied().fold(f64::MIN, f64::max);
    let first_of_second = second.iter().copied().fold(f64::MAX, f64::min);
    assert!(
        last_of_first < first_of_second,
        "attempt 1 still ticked at {last_of_first} after attempt 2 began at {first_of_second}"
    );
    assert!(
        env.worker_log(frozen).contains("the worker is frozen"),
        "{}",
        env.worker_log(frozen)
    );
    eprintln!("frozen worker's step taken over after {took_over:?}; no tick overlapped");
    // Thawed, the frozen worker's late result does not replace attempt 2's.
    env.signal_worker(frozen, Signal::SIGCONT);
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let execs = v["executions"].as_array().unwrap();
    assert_eq!(execs[0]["state"], "abandoned", "{v:#}");
    assert_eq!(execs.last().unwrap()["state"], "succeeded");
}
