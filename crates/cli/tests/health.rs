//! The worker's probe (`scheduler worker --health-file` + `scheduler
//! health`), through the real binary: healthy once it consumes; unhealthy
//! once its database or its broker has been out of reach for longer than
//! the budget, naming which; healthy again once it is back; no report
//! before start or after a stop. The outages are made by a loopback TCP
//! proxy between the worker and each service, which the test cuts (every
//! connection closed, new ones dropped at once) and restores, so the
//! machine's own PostgreSQL and RabbitMQ are never touched.

mod common;

use common::{AMQP_URL, Env, base_db_url, wait_until};
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

/// A TCP proxy on 127.0.0.1 to `target`, which the test can cut (connections
/// closed) or freeze (connections open, nothing forwarded: a network
/// partition), and restore.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn to(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (target, c, f, o) = (target.to_string(), cut.clone(), frozen.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let mut held = o.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), f.clone());
                pipe(server, client, f.clone());
            }
        });
        Proxy {
            port,
            cut,
            frozen,
            open,
        }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.frozen.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, holding what it read while `frozen`.
fn pipe(mut from: TcpStream, mut to: TcpStream, frozen: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            while frozen.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// `scheduler health` on `file` with a budget: (exit code, what it printed).
fn probe(env: &Env, file: &Path, max_age: &str) -> (i32, String) {
    let out = env.run(&["health", "--file", file.to_str().unwrap(), "--max-age", max_age]);
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.code().unwrap_or(-1), said)
}

fn wait_probe(env: &Env, file: &Path, max_age: &str, code: i32, needle: &str) -> String {
    wait_until(
        &format!("scheduler health to exit {code} saying {needle:?}"),
        MINUTE,
        || match probe(env, file, max_age) {
            (c, said) if c == code && said.contains(needle) => Ok(said),
            (c, said) => Err(format!("exit {c}: {said}")),
        },
    )
}

/// A worker with a 3 s lease (a heartbeat, and so a report, every second)
/// whose database and broker connections go through proxies.
fn worker_behind_proxies(env: &mut Env) -> (usize, Proxy, Proxy, std::path::PathBuf) {
    worker_behind_proxies_with(env, &[])
}

fn worker_behind_proxies_with(env: &mut Env, args: &[&str]) -> (usize, Proxy, Proxy, std::path::PathBuf) {
    let db = Proxy::to("127.0.0.1:5432");
    let amqp = Proxy::to("127.0.0.1:5672");
    let host = base_db_url();
    let db_url = format!(
        "{}/{}",
        host.replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", db.port), 1),
        env.db_name
    );
    let amqp_url = AMQP_URL.replacen("127.0.0.1:5672", &format!("127.0.0.1:{}", amqp.port), 1);
    let file = env.project.join("health.json");
    let mut all = vec!["--lease", "3", "--health-file", file.to_str().unwrap()];
    all.extend_from_slice(args);
    let w = env.spawn_worker_with_env(&all, &[("DATABASE_URL", &db_url), ("AMQP_URL", &amqp_url)]);
    (w, db, amqp, file)
}

#[test]
fn the_probe_fails_once_the_database_is_lost_past_the_budget_and_heals_when_it_is_back() {
    if !common::distributed_only("the database reached through a proxy that is cut") {
        return;
    }
    let mut env = Env::new(&[], &[]);
    let (_w, db, _amqp, file) = worker_behind_proxies(&mut env);
    let said = wait_probe(&env, &file, "4", 0, "healthy: database and broker reached");
    assert!(!said.contains("unreachable"), "{said}");
    db.cut();
    // Within the budget it is still alive (its connections may come back),
    // and the probe says what is wrong.
    wait_probe(&env, &file, "30", 0, "database unreachable for");
    let said = wait_probe(&env, &file, "4", 1, "unhealthy: database unreachable for");
    assert!(said.contains("past the 4 s budget"), "{said}");
    assert!(!said.contains("broker"), "only the database is lost: {said}");
    db.restore();
    wait_probe(&env, &file, "4", 0, "healthy");
}

#[test]
fn a_database_that_stops_answering_is_lost_its_modules_stop_after_a_lease_and_the_probe_says_so() {
    if !common::distributed_only("a database server that freezes behind a proxy") {
        return;
    }
    // A partition, not a refusal: the connections stay open and nothing
    // comes back. A heartbeat must give up rather than wait on it, or the
    // worker would never notice it lost its lease.
    let slow = "#!/bin/sh\necho $$ > module.pid\nexec sleep 120\n";
    let mut env = Env::new(&[("slow", slow)], &[("s", &common::seq(&["slow"]))]);
    let (_w, db, _amqp, file) = worker_behind_proxies_with(&mut env, &["--kill-grace", "1"]);
    wait_probe(&env, &file, "4", 0, "healthy");
    env.start("s");
    let pid: i32 = wait_until("the module to start", MINUTE, || {
        std::fs::read_to_string(env.project.join("module.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or("no module.pid yet")
    });
    db.freeze();
    wait_probe(&env, &file, "30", 0, "database unreachable for");
    wait_until(
        "the module to be stopped once the lease is lost",
        MINUTE,
        || match common::alive(pid) {
            true => Err(format!("module {pid} still running")),
            false => Ok(()),
        },
    );
    wait_probe(&env, &file, "4", 1, "unhealthy: database unreachable for");
    db.restore();
    wait_probe(&env, &file, "4", 0, "healthy");
}

#[test]
fn the_probe_fails_once_the_broker_is_lost_past_the_budget_and_heals_when_it_reconnects() {
    if !common::distributed_only("a RabbitMQ connection cut by a proxy") {
        return;
    }
    let mut env = Env::new(&[], &[]);
    let (w, _db, amqp, file) = worker_behind_proxies(&mut env);
    wait_probe(&env, &file, "4", 0, "healthy");
    amqp.cut();
    env.wait_for_log(w, "lost the connection to RabbitMQ", MINUTE);
    let said = wait_probe(&env, &file, "4", 1, "unhealthy: broker unreachable for");
    assert!(!said.contains("database"), "only the broker is lost: {said}");
    amqp.restore();
    env.wait_for_log(w, "reconnected to RabbitMQ", MINUTE);
    wait_probe(&env, &file, "4", 0, "healthy");
}

#[test]
fn there_is_no_report_before_the_worker_runs_nor_after_it_stopped_and_the_default_budget_is_two_leases() {
    let mut env = Env::new(&[], &[]);
    let file = env.project.join("health.json");
    std::fs::write(&file, b"{}").unwrap();
    let (code, said) = probe(&env, &file, "60");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("is not a worker's health report"), "{said}");
    let w = env.spawn_worker(&["--health-file", file.to_str().unwrap()]);
    wait_until("the default budget to find the worker healthy", MINUTE, || {
        let out = env.run(&["health", "--file", file.to_str().unwrap()]);
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stdout).to_string()),
        }
    });
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(report["lease_secs"], 30.0, "{report}");
    assert_eq!(report["pid"], env.worker_pid(w), "{report}");
    env.signal_worker(w, nix::sys::signal::Signal::SIGTERM);
    assert!(env.wait_worker(w, MINUTE).success());
    let (code, said) = probe(&env, &file, "60");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("no health report at"), "{said}");
    // Read from SCHEDULER_HEALTH_FILE too, as the worker's flag is.
    let out = env
        .cmd()
        .arg("health")
        .env("SCHEDULER_HEALTH_FILE", &file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
