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
        .args(["--quiet-wait", "0", "--json"])
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
    // Its threads waited (for the modules, the store) while they ran.
    assert!(part("worker_switches_voluntary") > 0.0, "{cpu}");
    assert!(
        stdout.contains("context switches (voluntary + preempted) per module execution"),
        "{stdout}"
    );
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
