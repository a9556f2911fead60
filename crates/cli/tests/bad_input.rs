//! Hostile modules and arguments: verbatim arguments, floods, missing
//! commands, and a worker that must stay up through all of them.

mod common;

use common::{Env, LEDGER_MODULE, seq};
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn arguments_with_spaces_and_shell_metacharacters_arrive_verbatim() {
    let argv = "#!/bin/sh\nout=\"$4\"\nprintf '%s\\0' \"$@\" > \"$out\"\n";
    let input = "my file; rm -rf / $(id) `id` 'single' \"double\" * \\ é\nline2";
    let output = "out dir/args $HOME.bin";
    let steps = serde_json::json!([{"module_name": "argv", "input": input, "output": output, "conf": "a|b&&c>d"}]);
    let mut env = Env::new(&[("argv", argv)], &[("s", &steps.to_string())]);
    std::fs::create_dir_all(env.project.join("out dir")).unwrap();
    env.spawn_worker(&[]);
    let run = env.start("s");
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let got = std::fs::read(env.project.join(output)).unwrap();
    let expected: Vec<u8> = ["--input", input, "--output", output, "--config", "a|b&&c>d"]
        .iter()
        .flat_map(|a| a.bytes().chain([0]))
        .collect();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&expected));
    assert_eq!(v["executions"][0]["argv"][2], input);
}

#[test]
fn a_module_that_floods_stdout_is_capped_in_the_record() {
    let flood = "#!/bin/sh\nhead -c 50000000 /dev/zero | tr '\\0' 'x'\necho\necho done-marker\n";
    let mut env = Env::new(&[("flood", flood)], &[("s", &seq(&["flood"]))]);
    env.spawn_worker(&[]);
    let run = env.start("s");
    let v = env.wait_final(run, 2 * MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let e = &v["executions"][0];
    assert_eq!(e["stdout_bytes"], 50_000_000 + 1 + 12);
    let tail = e["stdout_tail"].as_str().unwrap();
    assert!(tail.len() <= 16 * 1024 + 100, "tail of {} bytes", tail.len());
    assert!(tail.ends_with("done-marker\n"), "the tail keeps the end of the output");
    assert!(tail.contains("bytes omitted"));
}

#[test]
fn a_missing_command_fails_its_step_clearly_and_the_worker_stays_up() {
    let mut env = Env::new(&[("ok", LEDGER_MODULE)], &[("good", &seq(&["ok"]))]);
    // A module whose program does not exist, and one that is not executable.
    std::fs::write(
        env.project.join("modules.json"),
        r#"{"ok": {"cmd": "./bin/ok.sh"}, "ghost": {"cmd": "./bin/ghost.sh"}, "noexec": {"cmd": "./notes.txt"}}"#,
    )
    .unwrap();
    std::fs::write(env.project.join("notes.txt"), "not a program").unwrap();
    std::fs::write(
        env.project.join("etl_sequences/ghost.json"),
        seq(&["ok", "ghost", "ok"]),
    )
    .unwrap();
    std::fs::write(env.project.join("etl_sequences/noexec.json"), seq(&["noexec"])).unwrap();
    env.spawn_worker(&[]);

    let v = env.wait_final(env.start("ghost"), MINUTE);
    assert_eq!(v["state"], "failed");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.contains("not found") && err.contains("ghost.sh") && err.contains("modules.json"),
        "{err}"
    );
    assert_eq!(v["executions"].as_array().unwrap().len(), 2);

    let v = env.wait_final(env.start("noexec"), MINUTE);
    assert!(v["error"].as_str().unwrap().contains("not executable"), "{v:#}");

    let v = env.wait_final(env.start("good"), MINUTE);
    assert_eq!(v["state"], "succeeded", "the worker must still be serving");

    let out = env.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "a definition error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ghost") && stderr.contains("not executable"),
        "{stderr}"
    );
}

#[test]
fn start_fails_fast_with_a_clear_message_for_bad_definitions() {
    let env = Env::new(
        &[("ok", LEDGER_MODULE)],
        &[("broken", "[{\"module_name\": \"ok\",}]"), ("unknown", &seq(&["nope"]))],
    );
    let out = env.run(&["start", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no sequence named \"nosuch\"") && stderr.contains("broken"),
        "{stderr}"
    );

    let stderr = String::from_utf8_lossy(&env.run(&["start", "broken"]).stderr).to_string();
    assert!(
        stderr.contains("etl_sequences/broken.json: invalid JSON at line 1"),
        "{stderr}"
    );

    let stderr = String::from_utf8_lossy(&env.run(&["start", "unknown"]).stderr).to_string();
    assert!(
        stderr.contains("step 0 uses module \"nope\"") && stderr.contains("known modules: ok"),
        "{stderr}"
    );
}

/// A rolling upgrade's old binary, or a rollback, meets a store a newer
/// version migrated: every command refuses it with exit 3 (the store cannot
/// be used, as for any unusable store), says what to do, and changes
/// nothing, in either mode.
#[test]
fn a_store_migrated_by_a_newer_version_exits_3_and_keeps_its_runs() {
    let env = Env::new(&[("ok", LEDGER_MODULE)], &[("s", &seq(&["ok"]))]);
    let run = env.start("s");
    let checksum = if common::embedded_mode() {
        "X'00'"
    } else {
        "'\\x00'::bytea"
    };
    env.sql(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99991231000000, 'from the future', TRUE, {checksum}, 0)"
    ));
    for args in [&["runs"][..], &["start", "s"], &["show", &run.to_string()]] {
        let out = env.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "scheduler {args:?}: {stderr}");
        for says in ["newer version of scheduler", "99991231000000", "Upgrade scheduler"] {
            assert!(
                stderr.contains(says),
                "scheduler {args:?} should say {says:?}: {stderr}"
            );
        }
    }
    env.sql("DELETE FROM _sqlx_migrations WHERE version = 99991231000000");
    assert_eq!(env.show(run)["id"], run.to_string(), "the run is still there");
    assert_eq!(
        env.sql("SELECT COUNT(*) FROM runs"),
        1,
        "the refused start recorded nothing"
    );
}

#[test]
fn sigterm_lets_the_running_module_finish_and_then_exits() {
    let slow = "#!/bin/sh\nsleep 2\necho \"$ETL_RUN_ID $ETL_STEP $ETL_ATTEMPT $$\" >> ledger.txt\n";
    let mut env = Env::new(
        &[("slow", slow), ("ok", LEDGER_MODULE)],
        &[("s", &seq(&["slow", "ok"]))],
    );
    let w = env.spawn_worker(&["--drain-timeout", "30"]);
    let run = env.start("s");
    env.wait_exec(run, MINUTE, |e| e["step"] == 0 && e["state"] == "running");
    env.signal_worker(w, nix::sys::signal::Signal::SIGTERM);
    let status = env.wait_worker(w, MINUTE);
    assert!(status.success(), "worker exit: {status:?}\n{}", env.worker_log(w));
    let v = env.show(run);
    assert_eq!(
        v["executions"][0]["state"], "succeeded",
        "the running module was allowed to finish: {v:#}"
    );
    assert_eq!(v["state"], "running", "no new work was taken after SIGTERM");
    // The queued next step is still there for the next worker.
    env.spawn_worker(&[]);
    assert_eq!(env.wait_final(run, MINUTE)["state"], "succeeded");
}

#[test]
fn sigterm_past_the_drain_bound_hands_the_running_step_back() {
    let slow =
        "#!/bin/sh\necho \"start $ETL_ATTEMPT\" >> ledger.txt\nsleep 20\necho \"end $ETL_ATTEMPT\" >> ledger.txt\n";
    let quick = "#!/bin/sh\necho \"start $ETL_ATTEMPT\" >> ledger.txt\necho \"end $ETL_ATTEMPT\" >> ledger.txt\n";
    let mut env = Env::new(&[("slow", slow), ("quick", quick)], &[("s", &seq(&["slow"]))]);
    let w = env.spawn_worker(&["--drain-timeout", "1", "--kill-grace", "1"]);
    let run = env.start("s");
    env.wait_exec(run, MINUTE, |e| e["state"] == "running");
    env.signal_worker(w, nix::sys::signal::Signal::SIGTERM);
    let status = env.wait_worker(w, Duration::from_secs(20));
    assert!(status.success(), "{}", env.worker_log(w));
    let v = env.show(run);
    assert_eq!(v["executions"][0]["state"], "abandoned", "{v:#}");
    assert!(
        v["executions"][0]["error"].as_str().unwrap().contains("handed back"),
        "{v:#}"
    );
    assert_eq!(
        v["executions"][1]["state"], "queued",
        "the step is queued again as attempt 2: {v:#}"
    );
    // The next worker runs attempt 2 (swap in a quick module to keep the test short).
    std::fs::copy(env.project.join("bin/quick.sh"), env.project.join("bin/slow.sh")).unwrap();
    env.spawn_worker(&[]);
    let v = env.wait_final(run, MINUTE);
    assert_eq!(v["state"], "succeeded");
    assert_eq!(v["executions"][1]["attempt"], 2);
    assert!(
        !env.read("ledger.txt").contains("end 1"),
        "attempt 1 was stopped, not left running"
    );
}
