//! PostgreSQL goes away while a module runs (its own test binary: the
//! outage would break any test running beside it). The module ends while
//! the database is down; its result is recorded once the database is back,
//! and the run goes on without re-running anything.

mod common;

use common::{Env, seq, services, wait_until};
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);
/// Failed attempts to record the result before the database comes back:
/// several, so the outage outlasts the first retries (200, 400, 800 ms apart;
/// each also waits out the pool's 5 s acquire timeout, so three fit well
/// inside the 30 s lease).
const RETRIES: usize = 3;

#[test]
fn a_step_that_finished_while_the_database_was_down_is_recorded_once_it_is_back() {
    if !common::distributed_only("a PostgreSQL server stopped and started again") {
        return;
    }
    // It prints a line every 100 ms for 3 s, most of them while the
    // database is down: the worker holds them and writes them once it is back.
    let module = "#!/bin/sh\necho \"start $ETL_STEP $ETL_ATTEMPT\" >> ledger.txt\n\
                  i=1; while [ $i -le 30 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.1; done\n\
                  echo \"end $ETL_STEP $ETL_ATTEMPT\" >> ledger.txt\n";
    let mut env = Env::new(&[("m", module)], &[("s", &seq(&["m", "m"]))]);
    // A lease of 90 s: the outage (stop, the module's end, three failed
    // recordings, then PostgreSQL's crash recovery at start, which takes
    // longer the more databases the server holds) stays well inside it, so
    // nothing is taken over.
    let w = env.spawn_worker(&["--lease", "90"]);
    let run = env.start("s");
    env.wait_exec(run, MINUTE, |e| e["state"] == "running" && e["pid"].is_number());

    let restore = services::postgres_down();
    let down = Instant::now();
    // The module ends while the database is down; the worker keeps trying.
    wait_until("the module to end", MINUTE, || {
        let ledger = env.read("ledger.txt");
        if ledger.contains("end 0 1") {
            Ok(())
        } else {
            Err(ledger)
        }
    });
    wait_until(
        &format!("the worker to retry recording the result {RETRIES} times"),
        MINUTE,
        || {
            let log = env.worker_log(w);
            match log.matches("could not record the step's result; retrying").count() {
                n if n >= RETRIES => Ok(()),
                n => Err(format!("{n} retries; log:\n{log}")),
            }
        },
    );
    eprintln!("database down for {:?}", down.elapsed());
    let start = std::time::Instant::now();
    drop(restore);
    eprintln!("started again in {:?}", start.elapsed());

    let v = env.wait_final(run, 2 * MINUTE);
    assert_eq!(v["state"], "succeeded", "{v:#}");
    let execs = v["executions"].as_array().unwrap();
    assert_eq!(execs.len(), 2, "one execution per step, none re-run: {v:#}");
    for (step, e) in execs.iter().enumerate() {
        assert_eq!(e["step"], step);
        assert_eq!(e["attempt"], 1, "{v:#}");
        assert_eq!(e["state"], "succeeded", "{v:#}");
    }
    assert_eq!(
        env.read("ledger.txt"),
        "start 0 1\nend 0 1\nstart 1 1\nend 1 1\n",
        "each step ran exactly once"
    );
    // No line printed during the outage was lost.
    let want: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    wait_until("step 1's whole log", MINUTE, || {
        let out = env.run(&["logs", &run.to_string(), "--step", "1"]);
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        if got == want { Ok(()) } else { Err(got) }
    });
}
