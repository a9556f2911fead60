//! Recovery: a trigger while the broker is unreachable, and a worker killed
//! with SIGKILL in the middle of a module.

mod common;

use common::{Env, LEDGER_MODULE, seq};
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
const FAST_RECOVERY: [&str; 6] = ["--reap-every", "1", "--republish-after", "1", "--lease", "3"];

#[test]
fn a_run_started_while_the_broker_is_unreachable_is_recorded_and_runs_later() {
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
    assert!(env.worker_log(0).contains("recovery: published start_etl"));
}

#[test]
fn a_step_of_a_killed_worker_is_rerun_once_and_never_overlaps() {
    // The module notes its start, sleeps, notes its end.
    let slow = "#!/bin/sh\necho \"start $ETL_ATTEMPT $$\" >> ledger.txt\nsleep 6\necho \"end $ETL_ATTEMPT $$\" >> ledger.txt\n";
    let mut env = Env::new(&[("slow", slow)], &[("s", &seq(&["slow"]))]);
    let a = env.spawn_worker(&FAST_RECOVERY);
    let run = env.start("s");
    env.wait_exec(run, MINUTE, |e| e["state"] == "running" && e["pid"].is_number());
    env.signal_worker(a, nix::sys::signal::Signal::SIGKILL);
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
