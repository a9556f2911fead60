//! Run policies through the real binary, PostgreSQL and RabbitMQ: steps
//! routed to worker pools, and concurrency limits per sequence under 20
//! simultaneous `scheduler start` processes.

mod common;

use common::{Env, assert_stays, wait_until};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::time::Duration;
use uuid::Uuid;

const MINUTE: Duration = Duration::from_secs(60);

/// Notes which worker ran it: the module's parent is the worker process.
const WHO: &str = "#!/bin/sh\necho \"$ETL_STEP $PPID\" >> ledger.txt\n";

/// Holds an exclusive lock on `slot.lock` while it runs (a second copy
/// running at the same time finds it taken and notes OVERLAP), notes its
/// start and end, and sleeps `$1` seconds.
fn exclusive(secs: f64) -> String {
    format!(
        "#!/bin/sh\nexec 9>slot.lock\nflock -n 9 || echo \"OVERLAP $ETL_RUN_ID\" >> ledger.txt\n\
         echo \"start $ETL_RUN_ID $$\" >> ledger.txt\nsleep {secs}\necho \"end $ETL_RUN_ID\" >> ledger.txt\n"
    )
}

fn policy_seq(policy: Value, modules: &[&str]) -> String {
    let mut object = policy;
    object["steps"] = modules.iter().map(|m| json!({"module_name": m})).collect();
    object.to_string()
}

fn worker_of(env: &Env, n: usize) -> String {
    env.worker_pid(n).to_string()
}

#[test]
fn a_heavy_step_runs_only_on_the_heavy_worker_and_waits_visibly_for_one() {
    let mut env = Env::new(&[("who", WHO)], &[]);
    let heavy = format!("{}-heavy", env.queue);
    let steps = json!([
        {"module_name": "who"},
        {"module_name": "who", "queue": heavy},
        {"module_name": "who"},
    ]);
    std::fs::write(env.project.join("etl_sequences/s.json"), steps.to_string()).unwrap();
    let light = env.spawn_worker(&["--reap-every", "1"]);
    let run = env.start("s");
    // Step 1 ran; step 2 waits on a queue nobody serves, and says so.
    let v = wait_until("the run waits on the heavy queue", MINUTE, || {
        let v = env.show(run);
        if v["waiting_on"] == json!(heavy) {
            Ok(v)
        } else {
            Err(format!("{v:#}"))
        }
    });
    assert_eq!(v["state"], "running");
    let shown = String::from_utf8_lossy(&env.run(&["show", &run.to_string()]).stdout).into_owned();
    assert!(
        shown.contains(&format!("waits on queue {heavy}, which no live worker serves")),
        "{shown}"
    );
    let listed = String::from_utf8_lossy(&env.run(&["runs"]).stdout).into_owned();
    assert!(listed.contains(&format!("no worker on queue {heavy}")), "{listed}");
    assert_stays(
        "the heavy step does not run on the light worker",
        Duration::from_secs(2),
        || match env.read("ledger.txt").lines().count() {
            1 => Ok(()),
            n => Err(format!("{n} steps ran")),
        },
    );
    let big = env.spawn_worker(&["--queue", &heavy]);
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let ran: HashMap<String, String> = env
        .read("ledger.txt")
        .lines()
        .map(|l| {
            let (step, pid) = l.split_once(' ').unwrap();
            (step.to_string(), pid.to_string())
        })
        .collect();
    assert_eq!(ran["0"], worker_of(&env, light));
    assert_eq!(ran["1"], worker_of(&env, big), "step 2 runs on the heavy worker only");
    assert_eq!(ran["2"], worker_of(&env, light));
    let queues: Vec<&str> = v["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["queue"].as_str().unwrap())
        .collect();
    assert_eq!(queues, [env.queue.as_str(), heavy.as_str(), env.queue.as_str()]);
    assert_eq!(v["snapshot"]["steps"][1]["queue"], json!(heavy));
}

#[test]
fn one_worker_serving_both_queues_runs_the_whole_sequence() {
    let mut env = Env::new(&[("who", WHO)], &[]);
    let heavy = format!("{}-heavy", env.queue);
    let text = policy_seq(json!({"queue": heavy}), &["who", "who"]);
    std::fs::write(env.project.join("etl_sequences/s.json"), text).unwrap();
    let both = format!("{},{heavy}", env.queue);
    env.spawn_worker(&["--queue", &both]);
    let run = env.start("s");
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert_eq!(v["queue"], json!(heavy), "the sequence's queue wins over --queue");
    assert!(
        v["executions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["queue"] == json!(heavy))
    );
}

/// Starts `n` `scheduler start` processes at once; returns their run ids
/// (in the order the processes were spawned) and their stderr.
fn start_at_once(env: &Env, sequence: &str, n: usize) -> Vec<(Uuid, String)> {
    let children: Vec<Child> = (0..n)
        .map(|_| {
            env.cmd()
                .args(["start", sequence])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            (
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .collect()
}

fn runs_json(env: &Env) -> Vec<Value> {
    let out = env.run(&["runs", "--json", "--limit", "100"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn wait_all_final(env: &Env, runs: &[Uuid]) -> Vec<Value> {
    runs.iter().map(|r| env.wait_final(*r, 2 * MINUTE)).collect()
}

#[test]
fn twenty_starts_queue_behind_max_concurrent_1_and_run_one_at_a_time_in_start_order() {
    let mut env = Env::new(&[("x", &exclusive(0.1))], &[]);
    let text = policy_seq(json!({"max_concurrent": 1, "on_conflict": "queue"}), &["x"]);
    std::fs::write(env.project.join("etl_sequences/s.json"), text).unwrap();
    env.spawn_worker(&["--concurrency", "4"]);
    let started = start_at_once(&env, "s", 20);
    let ids: Vec<Uuid> = started.iter().map(|(id, _)| *id).collect();
    assert!(
        started
            .iter()
            .any(|(_, err)| err.contains("waiting for a slot (max_concurrent 1")),
        "a start that waits says so"
    );
    let finals = wait_all_final(&env, &ids);
    assert!(finals.iter().all(|v| v["state"] == "succeeded"), "{finals:#?}");
    let ledger = env.read("ledger.txt");
    assert!(!ledger.contains("OVERLAP"), "two ran at once:\n{ledger}");
    // One at a time: every start is followed by its own end.
    let lines: Vec<&str> = ledger.lines().collect();
    assert_eq!(lines.len(), 40, "{ledger}");
    for pair in lines.chunks(2) {
        let run = pair[0].split(' ').nth(1).unwrap();
        assert_eq!(pair[1], format!("end {run}"), "{ledger}");
    }
    // In start order: the order the runs were admitted (recorded).
    let mut by_created: Vec<(String, String)> = runs_json(&env)
        .iter()
        .map(|r| {
            (
                r["created_at"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    by_created.sort();
    let ran: Vec<&str> = lines.iter().step_by(2).map(|l| l.split(' ').nth(1).unwrap()).collect();
    let created: Vec<&str> = by_created.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ran, created);
}

#[test]
fn twenty_starts_with_skip_run_one_and_skip_nineteen_naming_it() {
    let mut env = Env::new(&[("x", &exclusive(4.0))], &[]);
    let text = policy_seq(json!({"max_concurrent": 1, "on_conflict": "skip"}), &["x"]);
    std::fs::write(env.project.join("etl_sequences/s.json"), text).unwrap();
    env.spawn_worker(&[]);
    let ids: Vec<Uuid> = start_at_once(&env, "s", 20).into_iter().map(|(id, _)| id).collect();
    let finals = wait_all_final(&env, &ids);
    let winners: Vec<&Value> = finals.iter().filter(|v| v["state"] == "succeeded").collect();
    assert_eq!(winners.len(), 1, "{finals:#?}");
    let winner = winners[0]["id"].as_str().unwrap();
    for v in finals.iter().filter(|v| v["id"] != winners[0]["id"]) {
        assert_eq!(v["state"], "skipped", "{v:#}");
        let note = v["note"].as_str().unwrap();
        assert!(note.contains(&format!("run {winner} holds the slot")), "{note}");
        assert!(
            v["executions"].as_array().unwrap().is_empty(),
            "a skipped run ran nothing"
        );
    }
    let listed = String::from_utf8_lossy(&env.run(&["runs", "--state", "skipped"]).stdout).into_owned();
    assert_eq!(listed.lines().filter(|l| l.contains("skipped")).count(), 19, "{listed}");
}

#[test]
fn queue_one_lets_one_run_wait_and_skips_the_next() {
    let mut env = Env::new(&[("x", &exclusive(3.0))], &[]);
    let text = policy_seq(json!({"max_concurrent": 1, "on_conflict": "queue_one"}), &["x"]);
    std::fs::write(env.project.join("etl_sequences/s.json"), text).unwrap();
    env.spawn_worker(&[]);
    let first = env.start("s");
    let second = env.start("s");
    let third = env.start("s");
    assert_eq!(env.show(second)["state"], "waiting");
    let v = env.show(third);
    assert_eq!(v["state"], "skipped", "{v:#}");
    assert!(v["note"].as_str().unwrap().contains("a run already waits"), "{v:#}");
    for run in [first, second] {
        assert_eq!(env.wait_final(run, MINUTE)["state"], "succeeded");
    }
    assert!(!env.read("ledger.txt").contains("OVERLAP"));
}

#[test]
fn twenty_starts_with_cancel_running_leave_the_newest_and_stop_the_older_modules() {
    let mut env = Env::new(&[("x", &exclusive(2.0))], &[]);
    let text = policy_seq(json!({"max_concurrent": 1, "on_conflict": "cancel_running"}), &["x"]);
    std::fs::write(env.project.join("etl_sequences/s.json"), text).unwrap();
    // A short lease: heartbeats (which carry cancels) every second.
    env.spawn_worker(&["--lease", "3", "--concurrency", "4"]);
    let first = env.start("s");
    env.wait_exec(first, MINUTE, |e| e["state"] == "running" && e["pid"].is_number());
    let ids: Vec<Uuid> = start_at_once(&env, "s", 20).into_iter().map(|(id, _)| id).collect();
    let mut all = vec![first];
    all.extend(&ids);
    let finals = wait_all_final(&env, &all);
    let succeeded: Vec<&Value> = finals.iter().filter(|v| v["state"] == "succeeded").collect();
    assert_eq!(succeeded.len(), 1, "{finals:#?}");
    // The newest (last admitted) is the one left.
    let newest = runs_json(&env)
        .iter()
        .max_by_key(|r| r["created_at"].as_str().unwrap().to_string())
        .unwrap()["id"]
        .clone();
    assert_eq!(succeeded[0]["id"], newest);
    for v in finals.iter().filter(|v| v["id"] != newest) {
        assert_eq!(v["state"], "canceled", "{v:#}");
        assert!(
            v["note"].as_str().unwrap().contains("of the same sequence replaced it"),
            "{v:#}"
        );
    }
    // The first run's module was stopped, not left running beside the rest.
    let v = env.show(first);
    assert_eq!(v["executions"][0]["state"], "canceled", "{v:#}");
    let ledger = env.read("ledger.txt");
    assert!(!ledger.contains("OVERLAP"), "two ran at once:\n{ledger}");
    for line in ledger.lines().filter(|l| l.starts_with("start ")) {
        let pid: i32 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(!common::alive(pid), "module {pid} still alive: {ledger}");
    }
    assert!(
        !ledger.contains(&format!("end {first}")),
        "the first module was stopped before its end"
    );
}

#[test]
fn bad_policies_and_queues_are_refused_with_the_file_and_the_field() {
    let env = Env::new(&[("x", &exclusive(0.0))], &[]);
    let cases: &[(&str, &str)] = &[
        (
            r#"{"max_concurrent": 0, "steps": [{"module_name": "x"}]}"#,
            "\"max_concurrent\" must be a whole number of at least 1",
        ),
        (
            r#"{"max_concurrent": 1, "on_conflict": "skipp", "steps": [{"module_name": "x"}]}"#,
            "expected one of: queue, queue_one, skip, cancel_running",
        ),
        (
            r#"{"queue": "amq.direct", "steps": [{"module_name": "x"}]}"#,
            "which RabbitMQ reserves",
        ),
        (
            r#"[{"module_name": "x", "queue": "has space"}]"#,
            "step 0: \"queue\": queue \"has space\" is not a valid queue name",
        ),
        (
            r#"{"stesp": [{"module_name": "x"}]}"#,
            "the object form needs \"steps\"",
        ),
        (
            r#"{"steps": [{"module_name": "x"}], "max_concurent": 1}"#,
            "unknown field \"max_concurent\"",
        ),
        (r#""x""#, "expected a list of steps"),
    ];
    for (text, expected) in cases {
        std::fs::write(env.project.join("etl_sequences/bad.json"), text).unwrap();
        let out = env.run(&["start", "bad"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text} was accepted");
        assert!(
            err.contains("etl_sequences/bad.json") && err.contains(expected),
            "{text}: {err}"
        );
        let out = env.run(&["validate"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(expected)
                || String::from_utf8_lossy(&out.stderr).contains(expected)
        );
    }
    let out = env.cmd().args(["worker", "--queue", "etl,amq.x"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--queue") && err.contains("amq."),
        "{err}"
    );
    std::fs::write(env.project.join("etl_sequences/bad.json"), r#"[{"module_name": "x"}]"#).unwrap();
    let out = env.cmd().args(["start", "bad", "--queue", "a,b"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not a valid queue name"), "{err}");
}
