//! `scheduler bench`, tiny, end to end, in the mode of the pass
//! (`SCHEDULER_TEST_MODE`): it runs a real worker process, prints the CPU
//! split and the worker's peak memory, and `--json` holds every figure.

mod common;

use common::{Env, base_db_url, embedded_mode};
use serde_json::Value;

#[test]
fn bench_runs_a_real_worker_and_writes_every_figure() {
    let mut env = Env::new(&[], &[]);
    // The bench uses `<db>_bench` of the database it is given: name that
    // one the environment's, so it is dropped with the environment.
    let given = env.db_name.clone();
    env.db_name = format!("{given}_bench");
    let json = env.project.join("figures.json");
    let mut cmd = env.cmd();
    if !embedded_mode() {
        cmd.env("DATABASE_URL", format!("{}/{given}", base_db_url()));
    }
    let out = cmd
        .args(["bench", "--runs", "4", "--steps", "2", "-c", "2", "--latency-runs", "2"])
        .args(["--quiet-wait", "0", "--extra-runs", "1", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("machine CPU per module execution"), "{stdout}");
    assert!(stdout.contains("worker peak RSS"), "{stdout}");
    // Passed on to the worker, which parsed it (or it would not have started).
    assert!(stdout.contains("`scheduler worker -c 2 --extra-runs 1`"), "{stdout}");

    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["mode"], if embedded_mode() { "embedded" } else { "distributed" });
    assert_eq!(r["concurrency"], 2);
    assert_eq!(r["throughput"]["executions"], 8);
    assert!(r["throughput"]["executions_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["bare_spawn"]["parallel_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["latency"]["first_module"]["n"], 2);
    let cpu = &r["throughput"]["cpu_per_execution"];
    let part = |k: &str| cpu[k].as_f64().unwrap();
    let sum = part("worker_ms") + part("postgres_ms") + part("rabbitmq_ms") + part("bench_ms") + part("rest_ms");
    assert!((sum - part("machine_ms")).abs() < 1e-6, "the split adds up: {cpu}");
    assert!(part("worker_ms") > 0.0, "the worker process ran the modules: {cpu}");
    // Its own threads are a part of it (jiffies: 0 is possible for 8 executions).
    assert!(
        part("worker_own_ms") >= 0.0 && part("worker_own_ms") <= part("worker_ms"),
        "{cpu}"
    );
    // The modules it reaped are the rest of its part (the keeper's own is
    // about 0), and the machine without them is what dispatching cost.
    assert!(
        part("modules_ms") >= 0.0 && part("worker_own_ms") + part("modules_ms") <= part("worker_ms") + 1e-6,
        "{cpu}"
    );
    assert!(
        (part("dispatch_ms") + part("modules_ms") - part("machine_ms")).abs() < 1e-6,
        "{cpu}"
    );
    assert!(
        stdout.contains("the modules themselves (what the worker reaped"),
        "{stdout}"
    );
    // Its threads waited (for the modules, the store) while they ran.
    assert!(part("worker_switches_voluntary") > 0.0, "{cpu}");
    assert!(
        stdout.contains("context switches (voluntary + preempted) per module execution"),
        "{stdout}"
    );
    // The disks' work over the phase: the store's commits (or PostgreSQL's)
    // were flushed, so something reached a disk; sectors are whole (a flush
    // count the kernel does not keep is null). No figure only where
    // /proc/diskstats names no physical disk.
    let disk = &r["throughput"]["disk_per_execution"];
    if disk.is_null() {
        assert!(stdout.contains("the disks: n/a"), "{stdout}");
    } else {
        let written = disk["written_kib"].as_f64().unwrap();
        assert!(written > 0.0 && (written * 8.0 * 2.0).fract() == 0.0, "{disk}");
        assert!(disk["write_requests"].as_f64().unwrap() > 0.0, "{disk}");
        assert!(
            disk["flushes"].is_null() || disk["flushes"].as_f64().unwrap() >= 0.0,
            "{disk}"
        );
        assert!(
            stdout.contains("cache flushes (fsyncs that reached a disk)"),
            "{stdout}"
        );
    }
    let pg = &r["throughput"]["postgres_per_execution"];
    if embedded_mode() {
        assert!(pg.is_null(), "{pg}");
    } else {
        // Every execution's record is at least one transaction that wrote
        // (its close); a run's start and its producer's insert add more.
        let tx = pg["write_transactions"].as_f64().unwrap();
        assert!((1.0..=6.0).contains(&tx), "{pg}");
        assert!(pg["wal_kib"].as_f64().unwrap() > 0.5, "{pg}");
        assert!(stdout.contains("write transactions (each its own commit)"), "{stdout}");
    }
    // A real process beside the bench, and its keeper beside it.
    assert!(r["worker"]["worker_peak_rss_kib"].as_u64().unwrap() > 1024, "{r}");
    assert!(r["worker"]["keeper_peak_rss_kib"].as_u64().unwrap() > 0, "{r}");
    let pss = r["worker"]["pss_kib"].as_u64().unwrap();
    assert!(pss > 1024 && pss < r["worker"]["peak_rss_kib"].as_u64().unwrap(), "{r}");
    // The bench's temporary project (with the worker's log) is gone.
    let kept = stdout.lines().find(|l| l.starts_with("worker: ")).unwrap();
    let log = kept.rsplit("log ").next().unwrap();
    assert!(!std::path::Path::new(log).exists(), "{log} left behind");
}

/// The bench's worker process, a child of `bench` whose command line holds
/// `worker`, once it is there.
fn worker_of(bench: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: u32 = stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let worker = cmdline.split(|b| *b == 0).any(|a| a == b"worker");
        (ppid == bench && worker).then_some(pid)
    })
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()) == Some("Z"),
    }
}

#[test]
fn a_bench_stopped_by_a_signal_stops_its_worker_too() {
    let stderr = bench_stopped_by(nix::sys::signal::Signal::SIGTERM);
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
}

/// SIGKILL gives the bench no chance to stop its worker: the worker was
/// started with the bench as its parent-death signal's watch.
#[test]
fn a_bench_killed_outright_stops_its_worker_too() {
    bench_stopped_by(nix::sys::signal::Signal::SIGKILL);
}

/// Starts a long bench, sends it `signal` mid-phase, and checks that its
/// worker is gone within 10 s; returns the bench's stderr.
fn bench_stopped_by(signal: nix::sys::signal::Signal) -> String {
    use std::time::{Duration, Instant};
    let mut env = Env::new(&[], &[]);
    let given = env.db_name.clone();
    env.db_name = format!("{given}_bench");
    let mut cmd = env.cmd();
    if !embedded_mode() {
        cmd.env("DATABASE_URL", format!("{}/{given}", base_db_url()));
    }
    let bench = cmd
        .args([
            "bench",
            "--runs",
            "100000",
            "--steps",
            "5",
            "-c",
            "2",
            "--latency-runs",
            "100000",
        ])
        .args(["--quiet-wait", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let worker = loop {
        if let Some(pid) = worker_of(bench.id()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the bench started no worker within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let it work a moment: the signal lands mid-phase.
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(bench.id() as i32), signal).unwrap();
    let out = bench.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(worker) {
        assert!(
            Instant::now() < deadline,
            "the bench's worker {worker} outlived the bench ({signal}) by 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stderr
}
