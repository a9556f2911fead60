//! The events that come from the machinery rather than a run's end, each
//! delivered end to end through the real binary to a webhook receiver on
//! 127.0.0.1: a worker SIGKILLed while it runs a step (`worker_lost`, told
//! at its death by its keeper, naming the worker, its host and the step it
//! held), a module that goes silent past its `stall_secs` (`step_stalled`),
//! and the schedules' slots skipped by a sequence's concurrency policy and
//! missed while no scheduler ran (`slot_skipped`, `slot_missed`).

mod common;

use common::receiver::{Receiver, Request};
use common::{Env, assert_stays, seq, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::process::{Child, Stdio};
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

fn write_alerts(env: &Env, hook: &Receiver, events: &[&str]) {
    let alerts = json!({"targets": {"hook": {"type": "webhook", "url": hook.url("/hook"), "events": events}}});
    std::fs::write(env.project.join("alerts.json"), alerts.to_string()).unwrap();
}

/// The posts of event `kind` the receiver answered 200.
fn posted(hook: &Receiver, kind: &str) -> Vec<Value> {
    hook.posts()
        .iter()
        .filter(|r: &&Request| r.status == 200 && r.headers.get("x-scheduler-event").map(String::as_str) == Some(kind))
        .map(Request::json)
        .collect()
}

/// Waits until at least `n` posts of `kind` arrived; returns them.
fn wait_posts(hook: &Receiver, kind: &str, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} {kind} posted"), MINUTE, || {
        let p = posted(hook, kind);
        if p.len() >= n { Ok(p) } else { Err(hook.summary()) }
    })
}

/// The id worker `n` logged when it started.
fn worker_id(env: &Env, n: usize) -> String {
    let log = env.worker_log(n);
    let at = log.find("worker_id=").expect("worker_id in the log") + "worker_id=".len();
    log[at..at + 36].to_string()
}

#[test]
fn a_sigkilled_worker_is_posted_as_lost_at_once_with_its_host_and_the_step_it_held() {
    let hook = Receiver::start(&[]);
    let slow = "#!/bin/sh\necho working\nsleep 30\n";
    let mut env = Env::new(&[("slow", slow)], &[("nightly", &seq(&["slow"]))]);
    write_alerts(&env, &hook, &["worker_lost"]);
    // A short lease, so that recovery's own look for silent workers (a
    // lease of silence) comes within the test's window: it must not tell
    // the same death a second time.
    let args = [
        "--concurrency",
        "1",
        "--lease",
        "6",
        "--reap-every",
        "1",
        "--kill-grace",
        "1",
    ];
    let doomed = env.spawn_worker(&args);
    let doomed_id = worker_id(&env, doomed);
    let run = env.start("nightly");
    env.wait_exec(run, MINUTE, |e| {
        e["state"] == "running" && e["pid"].is_number() && e["worker_id"] == doomed_id.as_str()
    });
    // The survivor runs recovery (and the sender) once the first is dead.
    env.spawn_worker(&args);
    env.signal_worker(doomed, Signal::SIGKILL);
    env.wait_worker(doomed, MINUTE);

    let lost = wait_posts(&hook, "worker_lost", 1);
    let body = &lost[0];
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(body["worker_id"], doomed_id.as_str(), "{body:#}");
    assert_eq!(body["detail"]["host"], host.as_str(), "{body:#}");
    assert_eq!(body["detail"]["pid"], env.worker_pid(doomed), "{body:#}");
    assert_eq!(
        body["detail"]["runs"],
        json!([{"run_id": run.to_string(), "sequence": "nightly", "step": 1, "attempt": 1}]),
        "the step it held: {body:#}"
    );
    let text = body["text"].as_str().unwrap();
    let short = &run.to_string()[..8];
    assert!(
        text.starts_with(&format!("Worker {} on {host}", &doomed_id[..8]))
            && text.contains("the worker process died")
            && text.contains(&format!("it held run {short} (nightly step 1)")),
        "{text}"
    );
    // The step is attempted again on the survivor; the death is told once,
    // also after a whole lease of the dead worker's silence has passed.
    env.wait_exec(run, MINUTE, |e| e["attempt"] == 2 && e["state"] == "running");
    assert_stays(
        "one worker_lost for one death",
        Duration::from_secs(9),
        || match posted(&hook, "worker_lost").len() {
            1 => Ok(()),
            _ => Err(hook.summary()),
        },
    );
}

#[test]
fn a_module_silent_past_its_stall_secs_is_posted_as_stalled() {
    let hook = Receiver::start(&[]);
    let quiet = "#!/bin/sh\necho start\nsleep 3\necho done\n";
    let mut env = Env::new(&[("quiet", quiet)], &[("nightly", r#"[{"module_name": "quiet"}]"#)]);
    let modules = json!({"quiet": {"cmd": "./bin/quiet.sh", "stall_secs": 1}});
    std::fs::write(env.project.join("modules.json"), modules.to_string()).unwrap();
    write_alerts(&env, &hook, &["step_stalled"]);
    env.spawn_worker(&[]);
    let run = env.start("nightly");
    assert_eq!(
        env.wait_final(run, MINUTE)["state"],
        "succeeded",
        "a stall only flagged"
    );
    let stalled = wait_posts(&hook, "step_stalled", 1);
    let body = &stalled[0];
    assert_eq!(
        (
            body["sequence"].as_str(),
            body["run_id"].as_str(),
            body["step"].as_i64()
        ),
        (Some("nightly"), Some(run.to_string().as_str()), Some(1)),
        "{body:#}"
    );
    assert_eq!(body["attempt"], 1);
    assert_eq!(body["detail"]["module"], "quiet", "{body:#}");
    assert_eq!(body["message"], "no output for 1 s", "{body:#}");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "nightly step 1 (quiet) stalled in run {}",
            &run.to_string()[..8]
        )),
        "{text}"
    );
    assert_stays("one stall told once", Duration::from_secs(2), || {
        match posted(&hook, "step_stalled").len() {
            1 => Ok(()),
            _ => Err(hook.summary()),
        }
    });
}

fn spawn_beat(env: &Env, n: usize) -> Child {
    let log = std::fs::File::create(env.project.join(format!("beat-{n}.log"))).unwrap();
    env.cmd()
        .args(["beat", "--tick-ms", "100", "--on-time-secs", "2"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn stop(mut beat: Child) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(beat.id() as i32), Signal::SIGTERM).unwrap();
    beat.wait().unwrap();
}

#[test]
fn slots_skipped_by_the_concurrency_policy_and_missed_while_no_scheduler_ran_are_posted() {
    let hook = Receiver::start(&[]);
    // `busy` fires every second a run of 3 s that holds the only slot: the
    // slots in between are skipped. `gap` fires every second and catches
    // nothing up: the slots that pass while no beat runs are missed.
    let slow = "#!/bin/sh\nsleep 3\n";
    let mut env = Env::new(
        &[("slow", slow), ("tick", "#!/bin/sh\nexit 0\n")],
        &[
            (
                "one",
                r#"{"max_concurrent": 1, "on_conflict": "skip", "steps": [{"module_name": "slow"}]}"#,
            ),
            ("tick", &seq(&["tick"])),
        ],
    );
    std::fs::write(
        env.project.join("schedules.json"),
        r#"{"busy": {"sequence": "one", "cron": "* * * * * *"},
            "gap": {"sequence": "tick", "cron": "* * * * * *", "catchup": "none"}}"#,
    )
    .unwrap();
    write_alerts(&env, &hook, &["slot_skipped", "slot_missed"]);
    env.spawn_worker(&["-c", "4"]);
    let beat = spawn_beat(&env, 0);
    let skipped = wait_posts(&hook, "slot_skipped", 1);
    stop(beat);
    // Away for 5 s: the slots older than the 2 s "on time" bound are missed.
    std::thread::sleep(Duration::from_secs(5));
    let beat = spawn_beat(&env, 1);
    let missed = wait_posts(&hook, "slot_missed", 1);
    stop(beat);

    let body = &skipped[0];
    assert_eq!(
        (body["schedule"].as_str(), body["sequence"].as_str()),
        (Some("busy"), Some("one")),
        "{body:#}"
    );
    assert!(body["slot_at"].is_string() && body["run_id"].is_string(), "{body:#}");
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("Schedule busy skipped its "), "{text}");
    assert!(
        skipped.iter().all(|b| b["schedule"] == "busy"),
        "only the limited sequence's slots are skipped: {}",
        hook.summary()
    );

    let body = &missed[0];
    assert!(missed.iter().all(|b| b["schedule"] == "gap"), "{}", hook.summary());
    assert!(body["slot_at"].is_string(), "{body:#}");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("Schedule gap missed its ")
            && text.contains("passed while no scheduler ran; outside the catch-up policy or window"),
        "{text}"
    );
    // Each slot is told once.
    let slots: Vec<(String, String)> = hook
        .posts()
        .iter()
        .map(|r| r.json())
        .map(|b| {
            (
                b["schedule"].as_str().unwrap().to_string(),
                b["slot_at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut unique = slots.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), slots.len(), "each slot told once: {}", hook.summary());
}
