//! The operator's command line: `retry` and `cancel` (the UI's buttons),
//! the documented exit codes, `--version` and the man page.

mod common;

use common::{Env, LEDGER_MODULE, seq, wait_until};
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn retry_reruns_a_failed_step_and_cancel_stops_a_running_one() {
    // Fails until `fixed` exists in the project directory.
    let flaky = "#!/bin/sh\n[ -f fixed ] || { echo 'not yet' >&2; exit 1; }\necho fixed\n";
    let slow = "#!/bin/sh\necho started >> slow.txt\nsleep 60\n";
    let mut env = Env::new(
        &[("flaky", flaky), ("ok", LEDGER_MODULE), ("slow", slow)],
        &[("f", &seq(&["ok", "flaky", "ok"])), ("s", &seq(&["slow"]))],
    );
    env.spawn_worker(&[]);
    let run = env.start("f");
    assert_eq!(env.wait_final(run, MINUTE)["state"], "failed");
    let id = run.to_string();

    std::fs::write(env.project.join("fixed"), "").unwrap();
    let out = env.run(&["retry", &id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    assert_eq!(
        (v["action"].as_str(), v["outcome"].as_str()),
        (Some("retry"), Some("done"))
    );
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let steps: Vec<(i64, i64)> = v["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["step"].as_i64().unwrap(), e["attempt"].as_i64().unwrap()))
        .collect();
    assert_eq!(steps, [(0, 1), (1, 1), (1, 2), (2, 1)], "only the failed step again");

    // Not failed any more: the action does not apply, and it says why.
    let out = env.run(&["retry", &id]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot retry run {id}")), "{err}");

    // Cancel a running module: recorded at once, the module stopped.
    let run = env.start("s");
    wait_until("the slow module to start", MINUTE, || {
        if env.read("slow.txt").contains("started") {
            Ok(())
        } else {
            Err("not yet")
        }
    });
    let out = env.run(&["cancel", &run.to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&out)["state"], "canceled");
    let v = env.wait_exec(run, MINUTE, |e| e["state"] == "canceled");
    assert!(
        v["duration_ms"].as_i64().unwrap() < 30_000,
        "stopped, not waited for: {v}"
    );
    let out = env.run(&["cancel", &run.to_string()]);
    assert_eq!(out.status.code(), Some(1), "a canceled run cannot be canceled again");

    let out = env.run(&["retry", "0190d6a0-0000-7000-8000-000000000000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run 0190d6a0-0000-7000-8000-000000000000 is recorded"));
}

#[test]
fn exit_codes_follow_the_documented_table() {
    let env = Env::new(
        &[("ok", LEDGER_MODULE)],
        &[("s", &seq(&["ok"])), ("bad", "[{\"module_name\": \"nope\"}]")],
    );
    // 2: usage and definitions.
    assert_eq!(env.run(&["start"]).status.code(), Some(2), "missing argument");
    assert_eq!(env.run(&["start", "bad"]).status.code(), Some(2), "unknown module");
    assert_eq!(env.run(&["validate"]).status.code(), Some(2));
    // 3: a service unreachable (in the embedded mode: its store unusable).
    if common::embedded_mode() {
        let out = env
            .cmd()
            .args(["runs"])
            .env("DATABASE_URL", "sqlite:///proc/no-such-dir/scheduler.db")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used"));
    } else {
        exit_3_for_unreachable_servers(&env);
    }
    // 0 and 1: `run` of a sequence that succeeds, and `show` of no such run.
    assert_eq!(env.run(&["run", "s"]).status.code(), Some(0));
    assert_eq!(
        env.run(&["show", "0190d6a0-0000-7000-8000-000000000000"]).status.code(),
        Some(1)
    );
}

fn exit_3_for_unreachable_servers(env: &Env) {
    let out = env
        .cmd()
        .args(["runs"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to PostgreSQL"));
    let out = env
        .cmd()
        .args(["cancel", "0190d6a0-0000-7000-8000-000000000000"])
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn version_names_the_commit_and_the_man_page_lists_every_command() {
    let env = Env::new(&[], &[]);
    let out = env.run(&["--version"]);
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with("scheduler 0.1.0 (") && (v.contains("commit ") || v.contains("unknown commit")),
        "{v}"
    );
    let out = env.run(&["man"]);
    assert!(out.status.success());
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(man.contains(".TH scheduler 1"), "{}", &man[..200]);
    assert!(
        man.contains("Exit codes: 0 ok; 1 a run failed"),
        "the exit codes are in the man page"
    );
    for command in ["start", "worker", "retry", "cancel", "logs", "prune", "completions"] {
        assert!(
            man.contains(&format!("scheduler\\-{command}(1)")),
            "{command} missing from the man page"
        );
    }
}
