//! Recovery: a trigger while the broker is unreachable, a worker killed with
//! SIGKILL in the middle of a module (re-run once, or the run fails at the
//! attempt limit), and the keeper that stops a dead worker's modules.

mod common;

use common::{Env, LEDGER_MODULE, alive, assert_stays, seq, wait_until};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
const FAST_RECOVERY: [&str; 6] = ["--reap-every", "1", "--republish-after", "1", "--lease", "3"];
/// How soon the keeper must act once its worker is gone.
const KEEPER_ACTS_WITHIN: Duration = Duration::from_secs(5);
/// How long a stopped module is watched for a late "end" line.
const NO_END_FOR: Duration = Duration::from_secs(1);
/// How long the keeper must stay up after a SIGTERM of its own.
const KEEPER_IGNORES_SIGTERM_FOR: Duration = Duration::from_millis(300);

#[test]
fn a_run_started_while_the_broker_is_unreachable_is_recorded_and_runs_later() {
    if !common::distributed_only("a RabbitMQ outage (the embedded queue is in the store)") {
        return;
    }
    let mut env = Env::new(&[("ok", LEDGER_MODULE)], &[("s", &seq(&["ok", "ok"]))]);
    let out = env
        .cmd()
        .args(["start", "s"])
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "a recorded run is a success for cron: {stderr}");
    assert!(
        stderr.contains("is recorded") && stderr.contains("not lost"),
        "{stderr}"
    );
    let run: uuid::Uuid = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(env.show(run)["state"], "queued");
    env.spawn_worker(&FAST_RECOVERY);
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    // The line is written after the publish returns, which may be after the
    // run it started has ended: wait for it rather than read at once.
    common::wait_until("recovery to say it published start_etl", MINUTE, || {
        let log = env.worker_log(0);
        if log.contains("recovery: published start_etl") {
            Ok(())
        } else {
            Err(log)
        }
    });
}

#[test]
fn a_step_of_a_killed_worker_is_rerun_once_and_never_overlaps() {
    // The module notes its start, sleeps, notes its end.
    let slow = "#!/bin/sh\necho \"start $ETL_ATTEMPT $$\" >> ledger.txt\nsleep 6\necho \"end $ETL_ATTEMPT $$\" >> ledger.txt\n";
    let mut env = Env::new(&[("slow", slow)], &[("s", &seq(&["slow"]))]);
    let a = env.spawn_worker(&FAST_RECOVERY);
    let run = env.start("s");
    env.wait_exec(run, MINUTE, |e| e["state"] == "running" && e["pid"].is_number());
    // The keeper would stop the module at once (next test): kill it first,
    // as an OOM kill of both would, to test recovery's own line of defence.
    nix::sys::signal::kill(Pid::from_raw(env.keeper_pid(a)), Signal::SIGKILL).unwrap();
    env.signal_worker(a, Signal::SIGKILL);
    env.wait_worker(a, MINUTE);
    // A new worker on the same host recovers: kills the orphaned module,
    // then runs the step again as attempt 2.
    env.spawn_worker(&FAST_RECOVERY);
    let v = env.wait_final(run, 2 * MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let execs = v["executions"].as_array().unwrap();
    assert_eq!(execs.len(), 2, "{v:#}");
    assert_eq!(execs[0]["state"], "abandoned");
    assert!(
        execs[0]["error"]
            .as_str()
            .unwrap()
            .contains("stopped renewing its lease")
    );
    assert_eq!(execs[1]["state"], "succeeded");
    assert_eq!(execs[1]["attempt"], 2);
    let ledger = env.read("ledger.txt");
    assert!(
        !ledger.contains("end 1"),
        "the orphaned first attempt must have been killed:\n{ledger}"
    );
    assert_eq!(
        ledger.lines().filter(|l| l.starts_with("start 2")).count(),
        1,
        "{ledger}"
    );
    assert!(
        env.worker_log(1)
            .contains("killing the process group left behind by a dead worker")
    );
}

#[test]
fn a_step_that_keeps_losing_its_worker_fails_the_run_at_the_attempt_limit() {
    let slow =
        "#!/bin/sh\necho \"start $ETL_ATTEMPT\" >> ledger.txt\nsleep 30\necho \"end $ETL_ATTEMPT\" >> ledger.txt\n";
    let mut env = Env::new(&[("slow", slow)], &[("s", &seq(&["slow"]))]);
    let args: Vec<&str> = FAST_RECOVERY.iter().copied().chain(["--max-attempts", "2"]).collect();
    let mut worker = env.spawn_worker(&args);
    let run = env.start("s");
    // Each attempt's worker dies (as to an OOM kill) while the module runs.
    for attempt in 1..=2 {
        env.wait_exec(run, MINUTE, |e| {
            e["attempt"] == attempt && e["state"] == "running" && e["pid"].is_number()
        });
        env.signal_worker(worker, Signal::SIGKILL);
        env.wait_worker(worker, MINUTE);
        worker = env.spawn_worker(&args);
    }
    let v = env.wait_final(run, 2 * MINUTE);
    assert_eq!(v["state"], "failed", "{v:#}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("lost its worker 2 time(s)") && error.contains("giving up after 2 attempts"),
        "the reason says what happened: {error}"
    );
    let execs = v["executions"].as_array().unwrap();
    assert_eq!(execs.len(), 2, "no third attempt: {v:#}");
    assert!(
        execs
            .iter()
            .all(|e| e["state"] == "abandoned" && e["given_back"] == false),
        "lost, not given back: {v:#}"
    );
    let ledger = env.read("ledger.txt");
    assert_eq!(ledger.lines().count(), 2, "two starts, no end: {ledger}");
    assert!(!ledger.contains("end"), "{ledger}");
}

#[test]
fn the_keeper_stops_a_killed_workers_module_at_once_with_its_children() {
    // The module starts a child in its group and a daemon in a session of
    // its own, notes all three pids, and would write "end" in 30 s.
    let slow = "#!/bin/sh\nsleep 300 & c=$!\nsetsid sleep 300 & d=$!\necho \"$$ $c $d\" > pids.txt\nsleep 30\necho end >> ledger.txt\n";
    let mut env = Env::new(&[("slow", slow)], &[("s", &seq(&["slow"]))]);
    // A long lease and no other worker: recovery cannot be what stops it.
    let a = env.spawn_worker(&["--lease", "120", "--kill-grace", "1"]);
    let keeper = env.keeper_pid(a);
    assert!(alive(keeper));
    let run = env.start("s");
    env.wait_exec(run, MINUTE, |e| e["state"] == "running" && e["pid"].is_number());
    let pids: Vec<i32> = wait_until("the module to write its pids", MINUTE, || {
        let text = env.read("pids.txt");
        let pids: Vec<i32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if pids.len() == 3 {
            Ok(pids)
        } else {
            Err(format!("pids.txt: {text:?}"))
        }
    });
    assert!(pids.iter().all(|p| alive(*p)), "{pids:?}");

    env.signal_worker(a, Signal::SIGKILL);
    env.wait_worker(a, MINUTE);
    let killed_at = std::time::Instant::now();
    wait_until(
        "the module's processes and the keeper to be gone",
        KEEPER_ACTS_WITHIN,
        || {
            let living: Vec<i32> = pids.iter().copied().chain([keeper]).filter(|p| alive(*p)).collect();
            if living.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "of the module's processes {pids:?} and the keeper {keeper}, {living:?} outlived the worker; log:\n{}",
                    env.worker_log(a)
                ))
            }
        },
    );
    eprintln!(
        "module, child, daemon and keeper gone {:?} after the SIGKILL",
        killed_at.elapsed()
    );
    let log = env.worker_log(a);
    assert!(
        log.contains("the worker is gone: stopping its module's process group"),
        "{log}"
    );
    assert!(log.contains("stopped its running modules"), "{log}");
    assert_eq!(
        env.show(run)["state"],
        "running",
        "nothing recovered yet: the lease still holds"
    );
    assert_stays(
        "the ledger to have no \"end\" (the module was stopped)",
        NO_END_FOR,
        || {
            let ledger = env.read("ledger.txt");
            if ledger.contains("end") { Err(ledger) } else { Ok(()) }
        },
    );
}

#[test]
fn the_keeper_survives_a_graceful_shutdown_signal_and_leaves_with_its_worker() {
    let mut env = Env::new(&[("ok", LEDGER_MODULE)], &[("s", &seq(&["ok"]))]);
    let a = env.spawn_worker(&[]);
    let keeper = env.keeper_pid(a);
    // `pkill scheduler` hits both: the keeper ignores it, the worker drains and exits.
    nix::sys::signal::kill(Pid::from_raw(keeper), Signal::SIGTERM).unwrap();
    assert_stays(
        "the keeper to outlive its worker's shutdown signal",
        KEEPER_IGNORES_SIGTERM_FOR,
        || {
            if alive(keeper) {
                Ok(())
            } else {
                Err(format!("keeper {keeper} is gone"))
            }
        },
    );
    env.signal_worker(a, Signal::SIGTERM);
    assert!(env.wait_worker(a, MINUTE).success());
    wait_until("the keeper to leave with its worker", KEEPER_ACTS_WITHIN, || {
        if alive(keeper) {
            Err(format!("keeper {keeper} outlived its worker"))
        } else {
            Ok(())
        }
    });
    assert!(!env.worker_log(a).contains("stopping its module"));
}
