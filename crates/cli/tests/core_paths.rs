//! The core promises, end to end through real RabbitMQ and PostgreSQL and
//! the real `scheduler` binary.

mod common;

use common::{Env, LEDGER_MODULE, assert_stays, seq};
use scheduler_core::Message;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
/// How long a full worker is given to (wrongly) take a queued message
/// before an idle worker starts.
const PREFETCH_WINDOW: Duration = Duration::from_millis(500);

#[test]
fn the_test_sequence_runs_end_to_end_with_scheduler_run() {
    let env = Env::repo_project();
    let out = env.run(&["run", "test"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scheduler run test failed:\n{stderr}");
    let runs: serde_json::Value = serde_json::from_slice(&env.run(&["runs", "--json"]).stdout).unwrap();
    let run = &runs[0];
    assert_eq!(run["sequence"], "test");
    assert_eq!(run["state"], "succeeded");
    let detail = env.show(run["id"].as_str().unwrap().parse().unwrap());
    let execs = detail["executions"].as_array().unwrap();
    assert_eq!(execs.len(), 4);
    for (i, e) in execs.iter().enumerate() {
        assert_eq!(e["step"], i);
        assert_eq!(e["state"], "succeeded", "{e:#}");
        assert_eq!(e["exit_code"], 0);
        assert!(e["pid"].as_i64().unwrap() > 0);
        assert!(e["worker_id"].is_string());
    }
    assert_eq!(execs[2]["argv"][0], "./modules/transform.py");
    assert_eq!(detail["snapshot"]["steps"][3]["module_name"], "load");
    let loaded = env.read("data/warehouse/test_memory.jsonl");
    assert_eq!(loaded.lines().count(), 7, "{loaded}");
    assert!(loaded.contains(run["id"].as_str().unwrap()));
}

#[test]
fn a_failing_step_runs_the_error_handler_and_no_later_step() {
    let env = Env::new(
        &[
            ("ok", LEDGER_MODULE),
            ("boom", "#!/bin/sh\necho 'disk quota exceeded' >&2\nexit 3\n"),
        ],
        &[("s", &seq(&["ok", "boom", "ok"]))],
    );
    let out = env.run(&["run", "s"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let runs: serde_json::Value =
        serde_json::from_slice(&env.run(&["runs", "--json", "--state", "failed"]).stdout).unwrap();
    let v = env.show(runs[0]["id"].as_str().unwrap().parse().unwrap());
    assert_eq!(v["state"], "failed");
    assert_eq!(v["failed_step"], 1);
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("exit code 3") && error.contains("disk quota exceeded"),
        "{error}"
    );
    let execs = v["executions"].as_array().unwrap();
    assert_eq!(execs.len(), 2, "the step after the failing one must not run: {v:#}");
    assert_eq!(execs[1]["state"], "failed");
    assert_eq!(execs[1]["exit_code"], 3);
    assert!(
        execs[1]["stderr_tail"]
            .as_str()
            .unwrap()
            .contains("disk quota exceeded")
    );
    assert_eq!(env.read("ledger.txt").lines().count(), 1);
}

#[test]
fn duplicated_messages_never_run_a_step_twice() {
    let slow = "#!/bin/sh\necho \"$ETL_RUN_ID $ETL_STEP $ETL_ATTEMPT $$\" >> ledger.txt\nsleep 1\n";
    let mut env = Env::new(
        &[("slow", slow), ("ok", LEDGER_MODULE)],
        &[("s", &seq(&["slow", "ok"]))],
    );
    env.spawn_worker(&["-c", "4"]);
    let run = env.start("s");
    // While step 0 runs: duplicates of its exec_module and of start_etl.
    env.wait_exec(run, MINUTE, |e| e["step"] == 0 && e["state"] == "running");
    let exec0 = Message::ExecModule {
        run_id: run,
        step: 0,
        attempt: 1,
    };
    env.publish(&[exec0.clone(), exec0.clone(), Message::StartEtl { run_id: run }]);
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded");
    // After success: every message of the run again.
    env.publish(&[
        Message::StartEtl { run_id: run },
        exec0,
        Message::ExecModule {
            run_id: run,
            step: 1,
            attempt: 1,
        },
        Message::EndEtl { run_id: run },
        Message::ErrorHandler {
            run_id: run,
            step: 1,
            attempt: 1,
            reason: "late".into(),
        },
    ]);
    env.wait_for_log(0, "run already finished (duplicate error_handler)", MINUTE);
    let ledger = env.read("ledger.txt");
    assert_eq!(ledger.lines().count(), 2, "each step exactly once:\n{ledger}");
    let v = env.show(run);
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["executions"].as_array().unwrap().len(), 2);
    let log = env.worker_log(0);
    assert!(log.contains("execution already claimed by a worker"), "{log}");
    assert!(log.contains("execution already finished"), "{log}");
}

#[test]
fn twenty_runs_spread_over_two_worker_processes_all_succeed() {
    let work = "#!/bin/sh\necho \"$ETL_RUN_ID $ETL_STEP $ETL_ATTEMPT $$\" >> ledger.txt\nsleep 0.2\n";
    let mut env = Env::new(&[("work", work)], &[("s", &seq(&["work", "work", "work"]))]);
    env.spawn_worker(&["-c", "2"]);
    env.spawn_worker(&["-c", "2"]);
    let runs: Vec<_> = (0..20).map(|_| env.start("s")).collect();
    let mut workers = std::collections::HashSet::new();
    for run in runs {
        let v = env.wait_final(run, 3 * MINUTE);
        assert_eq!(v["state"], "succeeded", "{v:#}");
        for e in v["executions"].as_array().unwrap() {
            workers.insert(e["worker_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(workers.len(), 2, "work must be spread over both workers");
    assert_eq!(env.read("ledger.txt").lines().count(), 60);
}

#[test]
fn a_long_module_does_not_hide_queued_work_from_an_idle_worker_classic() {
    a_long_module_does_not_hide_queued_work_from_an_idle_worker("classic");
}

#[test]
fn a_long_module_does_not_hide_queued_work_from_an_idle_worker_quorum() {
    a_long_module_does_not_hide_queued_work_from_an_idle_worker("quorum");
}

fn a_long_module_does_not_hide_queued_work_from_an_idle_worker(queue_type: &'static str) {
    let mut env = Env::new(
        &[("long", "#!/bin/sh\nsleep 8\n"), ("ok", LEDGER_MODULE)],
        &[("long", &seq(&["long"])), ("short", &seq(&["ok"]))],
    )
    .with_queue_type(queue_type);
    env.spawn_worker(&["-c", "1"]);
    let long = env.start("long");
    env.wait_exec(long, MINUTE, |e| e["state"] == "running");
    // Worker 0 is full; a queued run must not sit in its prefetch buffer:
    // its start_etl stays in the queue, ready for an idle worker.
    let short = env.start("short");
    assert_stays(
        "the short run's start_etl ready in the queue",
        PREFETCH_WINDOW,
        || match env.queue_depth(&env.queue) {
            1 => Ok(()),
            ready => Err(format!("{ready} message(s) ready in the queue, not 1")),
        },
    );
    env.spawn_worker(&["-c", "1"]);
    let v = env.wait_final(short, Duration::from_secs(6));
    assert_eq!(v["state"], "succeeded");
    let long_worker = env.show(long)["executions"][0]["worker_id"].clone();
    assert_ne!(
        v["executions"][0]["worker_id"], long_worker,
        "the short run waited behind the long one"
    );
}

#[test]
fn a_command_declaring_a_queue_of_the_other_type_exits_2_saying_what_to_do() {
    if !common::distributed_only("RabbitMQ queue types (the embedded queue has one kind)") {
        return;
    }
    let mut env = Env::new(&[("ok", LEDGER_MODULE)], &[("s", &seq(&["ok"]))]).with_queue_type("classic");
    let out = env.run(&["start", "s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The queue is classic now; a worker left at the default (quorum) is refused.
    env.queue_type = None;
    let out = env.cmd().args(["worker"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--queue-type") && err.contains("x-queue-type") && err.contains(&env.queue),
        "{err}"
    );
}
