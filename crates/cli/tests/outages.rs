//! Outages: a worker whose broker connection is cut goes on running its
//! module, reconnects, and loses nothing.

mod common;

use common::{Env, LEDGER_MODULE, seq};
use std::process::Command;
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);

/// Closes, from the broker's side, the AMQP connection named after `pid`.
fn cut_connection_of(pid: i32) {
    let needle = format!("scheduler worker {pid}");
    let deadline = Instant::now() + MINUTE;
    loop {
        let out = Command::new("rabbitmqctl")
            .args(["-q", "list_connections", "pid", "client_properties"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout).to_string();
        if let Some(line) = listing.lines().find(|l| l.contains(&needle)) {
            let conn = line.split('\t').next().unwrap().to_string();
            let st = Command::new("rabbitmqctl")
                .args(["-q", "close_connection", &conn, "test cut"])
                .status()
                .unwrap();
            assert!(st.success());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no connection named {needle:?} in:\n{listing}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_worker_survives_losing_its_broker_connection_mid_module() {
    if !common::distributed_only("a RabbitMQ connection cut mid-module") {
        return;
    }
    let slow = "#!/bin/sh\nsleep 3\necho \"$ETL_RUN_ID $ETL_STEP $ETL_ATTEMPT $$\" >> ledger.txt\n";
    let mut env = Env::new(
        &[("slow", slow), ("ok", LEDGER_MODULE)],
        &[("s", &seq(&["slow", "ok"])), ("t", &seq(&["ok"]))],
    );
    let w = env.spawn_worker(&["--reap-every", "1", "--republish-after", "2"]);
    let run = env.start("s");
    env.wait_exec(run, MINUTE, |e| e["step"] == 0 && e["state"] == "running");
    cut_connection_of(env.worker_pid(w));
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert_eq!(v["executions"].as_array().unwrap().len(), 2, "no step re-run: {v:#}");
    env.wait_for_log(w, "reconnected to RabbitMQ", MINUTE);
    // And it consumes again.
    assert_eq!(env.wait_final(env.start("t"), MINUTE)["state"], "succeeded");
    assert_eq!(env.read("ledger.txt").lines().count(), 3);
}

#[test]
fn a_consumer_that_silently_stops_receiving_is_rebuilt() {
    if !common::distributed_only("a RabbitMQ consumer that stops receiving") {
        return;
    }
    // The worker drops its first delivery without acknowledging it, as a bug
    // could: with one slot its prefetch window stays full and it receives
    // nothing more, though it is idle and the queue has work. No error
    // anywhere: only the watchdog can notice.
    let mut env = Env::new(&[("ok", LEDGER_MODULE)], &[("s", &seq(&["ok", "ok"]))]);
    let w = env.spawn_worker_with_env(
        &["-c", "1", "--stall-after", "2"],
        &[("SCHEDULER_FAILPOINTS", "swallow-delivery")],
    );
    let first = env.start("s");
    env.wait_for_log(w, "failpoint swallow-delivery", MINUTE);
    let second = env.start("s");
    for run in [first, second] {
        let v = env.wait_final(run, MINUTE);
        assert_eq!(v["state"], "succeeded", "{v:#}");
    }
    let log = env.worker_log(w);
    assert!(log.contains("consumer stalled"), "{log}");
    assert_eq!(
        log.matches("consumer stalled").count(),
        1,
        "rebuilt once, not in a loop:\n{log}"
    );
    assert_eq!(env.read("ledger.txt").lines().count(), 4, "each step ran once");
}
