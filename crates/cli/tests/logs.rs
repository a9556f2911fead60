//! Module logs in the record: every line, in order, readable by
//! `scheduler logs` from the database (not the worker's disk); capped with
//! head and tail; live with `--follow`; kept when the worker is SIGKILLed.

mod common;

use common::sql::uuid;
use common::{Env, seq, wait_until};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn logs(env: &Env, args: &[&str]) -> (String, String, bool) {
    let out = env.run(&[&["logs"], args].concat());
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// Queries the test's store.
fn scalar(env: &Env, sql: &str) -> i64 {
    env.sql(sql)
}

#[test]
fn every_line_of_both_streams_is_recorded_in_order_and_read_back_by_step_and_stream() {
    let talk = "#!/bin/sh\ni=1\nwhile [ $i -le 2000 ]; do echo \"out $i\"; if [ $((i % 500)) = 0 ]; then sleep 0.1; echo \"err $i\" >&2; sleep 0.1; fi; i=$((i+1)); done\nprintf 'raw \\377 \\033[31m<b>\\n'\n";
    let quiet = "#!/bin/sh\nexit 0\n";
    let mut env = Env::new(
        &[("talk", talk), ("quiet", quiet)],
        &[("s", &seq(&["talk", "quiet", "talk"]))],
    );
    env.spawn_worker(&[]);
    let run = env.start("s");
    let v = env.wait_final(run, Duration::from_secs(60));
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let id = run.to_string();

    // One step: every line, stdout and stderr in the order they were written.
    let expected: String = (1..=2000)
        .map(|i| {
            let mut s = format!("out {i}\n");
            if i % 500 == 0 {
                s.push_str(&format!("err {i}\n"));
            }
            s
        })
        .collect();
    // Each stream exactly; across streams, the order they were read in
    // (two pipes: exact when the module pauses between them, as here).
    let out = env.run(&["logs", &id, "--step", "1", "--stream", "stdout"]);
    let only_out: String = expected
        .lines()
        .filter(|l| l.starts_with("out"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut want = only_out.into_bytes();
    // Raw bytes to a pipe: the module's own bytes, not UTF-8, escape codes and all.
    want.extend_from_slice(b"raw \xff \x1b[31m<b>\n");
    assert!(
        out.stdout == want,
        "step 1's stdout differs: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = env.run(&["logs", &id, "--step", "1"]);
    assert!(out.status.success());
    let mut want = expected.clone().into_bytes();
    want.extend_from_slice(b"raw \xff \x1b[31m<b>\n");
    assert!(
        out.stdout == want,
        "step 1's log differs: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (err, _, ok) = logs(&env, &[&id, "--step", "3", "--stream", "stderr"]);
    assert!(ok);
    assert_eq!(err, "err 500\nerr 1000\nerr 1500\nerr 2000\n");
    // The whole run: a header per execution, the quiet one empty.
    let (all, _, _) = logs(&env, &[&id]);
    assert!(
        all.starts_with("==> step 1 (talk), attempt 1 <==\nout 1\n"),
        "{}",
        &all[..80]
    );
    assert!(all.contains("<b>\n==> step 2 (quiet), attempt 1 <==\n==> step 3 (talk), attempt 1 <==\nout 1\n"));
    // Each complete log has its total; nothing omitted.
    for e in v["executions"].as_array().unwrap() {
        assert_eq!(e["log_omitted"], 0, "{e}");
        assert!(e["log_bytes"].as_i64().is_some(), "{e}");
    }
    assert_eq!(v["executions"][1]["log_bytes"], 0);
    // A module that prints nothing writes no row.
    assert_eq!(
        scalar(
            &env,
            &format!(
                "SELECT count(*) FROM execution_logs WHERE run_id = {} AND step = 1",
                uuid(run)
            )
        ),
        0
    );

    let (_, err, ok) = logs(&env, &[&id, "--step", "9"]);
    assert!(!ok && err.contains("has no execution of step 9"), "{err}");
    let (_, err, ok) = logs(&env, &[&id, "--stream", "both"]);
    assert!(
        !ok && err.contains("--stream \"both\": write stdout or stderr"),
        "{err}"
    );
    let (_, err, ok) = logs(&env, &["0190d6a0-0000-7000-8000-000000000000"]);
    assert!(
        !ok && err.contains("no run 0190d6a0-0000-7000-8000-000000000000 is recorded"),
        "{err}"
    );
}

/// Runs of the flood under the worker, alternating with as many to `/dev/null`.
const FLOOD_REPS: usize = 5;
/// The median under the worker may be this many times the median to
/// `/dev/null`. The target, 1.10, is for a release build and is measured by
/// `scheduler bench-flood` (which measured 2.7 when this was written: the
/// target is not met). This is a debug build on a shared two-core machine,
/// where medians of 2.6 to 3.3 were seen at a load of 3, and the load often
/// reaches 9; in a CI run of 2026-11-28 the bare flood itself took 20 to 73 ms
/// from one repetition to the next, and the ratio of the medians was 6.8. What
/// it catches is capture becoming a bottleneck: a log writer that makes the
/// reader wait, output handled per line or per byte (tens to hundreds of
/// times slower), not a drift of a few times, which is the benchmark's to
/// show.
const FLOOD_MAX_RATIO: f64 = 20.0;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
fn a_50_mb_flood_keeps_head_and_tail_and_counts_the_middle_with_bounded_worker_memory() {
    let flood = "#!/bin/sh\necho first line\nyes 'abcdefghijklmnopqrstuvwxyz' | head -c 50000000\necho last line\n";
    let mut env = Env::new(&[("flood", flood)], &[("s", &seq(&["flood"]))]);
    // The worker's own log would otherwise carry the 50 MB too.
    let w = env.spawn_worker_with_env(&[], &[("RUST_LOG", "info,module_output=off")]);
    let total = 50_000_000 + "first line\n".len() as i64 + "last line\n".len() as i64;
    // The module's time, under the worker (the execution's duration, from
    // the spawn's return to the exit) and to /dev/null (the same around a
    // plain spawn), alternately so that both see the same load.
    let (mut under_ms, mut bare_ms) = (Vec::new(), Vec::new());
    let mut first = None;
    for _ in 0..FLOOD_REPS {
        let run = env.start("s");
        let v = env.wait_final(run, Duration::from_secs(120));
        assert_eq!(v["state"], "succeeded", "{v:#}");
        // The step's result does not wait for its log: the log completes after.
        let v = wait_until("the log to be complete", Duration::from_secs(60), || {
            let v = env.show(run);
            if v["executions"][0]["log_bytes"].is_null() {
                Err(v)
            } else {
                Ok(v)
            }
        });
        let e = &v["executions"][0];
        assert_eq!(e["log_bytes"], total, "{e}");
        under_ms.push(e["duration_ms"].as_f64().unwrap());
        first.get_or_insert((run, e.clone()));

        let mut module = std::process::Command::new(env.project.join("bin/flood.sh"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        assert!(module.wait().unwrap().success());
        bare_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    let (run, e) = first.unwrap();
    let omitted = e["log_omitted"].as_i64().unwrap();
    let stored = scalar(
        &env,
        &format!(
            "SELECT CAST(sum(length(data)) AS BIGINT) FROM execution_logs WHERE run_id = {}",
            uuid(run)
        ),
    );
    assert_eq!(stored + omitted, total);
    // About the cap (16 MiB) is kept: whole rows (64 KiB at most) of head and tail.
    let cap = 16 * 1024 * 1024;
    assert!((stored - cap).abs() <= 128 * 1024, "stored {stored}");
    let out = env.run(&["logs", &run.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("==> step 1 (flood), attempt 1 <==\nfirst line\nabcdefghijklmnopqrstuvwxyz\n"));
    // 50,000,000 is not a multiple of the 27-byte line: the last is cut at 23 bytes.
    assert!(text.ends_with("abcdefghijklmnopqrstuvwxyz\nabcdefghijklmnopqrstuvwlast line\n"));
    assert_eq!(text.matches(" bytes omitted …\n").count(), 1, "one gap, in the middle");
    let status = std::fs::read_to_string(format!("/proc/{}/status", env.worker_pid(w))).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    let (under, bare) = (median(&under_ms), median(&bare_ms));
    eprintln!(
        "50 MB flood, median of {FLOOD_REPS}: {under:.0} ms under the worker, {bare:.0} ms to /dev/null (ratio {:.2}; \
         each: {under_ms:?} / {bare_ms:?}); worker peak RSS {} MiB after {FLOOD_REPS} floods; stored {stored} bytes, omitted {omitted}",
        under / bare,
        hwm_kib / 1024
    );
    assert!(hwm_kib < 160 * 1024, "worker peak RSS {hwm_kib} KiB");
    assert!(
        under <= bare * FLOOD_MAX_RATIO,
        "the flood took {under:.0} ms under the worker against {bare:.0} ms to /dev/null (medians of {FLOOD_REPS}: \
         {under_ms:?} / {bare_ms:?}); at most {FLOOD_MAX_RATIO}x is allowed"
    );
}

#[test]
fn lines_logged_before_the_worker_is_killed_are_in_the_record() {
    let slow = "#!/bin/sh\ni=1\nwhile [ $i -le 100 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.1; done\n";
    let mut env = Env::new(&[("slow", slow)], &[("s", &seq(&["slow"]))]);
    let w = env.spawn_worker(&[]);
    let run = env.start("s");
    env.wait_exec(run, Duration::from_secs(30), |e| e["state"] == "running");
    std::thread::sleep(Duration::from_millis(1500));
    env.signal_worker(w, nix::sys::signal::Signal::SIGKILL);
    let killed_at = Instant::now();
    env.wait_worker(w, Duration::from_secs(10));
    let (text, _, ok) = logs(&env, &[&run.to_string(), "--step", "1"]);
    assert!(ok);
    // About 15 lines were printed; all but the last flush interval's are kept.
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 10, "{} lines kept: {text}", lines.len());
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("line {}", i + 1));
    }
    assert!(killed_at.elapsed() < Duration::from_secs(30));
}

#[test]
fn follow_prints_lines_as_the_module_writes_them_and_stops_when_the_run_ends() {
    // Each line carries the time it was written (ms since the epoch).
    let ticker =
        "#!/bin/sh\ni=1\nwhile [ $i -le 12 ]; do echo \"tick $i $(date +%s%3N)\"; i=$((i+1)); sleep 0.3; done\n";
    let mut env = Env::new(&[("ticker", ticker)], &[("s", &seq(&["ticker", "ticker"]))]);
    env.spawn_worker(&[]);
    let run = env.start("s");
    let mut follower = env
        .cmd()
        .args(["logs", &run.to_string(), "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reader = BufReader::new(follower.stdout.take().unwrap());
    let mut lags = Vec::new();
    let mut ticks = 0;
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("tick ") {
            ticks += 1;
            let written: i64 = rest.split(' ').nth(1).unwrap().parse().unwrap();
            let now = chrono::Utc::now().timestamp_millis();
            lags.push(now - written);
        }
    }
    let status = wait_until("the follower to exit", Duration::from_secs(20), || {
        follower.try_wait().unwrap().ok_or("still running")
    });
    assert!(status.success());
    assert_eq!(ticks, 24, "both steps' lines, once each");
    lags.sort();
    let (p50, max) = (lags[lags.len() / 2], lags[lags.len() - 1]);
    eprintln!("logs --follow: line written to printed: p50 {p50} ms, max {max} ms");
    assert!(max < 2000, "a line took {max} ms to reach the follower: {lags:?}");
}
