//! The chaos suite: many runs through two worker processes while workers are
//! killed with SIGKILL and restarted (the last step of every run is routed
//! to a second queue, which only one of the two workers serves), RabbitMQ is restarted, and PostgreSQL
//! is stopped immediately and restarted. Every module appends to a ledger;
//! a checker then classifies, as the Jepsen RabbitMQ checker does: lost
//! runs, duplicated successes, overlapping executions, skipped or reordered
//! steps, orphan processes, and (allowed, reported) re-executions.
//!
//! `chaos_short` runs in CI. The long version:
//! `CHAOS_RUNS=400 CHAOS_ROUNDS=40 cargo test -p scheduler-cli --test chaos -- --ignored --nocapture`
//!
//! Everything stays on 127.0.0.1. It restarts the machine's own RabbitMQ and
//! PostgreSQL, so it lives alone in this test binary (cargo runs test
//! binaries one after another). In the embedded mode there is no server to
//! restart: those rounds pause, and the worker SIGKILLs are the chaos.

mod common;

use common::Env;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const STEPS: usize = 3;
const WORKER_ARGS: [&str; 10] = [
    "-c",
    "3",
    "--lease",
    "4",
    "--reap-every",
    "1",
    "--republish-after",
    "3",
    "--kill-grace",
    "1",
];

/// Appends `start`, sleeps a little, appends `end`; each line carries
/// run, step, attempt, pid and a millisecond timestamp. The middle step of
/// every run fails its first try (exit 75, a `fail` line): the module
/// retries (`retries: 2`), so every run must still succeed, once.
const MODULE: &str = r#"#!/bin/sh
now() { date +%s%3N; }
echo "start $ETL_RUN_ID $ETL_STEP $ETL_ATTEMPT $$ $(now)" >> ledger.txt
sleep 0.$(( ($$ % 4) + 1 ))
if [ "$ETL_STEP" = 1 ] && mkdir "flaky-$ETL_RUN_ID" 2>/dev/null; then
  echo "fail $ETL_RUN_ID $ETL_STEP $ETL_ATTEMPT $$ $(now)" >> ledger.txt
  echo "transient failure" >&2
  exit 75
fi
echo "end $ETL_RUN_ID $ETL_STEP $ETL_ATTEMPT $$ $(now)" >> ledger.txt
"#;

#[derive(Default, Debug)]
struct Verdict {
    runs: usize,
    lost: usize,
    failed: usize,
    duplicated: usize,
    overlapping: usize,
    skipped_or_reordered: usize,
    orphans: usize,
    reexecutions: usize,
    /// Executions recovery or a shutdown closed as `abandoned`.
    abandoned: usize,
    /// Executions that retried a failure (the flaky middle step).
    retried: usize,
    /// Executions recorded on the wrong queue (the last step on the second
    /// queue, the others on the first).
    misrouted: usize,
    /// Worker log lines saying "database is locked" (the embedded store's
    /// SQLITE_BUSY: a writer that did not wait its turn).
    locked: usize,
}

#[test]
fn chaos_short() {
    chaos(env_or("CHAOS_RUNS", 60), env_or("CHAOS_ROUNDS", 6));
}

#[test]
#[ignore = "long: several minutes; run with --ignored"]
fn chaos_long() {
    chaos(env_or("CHAOS_RUNS", 400), env_or("CHAOS_ROUNDS", 40));
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn chaos(runs_wanted: usize, rounds: usize) {
    let t0 = Instant::now();
    let mut env = Env::new(&[("step", MODULE)], &[]);
    std::fs::write(
        env.project.join("modules.json"),
        serde_json::json!({"step": {"cmd": "./bin/step.sh", "retries": 2, "retry_delay_secs": 0.3}}).to_string(),
    )
    .unwrap();
    // The last step goes to a second queue: one worker serves both, the
    // other only the first, so every run hands over between them.
    let second = format!("{}-b", env.queue);
    let mut steps: Vec<Value> = (0..STEPS).map(|_| serde_json::json!({"module_name": "step"})).collect();
    steps[STEPS - 1]["queue"] = Value::String(second.clone());
    std::fs::write(
        env.project.join("etl_sequences/c.json"),
        Value::Array(steps).to_string(),
    )
    .unwrap();
    let both = format!("{},{second}", env.queue);
    let kinds = [env.queue.clone(), both];
    let spawn = |env: &mut Env, kind: usize| {
        let mut args: Vec<&str> = WORKER_ARGS.to_vec();
        args.extend(["--queue", kinds[kind].as_str()]);
        (env.spawn_worker(&args), kind)
    };
    let mut live = vec![spawn(&mut env, 0), spawn(&mut env, 1)];
    let mut runs = Vec::new();
    let per_round = runs_wanted.div_ceil(rounds.max(1));
    let mut actions = Vec::new();
    for round in 0..rounds {
        for _ in 0..per_round {
            if runs.len() < runs_wanted {
                runs.push(start_until_recorded(&env));
            }
        }
        // Pacing, not a wait: let work get in flight before acting on it.
        std::thread::sleep(Duration::from_millis(400));
        // CHAOS_RESTARTS: "all" (default), "rabbitmq", "postgres" or "0".
        let restarts = std::env::var("CHAOS_RESTARTS").unwrap_or_else(|_| "all".into());
        let allowed = |what: &str| restarts == "all" || restarts == what;
        let action = match round % 6 {
            1 | 4 if common::embedded_mode() => "pause (embedded mode: no server to restart)",
            1 if !allowed("rabbitmq") => "pause (RabbitMQ restarts disabled)",
            4 if !allowed("postgres") => "pause (PostgreSQL restarts disabled)",
            0 | 3 => {
                // SIGKILL one worker mid-flight, start a replacement.
                let (victim, kind) = live.remove(round % live.len());
                env.signal_worker(victim, nix::sys::signal::Signal::SIGKILL);
                env.wait_worker(victim, Duration::from_secs(30));
                live.push(spawn(&mut env, kind));
                "kill -9 a worker"
            }
            1 => {
                common::services::restart_rabbitmq();
                "restart RabbitMQ"
            }
            4 => {
                common::services::postgres("restart");
                "restart PostgreSQL (immediate)"
            }
            _ => "pause",
        };
        actions.push(action);
        // Pacing, not a wait: leave the system a moment with this disruption before the next round.
        std::thread::sleep(Duration::from_millis(700));
    }
    while runs.len() < runs_wanted {
        runs.push(start_until_recorded(&env));
    }
    eprintln!("chaos: {} runs started, actions: {actions:?}; settling", runs.len());

    // Settle: every started run must reach a final state.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut details: HashMap<uuid::Uuid, Value> = HashMap::new();
    while Instant::now() < deadline {
        for run in &runs {
            if details.get(run).is_none_or(|v| !is_final(v)) {
                details.insert(*run, env.show(*run));
            }
        }
        if details.values().all(is_final) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let verdict = check(&env, &runs, &details);
    eprintln!(
        "chaos verdict after {:.0}s: {verdict:#?}\n(re-executions are allowed: steps in flight at a kill run again)",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(verdict.runs, runs_wanted);
    assert_eq!(verdict.lost, 0, "lost runs");
    assert_eq!(verdict.failed, 0, "failed runs (every module succeeds unless killed)");
    assert_eq!(verdict.duplicated, 0, "duplicated successes");
    assert_eq!(verdict.overlapping, 0, "overlapping executions of one step");
    assert_eq!(verdict.skipped_or_reordered, 0, "skipped or reordered steps");
    assert_eq!(verdict.orphans, 0, "orphan module processes");
    assert_eq!(verdict.misrouted, 0, "executions on the wrong queue");
    assert_eq!(verdict.locked, 0, "\"database is locked\" in a worker's log");
    // Every run's middle step fails once and is retried; a kill landing
    // between its failure and its exit turns a few into lost attempts.
    assert!(
        verdict.retried * 10 >= runs_wanted * 8,
        "the middle step's failure was retried in too few runs"
    );
}

fn is_final(v: &Value) -> bool {
    matches!(v["state"].as_str(), Some("succeeded" | "failed" | "canceled"))
}

/// `scheduler start`, retried while PostgreSQL is down (a trigger that could
/// not be recorded is the caller's to retry; one that was recorded must run).
fn start_until_recorded(env: &Env) -> uuid::Uuid {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = env.run(&["start", "c"]);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "start kept failing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[derive(Debug, Clone)]
struct Entry {
    attempt: u32,
    pid: i32,
    start: u64,
    end: Option<u64>,
    /// It ended with a `fail` line (the flaky step's first try).
    failed: bool,
}

fn check(env: &Env, runs: &[uuid::Uuid], details: &HashMap<uuid::Uuid, Value>) -> Verdict {
    let mut v = Verdict {
        runs: runs.len(),
        ..Verdict::default()
    };
    // Ledger: (run, step) -> entries by pid.
    let mut ledger: BTreeMap<(String, u32), BTreeMap<i32, Entry>> = BTreeMap::new();
    for line in env.read("ledger.txt").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [kind, run, step, attempt, pid, ms] = f[..] else {
            continue;
        };
        let (step, attempt, pid, ms) = (
            step.parse().unwrap(),
            attempt.parse().unwrap(),
            pid.parse().unwrap(),
            ms.parse().unwrap(),
        );
        let entries = ledger.entry((run.to_string(), step)).or_default();
        match kind {
            "start" => {
                entries.insert(
                    pid,
                    Entry {
                        attempt,
                        pid,
                        start: ms,
                        end: None,
                        failed: false,
                    },
                );
            }
            _ => {
                if let Some(e) = entries.get_mut(&pid) {
                    e.end = Some(ms);
                    e.failed = kind == "fail";
                }
            }
        }
    }
    for run in runs {
        let d = &details[run];
        match d["state"].as_str() {
            Some("succeeded") => {}
            Some("failed") => {
                eprintln!("failed run {run}: {}", d["error"]);
                v.failed += 1;
            }
            _ => {
                eprintln!("lost run {run}: {d:#}");
                v.lost += 1;
                continue;
            }
        }
        let execs = d["executions"].as_array().unwrap();
        let second = format!("{}-b", env.queue);
        v.misrouted += execs
            .iter()
            .filter(|e| (e["step"] == STEPS as u64 - 1) != (e["queue"] == second.as_str()))
            .count();
        v.abandoned += execs.iter().filter(|e| e["state"] == "abandoned").count();
        v.retried += execs
            .iter()
            .filter(|e| e["retry"].as_u64().unwrap_or(0) > 0)
            .count()
            .min(1);
        let mut previous_end = 0;
        for step in 0..STEPS as u32 {
            let ok: Vec<&Value> = execs
                .iter()
                .filter(|e| e["step"] == step && e["state"] == "succeeded")
                .collect();
            if ok.len() > 1 {
                v.duplicated += 1;
            }
            let entries: Vec<Entry> = ledger
                .get(&(run.to_string(), step))
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default();
            let completed = entries.iter().filter(|e| e.end.is_some() && !e.failed).count();
            let failures = entries.iter().filter(|e| e.failed).count();
            // Beyond one try and the retries of its failures.
            v.reexecutions += entries.len().saturating_sub(1 + failures);
            if completed > 1 {
                eprintln!("re-executed to completion: run {run} step {step}: {entries:?}");
            }
            for (i, a) in entries.iter().enumerate() {
                for b in &entries[i + 1..] {
                    let (Some(ae), Some(be)) = (a.end, b.end) else { continue };
                    if a.start < be && b.start < ae {
                        eprintln!("overlap: run {run} step {step}: {a:?} {b:?}");
                        v.overlapping += 1;
                    }
                }
            }
            if d["state"] != "succeeded" {
                continue;
            }
            // The recorded successful attempt must have run, after the
            // previous step's successful attempt ended.
            let Some(attempt) = ok.first().map(|e| e["attempt"].as_u64().unwrap() as u32) else {
                v.skipped_or_reordered += 1;
                continue;
            };
            match entries
                .iter()
                .filter(|e| e.attempt == attempt && e.end.is_some())
                .max_by_key(|e| e.start)
            {
                Some(e) if e.start >= previous_end => previous_end = e.end.unwrap_or(e.start),
                other => {
                    eprintln!("skipped or reordered: run {run} step {step} attempt {attempt}: {other:?}");
                    v.skipped_or_reordered += 1;
                }
            }
        }
    }
    v.locked = (0..)
        .map(|n| env.project.join(format!("worker-{n}.log")))
        .take_while(|log| log.exists())
        .map(|log| std::fs::read_to_string(log).unwrap_or_default())
        .map(|log| log.matches("database is locked").count())
        .sum();
    for entries in ledger.values() {
        for e in entries.values() {
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(e.pid), None).is_ok() && e.end.is_none() {
                eprintln!("orphan module still alive: {e:?}");
                v.orphans += 1;
            }
        }
    }
    v
}
