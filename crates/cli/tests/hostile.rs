//! Hostile input, each with a clear outcome and nothing lost: hanging
//! modules, daemons holding pipes, binary output, huge sequences, garbage
//! messages, unreachable services.

mod common;

use common::{Env, LEDGER_MODULE, assert_stays, seq, wait_until};
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);
/// How long a queue must keep its depth to show nothing more is coming.
const NOTHING_MORE_WINDOW: Duration = Duration::from_millis(500);

#[test]
fn a_hanging_module_is_killed_at_its_timeout_and_the_run_fails_saying_so() {
    let hang = "#!/bin/sh\ntrap '' TERM\nsleep 300\n";
    let mut env = Env::new(&[("hang", hang)], &[("s", &seq(&["hang"]))]);
    std::fs::write(
        env.project.join("modules.json"),
        r#"{"hang": {"cmd": "./bin/hang.sh", "timeout_secs": 1}}"#,
    )
    .unwrap();
    env.spawn_worker(&["--kill-grace", "1"]);
    let t0 = Instant::now();
    let v = env.wait_final(env.start("s"), MINUTE);
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert_eq!(v["state"], "failed");
    assert!(v["error"].as_str().unwrap().contains("timed out after 1s"), "{v:#}");
}

#[test]
fn the_workers_default_timeout_applies_to_modules_without_their_own() {
    // "patient" sets its own timeout (5 s) and takes 2 s: the worker's
    // default (1 s) must not apply to it. "hang" sets none: killed at 1 s.
    let patient = "#!/bin/sh\nsleep 2\n";
    let hang = "#!/bin/sh\ntrap '' TERM\nsleep 300\n";
    let mut env = Env::new(
        &[("patient", patient), ("hang", hang)],
        &[("s", &seq(&["patient", "hang"]))],
    );
    std::fs::write(
        env.project.join("modules.json"),
        r#"{"patient": {"cmd": "./bin/patient.sh", "timeout_secs": 5}, "hang": {"cmd": "./bin/hang.sh"}}"#,
    )
    .unwrap();
    env.spawn_worker(&["--module-timeout", "1", "--kill-grace", "1"]);
    let t0 = Instant::now();
    let v = env.wait_final(env.start("s"), MINUTE);
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert_eq!(v["state"], "failed", "{v:#}");
    assert_eq!(v["executions"][0]["state"], "succeeded", "its own timeout wins: {v:#}");
    assert_eq!(v["executions"][1]["state"], "failed", "{v:#}");
    assert!(v["error"].as_str().unwrap().contains("timed out after 1s"), "{v:#}");
}

#[test]
fn a_module_leaving_a_daemon_that_holds_its_pipes_ends_and_the_daemon_is_killed() {
    let daemon = "#!/bin/sh\nsleep 300 &\necho $! > daemon.pid\necho started\n";
    let mut env = Env::new(&[("daemon", daemon)], &[("s", &seq(&["daemon"]))]);
    env.spawn_worker(&["--kill-grace", "1"]);
    let v = env.wait_final(env.start("s"), MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert!(
        v["executions"][0]["error"]
            .as_str()
            .unwrap()
            .contains("background process"),
        "{v:#}"
    );
    let pid: i32 = env.read("daemon.pid").trim().parse().unwrap();
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    assert!(!alive, "the daemon child must not outlive its module");
}

#[test]
fn binary_output_is_recorded_lossily() {
    let bin = "#!/bin/sh\nprintf 'ok \\377\\376 \\000 end\\n'\nprintf '\\303(' >&2\n";
    let mut env = Env::new(&[("bin", bin)], &[("s", &seq(&["bin"]))]);
    env.spawn_worker(&[]);
    let v = env.wait_final(env.start("s"), MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let out = v["executions"][0]["stdout_tail"].as_str().unwrap();
    assert!(out.starts_with("ok \u{FFFD}\u{FFFD} \u{FFFD} end"), "{out:?}");
}

#[test]
fn a_sequence_of_a_thousand_steps_runs_to_the_end() {
    let steps: Vec<&str> = vec!["ok"; 1000];
    let mut env = Env::new(&[("ok", LEDGER_MODULE)], &[("s", &seq(&steps))]);
    env.spawn_worker(&[]);
    let v = env.wait_final(env.start("s"), 5 * MINUTE);
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["executions"].as_array().unwrap().len(), 1000);
    assert_eq!(env.read("ledger.txt").lines().count(), 1000);
}

#[test]
fn malformed_oversized_and_unknown_version_messages_go_to_the_dead_letter_queue() {
    let mut env = Env::new(&[("ok", LEDGER_MODULE)], &[("s", &seq(&["ok"]))]);
    env.spawn_worker(&[]);
    let big = vec![b'x'; 70 * 1024];
    env.publish_raw(&[
        b"not json",
        br#"{"v": 9, "kind": "start_etl", "run_id": "00000000-0000-0000-0000-000000000000"}"#,
        br#"{"v": 1, "kind": "explode"}"#,
        &big,
    ]);
    // A message for a run that does not exist is dropped, not dead-lettered.
    env.publish(&[scheduler_core::Message::StartEtl {
        run_id: uuid::Uuid::now_v7(),
    }]);
    wait_until(
        "the 4 bad messages dead-lettered and the unknown run's dropped",
        MINUTE,
        || {
            let (depth, log) = (env.dead_letters(), env.worker_log(0));
            assert!(depth <= 4, "{depth} dead letters, not 4; log:\n{log}");
            if depth == 4 && log.contains("no run") {
                Ok(())
            } else {
                Err(format!("dead-letter queue holds {depth}; log:\n{log}"))
            }
        },
    );
    assert_stays("exactly 4 dead letters", NOTHING_MORE_WINDOW, || {
        match env.dead_letters() {
            4 => Ok(()),
            depth => Err(format!("the dead-letter queue holds {depth}")),
        }
    });
    let log = env.worker_log(0);
    assert!(
        log.contains("message is not JSON") && log.contains("version Some(9)") && log.contains("exceeds"),
        "{log}"
    );
    assert!(log.contains("no run") && log.contains("is recorded"), "{log}");
    // And the worker is still serving.
    let run = env.start("s");
    assert_eq!(env.wait_final(run, MINUTE)["state"], "succeeded");

    // Well-formed messages about a step or run that does not exist: each
    // dropped with a log line, none dead-lettered, nothing run.
    use scheduler_core::Message;
    let ghost = uuid::Uuid::now_v7();
    env.publish(&[
        Message::ExecModule {
            run_id: run,
            step: 99,
            attempt: 1,
        },
        Message::ExecModule {
            run_id: ghost,
            step: 0,
            attempt: 1,
        },
        Message::EndEtl { run_id: ghost },
    ]);
    wait_until(
        "the drops logged: 2 'no such execution recorded', 2 'no run' in all",
        MINUTE,
        || {
            let log = env.worker_log(0);
            if log.matches("no such execution recorded").count() >= 2 && log.matches("no run").count() >= 2 {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    assert_eq!(env.dead_letters(), 4, "dropped, not dead-lettered");
    assert_eq!(env.queue_depth(&env.queue), 0, "and not requeued");
    assert_eq!(
        env.read("ledger.txt").lines().count(),
        1,
        "only the real run's step ran"
    );
    let v = env.show(run);
    assert_eq!(
        v["executions"].as_array().unwrap().len(),
        1,
        "no execution was invented: {v:#}"
    );
}

#[test]
fn unreachable_services_get_a_clear_message_that_says_what_to_do() {
    if !common::distributed_only("unreachable PostgreSQL and RabbitMQ servers") {
        return;
    }
    let env = Env::new(&[("ok", LEDGER_MODULE)], &[("s", &seq(&["ok"]))]);
    let out = env
        .cmd()
        .args(["start", "s"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "3: a service unreachable");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to PostgreSQL at postgres://postgres@127.0.0.1:1/x")
            && err.contains("DATABASE_URL"),
        "{err}"
    );

    let out = env
        .cmd()
        .args(["worker"])
        .env("AMQP_URL", "amqp://guest:secret@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "3: a service unreachable");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:1") && err.contains("AMQP_URL"),
        "{err}"
    );
    assert!(!err.contains("secret"), "passwords never reach messages");
}
