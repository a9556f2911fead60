//! What the record says about an execution beyond its exit code: the
//! kernel's accounting, the output contract, missing inputs, stalls, and a
//! SIGKILL nobody in the scheduler sent.

mod common;

use common::{Env, wait_until};
use serde_json::Value;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

/// Rewrites modules.json: each module `name` runs `bin/<name>.sh` with the
/// extra settings given.
fn modules(env: &Env, extra: &[(&str, Value)]) {
    let mut table = serde_json::Map::new();
    for (name, settings) in extra {
        let mut m = serde_json::json!({"cmd": format!("./bin/{name}.sh")});
        m.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
        table.insert(name.to_string(), m);
    }
    std::fs::write(env.project.join("modules.json"), Value::Object(table).to_string()).unwrap();
}

fn exec(v: &Value, i: usize) -> &Value {
    &v["executions"][i]
}

#[test]
fn the_kernel_accounting_of_each_execution_is_recorded_and_shown() {
    // A child that touches 64 MiB and burns some CPU, waited for by the shell.
    let hog = "#!/bin/sh\npython3 -c 'b = bytearray(64 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\ns = 0\nfor i in range(3000000): s += i'\n";
    let mut env = Env::new(&[("hog", hog)], &[("s", r#"[{"module_name": "hog"}]"#)]);
    env.spawn_worker(&[]);
    let run = env.start("s");
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let e = exec(&v, 0);
    let rss = e["peak_rss_kib"].as_i64().unwrap();
    assert!((64 * 1024..1024 * 1024).contains(&rss), "peak RSS {rss} KiB");
    assert!(e["user_cpu_us"].as_i64().unwrap() > 10_000, "{e}");
    assert!(e["sys_cpu_us"].as_i64().is_some());
    let wall = e["wall_us"].as_i64().unwrap();
    assert_eq!(
        wall / 1000,
        e["duration_ms"].as_i64().unwrap(),
        "the same wall time, to the microsecond"
    );
    let shown = String::from_utf8_lossy(&env.run(&["show", &run.to_string()]).stdout).into_owned();
    assert!(shown.contains("PEAK MEM") && shown.contains(" MiB "), "{shown}");
}

#[test]
fn a_step_that_exits_0_without_writing_its_output_fails_and_a_written_one_is_checksummed() {
    let lazy = "#!/bin/sh\nexit 0\n";
    // Called as `writer.sh --input in/missing.csv --output out/data.csv`.
    let writer = "#!/bin/sh\nmkdir -p out && echo \"rows\" > \"$4\"\n";
    let mut env = Env::new(
        &[("lazy", lazy), ("writer", writer), ("optout", lazy)],
        &[
            ("lazy", r#"[{"module_name": "lazy", "output": "out/{{ ds }}.csv"}]"#),
            (
                "writer",
                r#"[{"module_name": "writer", "output": "out/data.csv", "input": "in/missing.csv"}]"#,
            ),
            ("optout", r#"[{"module_name": "optout", "output": "out/never.csv"}]"#),
        ],
    );
    modules(
        &env,
        &[
            ("lazy", serde_json::json!({})),
            ("writer", serde_json::json!({})),
            ("optout", serde_json::json!({"check_output": false})),
        ],
    );
    env.spawn_worker(&[]);

    let run = env.start("lazy");
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "failed", "{v:#}");
    let today = chrono::Utc::now().format("%Y-%m-%d");
    let error = exec(&v, 0)["error"].as_str().unwrap().to_string();
    assert_eq!(
        error,
        format!("step 1 (lazy) exited 0 but did not write out/{today}.csv")
    );

    // Written: size, time and checksum; the missing input is a warning.
    let first = env.start("writer");
    let v = env.wait_final(first, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let e = exec(&v, 0);
    assert_eq!(e["output_path"], "out/data.csv");
    assert_eq!(e["output_bytes"], 5);
    // sha256("rows\n")
    assert_eq!(
        e["output_sha256"],
        "9b71c268cf258d56d93a8182fce8a2ed6a7d18768a88959e17537d913702d63f"
    );
    assert!(e["output_mtime"].is_string());
    assert_eq!(
        e["warnings"],
        serde_json::json!(["input in/missing.csv did not exist when the step started"])
    );
    // The same output again: the record says it did not change.
    let second = env.start("writer");
    assert_eq!(env.wait_final(second, MINUTE)["state"], "succeeded");
    let shown = String::from_utf8_lossy(&env.run(&["show", &second.to_string()]).stdout).into_owned();
    assert!(
        shown.contains("output out/data.csv: 5 B, unchanged since the previous successful run (same SHA-256)"),
        "{shown}"
    );
    assert!(shown.contains("warning: input in/missing.csv did not exist when the step started"));

    // Opted out: exit 0 is enough.
    let run = env.start("optout");
    assert_eq!(env.wait_final(run, MINUTE)["state"], "succeeded");
}

#[test]
fn a_silent_step_is_marked_stalled_and_with_kill_is_stopped_and_retried() {
    let quiet = "#!/bin/sh\necho start\nsleep 3\necho done\n";
    let mut env = Env::new(
        &[("quiet", quiet), ("stuck", quiet)],
        &[
            ("flag", r#"[{"module_name": "quiet"}]"#),
            (
                "kill",
                r#"[{"module_name": "stuck", "retries": 1, "retry_delay_secs": 1}]"#,
            ),
        ],
    );
    modules(
        &env,
        &[
            ("quiet", serde_json::json!({"stall_secs": 1})),
            ("stuck", serde_json::json!({"stall_secs": 1, "on_stall": "kill"})),
        ],
    );
    env.spawn_worker(&[]);

    // Flagged while it is silent, lifted when it writes again; it succeeds.
    let run = env.start("flag");
    wait_until("the step to be marked stalled", MINUTE, || {
        let v = env.show(run);
        if exec(&v, 0)["stalled_at"].is_string() {
            Ok(())
        } else {
            Err(v)
        }
    });
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert!(exec(&v, 0)["stalled_at"].is_null(), "lifted when it wrote again: {v:#}");

    // Killed and handled as a failure: its retry runs, stalls again, fails.
    let run = env.start("kill");
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "failed", "{v:#}");
    let execs = v["executions"].as_array().unwrap();
    assert_eq!(execs.len(), 2, "the first attempt and its retry: {v:#}");
    for e in execs {
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .contains("stalled: it wrote nothing for its stall_secs and was stopped"),
            "{e}"
        );
        assert!(
            e["duration_ms"].as_i64().unwrap() < 2900,
            "stopped before the module's own end: {e}"
        );
    }
    let log = env.worker_log(0);
    assert!(log.contains("module stalled"), "{log}");
}

#[test]
fn a_sigkill_the_scheduler_did_not_send_is_named() {
    let victim = "#!/bin/sh\necho working\nkill -9 $$\n";
    let mut env = Env::new(&[("victim", victim)], &[("s", r#"[{"module_name": "victim"}]"#)]);
    env.spawn_worker(&[]);
    let run = env.start("s");
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "failed");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("killed by SIGKILL from outside the scheduler: out of memory?"),
        "{error}"
    );
}
