//! Retries with backoff, through the real binary, PostgreSQL and RabbitMQ:
//! a flaky step retried after its delay, retries spent, a retry that
//! survives every worker being stopped during its delay, and bad settings.

mod common;

use chrono::{DateTime, Utc};
use common::{Env, LEDGER_MODULE, seq, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

/// Fails (exit 3, a line on stderr) until `failures` attempts have failed,
/// then succeeds; every attempt notes itself in ledger.txt.
fn flaky(failures: u32) -> String {
    format!(
        "#!/bin/sh\nn=$(cat tries 2>/dev/null || echo 0); n=$((n+1)); echo $n > tries\n\
         echo \"try $n attempt $ETL_ATTEMPT\" >> ledger.txt\n\
         if [ $n -le {failures} ]; then echo \"upstream timed out (try $n)\" >&2; exit 3; fi\n"
    )
}

/// Merges `settings` into module `name` of the env's modules.json.
fn set_module(env: &Env, name: &str, settings: Value) {
    let path = env.project.join("modules.json");
    let mut table: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, v) in settings.as_object().unwrap() {
        table[name][k] = v.clone();
    }
    std::fs::write(&path, table.to_string()).unwrap();
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn a_flaky_step_is_retried_after_its_delay_and_the_run_succeeds() {
    let mut env = Env::new(
        &[("flaky", &flaky(1)), ("ok", LEDGER_MODULE)],
        &[("s", &seq(&["ok", "flaky"]))],
    );
    set_module(
        &env,
        "flaky",
        json!({"retries": 2, "retry_delay_secs": 2, "retry_jitter_factor": 0.25}),
    );
    // Recovery's default 5 s pass: it wakes for the retry when it is due.
    env.spawn_worker(&[]);
    let run = env.start("s");
    // While it waits: the run is running, the next attempt queued with its
    // due time, and `runs` says when it retries.
    let waiting = env.wait_exec(run, MINUTE, |e| e["attempt"] == 2 && e["state"] == "queued");
    assert_eq!(waiting["retry"], 1);
    assert!(waiting["due_at"].is_string(), "{waiting:#}");
    let v = env.show(run);
    assert_eq!(v["state"], "running");
    assert_eq!(v["retry_at"], waiting["due_at"], "{v:#}");
    let listed = env.run(&["runs"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("retry at"), "{listed}");
    let shown = String::from_utf8_lossy(&env.run(&["show", &run.to_string()]).stdout).into_owned();
    assert!(shown.contains("retry at"), "{shown}");

    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let execs: Vec<&Value> = v["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["step"] == 1)
        .collect();
    assert_eq!(execs.len(), 2, "{v:#}");
    assert_eq!(
        (&execs[0]["state"], &execs[0]["exit_code"]),
        (&json!("failed"), &json!(3))
    );
    assert_eq!(
        (&execs[1]["state"], &execs[1]["retry"]),
        (&json!("succeeded"), &json!(1))
    );
    // The delay: 2 s +/- 25 %, published by recovery when due (it wakes for
    // it), claimed and spawned within half a second.
    let waited = (time(&execs[1]["started_at"]) - time(&execs[0]["finished_at"])).as_seconds_f64();
    assert!((1.5..=2.5 + 0.5).contains(&waited), "waited {waited:.2} s");
    eprintln!("retried after {waited:.2} s (2 s +/- 25 %)");
}

#[test]
fn spent_retries_fail_the_run_once_saying_after_how_many_attempts() {
    let mut env = Env::new(&[("flaky", &flaky(100))], &[("s", &seq(&["flaky"]))]);
    set_module(
        &env,
        "flaky",
        json!({"retries": 2, "retry_delay_secs": 0.2, "retry_backoff": 1, "retry_on_exit_codes": [3, 75]}),
    );
    let w = env.spawn_worker(&["--reap-every", "1"]);
    let run = env.start("s");
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "failed", "{v:#}");
    let execs = v["executions"].as_array().unwrap();
    assert_eq!(execs.len(), 3, "one attempt and two retries: {v:#}");
    assert!(execs.iter().all(|e| e["state"] == "failed"));
    let error = v["error"].as_str().unwrap();
    assert!(
        error.starts_with("after 3 attempts, step 1 (flaky) failed: exit code 3")
            && error.contains("upstream timed out (try 3)"),
        "{error}"
    );
    wait_until("the error handler's log line", Duration::from_secs(10), || {
        let log = env.worker_log(w);
        let n = log.matches("step failed; marking the run failed").count();
        if n >= 1 { Ok(n) } else { Err(log) }
    });
    let log = env.worker_log(w);
    assert_eq!(log.matches("step failed; marking the run failed").count(), 1, "{log}");
}

#[test]
fn an_exit_code_not_listed_is_not_retried() {
    let mut env = Env::new(&[("flaky", &flaky(100))], &[("s", &seq(&["flaky"]))]);
    set_module(&env, "flaky", json!({"retries": 5, "retry_on_exit_codes": [75]}));
    env.spawn_worker(&["--reap-every", "1"]);
    let run = env.start("s");
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "failed");
    assert_eq!(v["executions"].as_array().unwrap().len(), 1, "{v:#}");
}

#[test]
fn a_retry_waiting_while_every_worker_is_stopped_happens_once_they_are_back() {
    let mut env = Env::new(&[("flaky", &flaky(1))], &[("s", &seq(&["flaky"]))]);
    // The step's own override wins over the module's settings.
    set_module(&env, "flaky", json!({"retries": 1, "retry_delay_secs": 60}));
    std::fs::write(
        env.project.join("etl_sequences/s.json"),
        json!([{"module_name": "flaky", "retry_delay_secs": 3, "retry_jitter_factor": 0}]).to_string(),
    )
    .unwrap();
    let a = env.spawn_worker(&["--reap-every", "1"]);
    let run = env.start("s");
    let waiting = env.wait_exec(run, MINUTE, |e| e["attempt"] == 2 && e["state"] == "queued");
    env.signal_worker(a, nix::sys::signal::Signal::SIGTERM);
    assert!(env.wait_worker(a, MINUTE).success());
    // No worker at all until the retry is overdue.
    let due = time(&waiting["due_at"]);
    wait_until("the retry's due time to pass", Duration::from_secs(20), || {
        if Utc::now() > due + chrono::Duration::seconds(1) {
            Ok(())
        } else {
            Err(due)
        }
    });
    assert_eq!(env.show(run)["executions"][1]["state"], "queued");
    env.spawn_worker(&["--reap-every", "1"]);
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert_eq!(v["executions"].as_array().unwrap().len(), 2, "{v:#}");
    let ledger = env.read("ledger.txt");
    assert_eq!(ledger.lines().count(), 2, "one failure, one retry: {ledger}");
}

#[test]
fn bad_retry_settings_name_the_file_and_the_field() {
    let env = Env::new(&[("m", LEDGER_MODULE)], &[("s", &seq(&["m"]))]);
    let check = |modules: Value, sequence: Value, expected: &[&str]| {
        std::fs::write(env.project.join("modules.json"), modules.to_string()).unwrap();
        std::fs::write(env.project.join("etl_sequences/s.json"), sequence.to_string()).unwrap();
        let out = env.run(&["validate"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        for e in expected {
            assert!(err.contains(e), "{err:?} should contain {e:?}");
        }
    };
    let step = json!([{"module_name": "m"}]);
    check(
        json!({"m": {"cmd": "./bin/m.sh", "retry_delay_secs": -5}}),
        step.clone(),
        &["modules.json", "\"retry_delay_secs\"", "-5"],
    );
    check(
        json!({"m": {"cmd": "./bin/m.sh", "retries": "three"}}),
        step.clone(),
        &["modules.json", "\"retries\" must be a number"],
    );
    check(
        json!({"m": {"cmd": "./bin/m.sh", "retry_jitter_factor": 3}}),
        step.clone(),
        &["\"retry_jitter_factor\""],
    );
    check(
        json!({"m": {"cmd": "./bin/m.sh", "retrys": 3}}),
        step,
        &["modules.json", "unknown field `retrys`"],
    );
    check(
        json!({"m": {"cmd": "./bin/m.sh"}}),
        json!([{"module_name": "m", "retry_backoff": 0}]),
        &["etl_sequences/s.json", "step 0", "\"retry_backoff\""],
    );
}
