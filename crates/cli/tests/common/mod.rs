//! Test harness: each test gets its own PostgreSQL database and RabbitMQ
//! queue (unique names, queues with `x-expires`), its own project directory,
//! and drives the real `scheduler` binary, as a user would.
//!
//! `SCHEDULER_TEST_MODE=embedded` runs the same tests in the zero-server
//! mode: no URL is given to the binary, so it keeps its store and queue in
//! the project's `.scheduler/scheduler.db`, as a new user's would.
#![allow(dead_code)]

pub mod receiver;
pub mod services;
pub mod sql;

use scheduler_broker::{Broker, BrokerConfig, Transport};
use scheduler_core::Message;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The mode the tests drive the binary in.
pub fn embedded_mode() -> bool {
    match std::env::var("SCHEDULER_TEST_MODE").as_deref() {
        Ok("embedded") => true,
        Ok("distributed") | Err(_) => false,
        Ok(other) => panic!("SCHEDULER_TEST_MODE={other}: expected embedded or distributed"),
    }
}

/// True when the calling test only makes sense with PostgreSQL and
/// RabbitMQ (`why`, e.g. "RabbitMQ queue types"): in the embedded mode it
/// says so on stderr and the test returns early.
///
/// ```ignore
/// if !common::distributed_only("RabbitMQ queue types") { return; }
/// ```
#[must_use]
pub fn distributed_only(why: &str) -> bool {
    if embedded_mode() {
        eprintln!("skipped in the embedded mode: this test concerns {why}");
        return false;
    }
    true
}

pub fn base_db_url() -> String {
    std::env::var("TEST_DATABASE_BASE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub struct Env {
    pub db_name: String,
    pub queue: String,
    pub project: PathBuf,
    /// `SCHEDULER_QUEUE_TYPE` of every command (default: the binary's own).
    pub queue_type: Option<&'static str>,
    workers: Vec<Child>,
}

impl Env {
    /// A fresh environment whose project holds `modules` (name -> script
    /// body) and `sequences` (name -> JSON text).
    pub fn new(modules: &[(&str, &str)], sequences: &[(&str, &str)]) -> Env {
        let id = Uuid::now_v7().simple().to_string();
        let project = std::env::temp_dir().join(format!("scheduler-test-{id}"));
        std::fs::create_dir_all(project.join("etl_sequences")).unwrap();
        std::fs::create_dir_all(project.join("bin")).unwrap();
        let mut table = serde_json::Map::new();
        for (name, body) in modules {
            let path = project.join("bin").join(format!("{name}.sh"));
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            table.insert(name.to_string(), serde_json::json!({"cmd": format!("./bin/{name}.sh")}));
        }
        std::fs::write(project.join("modules.json"), Value::Object(table).to_string()).unwrap();
        for (name, text) in sequences {
            std::fs::write(project.join("etl_sequences").join(format!("{name}.json")), text).unwrap();
        }
        Env {
            db_name: format!("sched_t_{}", &id[id.len() - 16..]),
            queue: format!("t-{id}"),
            project,
            queue_type: None,
            workers: vec![],
        }
    }

    /// The same, with every command declaring queues of `queue_type`.
    pub fn with_queue_type(mut self, queue_type: &'static str) -> Env {
        self.queue_type = Some(queue_type);
        self
    }

    /// An environment over a copy of the repository's own project files.
    pub fn repo_project() -> Env {
        let env = Env::new(&[], &[]);
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for entry in ["modules", "etl_sequences", "conf"] {
            copy_dir(&repo.join(entry), &env.project.join(entry));
        }
        std::fs::copy(repo.join("modules.json"), env.project.join("modules.json")).unwrap();
        env
    }

    /// The store's URL: the PostgreSQL database, or in the embedded mode
    /// `sqlite://` and the project's store file.
    pub fn db_url(&self) -> String {
        if embedded_mode() {
            format!("sqlite://{}", self.store_path().display())
        } else {
            format!("{}/{}", base_db_url(), self.db_name)
        }
    }

    /// The embedded store's file (the default place, in the project).
    pub fn store_path(&self) -> PathBuf {
        self.project.join(".scheduler").join("scheduler.db")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_scheduler"));
        if embedded_mode() {
            c.env_remove("DATABASE_URL").env_remove("AMQP_URL");
        } else {
            c.env("DATABASE_URL", self.db_url()).env("AMQP_URL", AMQP_URL);
        }
        c.env("SCHEDULER_QUEUE", &self.queue)
            .env("SCHEDULER_PROJECT", &self.project)
            .env("SCHEDULER_QUEUE_EXPIRES_MS", "600000")
            .env("RUST_LOG", "info")
            .current_dir(&self.project)
            .stdin(Stdio::null());
        if let Some(t) = self.queue_type {
            c.env("SCHEDULER_QUEUE_TYPE", t);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Starts a worker process; its log goes to `<project>/worker-N.log`.
    pub fn spawn_worker(&mut self, args: &[&str]) -> usize {
        self.spawn_worker_with_env(args, &[])
    }

    /// Starts a worker process with extra environment variables.
    pub fn spawn_worker_with_env(&mut self, args: &[&str], vars: &[(&str, &str)]) -> usize {
        let n = self.workers.len();
        let log = std::fs::File::create(self.project.join(format!("worker-{n}.log"))).unwrap();
        let child = self
            .cmd()
            .envs(vars.iter().copied())
            .arg("worker")
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.workers.push(child);
        self.wait_for_log(n, "worker started", Duration::from_secs(30));
        n
    }

    pub fn worker_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.project.join(format!("worker-{n}.log"))).unwrap_or_default()
    }

    pub fn wait_for_log(&self, n: usize, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.worker_log(n).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "worker {n} never logged {needle:?}; log:\n{}",
                self.worker_log(n)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn worker_pid(&self, n: usize) -> i32 {
        self.workers[n].id() as i32
    }

    /// The pid of worker `n`'s keeper, from its log line.
    pub fn keeper_pid(&self, n: usize) -> i32 {
        self.wait_for_log(n, "keeper started", Duration::from_secs(10));
        let log = self.worker_log(n);
        let at = log.find("keeper_pid=").expect("keeper_pid in the log") + "keeper_pid=".len();
        log[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|d| d.parse().ok())
            .expect("a numeric keeper_pid")
    }

    pub fn signal_worker(&self, n: usize, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.worker_pid(n)), sig).unwrap();
    }

    /// Waits for worker `n` to exit; returns its exit status.
    pub fn wait_worker(&mut self, n: usize, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.workers[n].try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker {n} did not exit; log:\n{}",
                self.worker_log(n)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn start(&self, sequence: &str) -> Uuid {
        let out = self.run(&["start", sequence]);
        assert!(
            out.status.success(),
            "start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    pub fn show(&self, run: Uuid) -> Value {
        let out = self.run(&["show", &run.to_string(), "--json"]);
        assert!(
            out.status.success(),
            "show failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Polls `show` until the run is final or `timeout` passes.
    pub fn wait_final(&self, run: Uuid, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.show(run);
            if ["succeeded", "failed", "canceled", "skipped"].contains(&v["state"].as_str().unwrap()) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "run {run} not final after {timeout:?}: {v:#}\nworker 0 log:\n{}",
                self.worker_log(0)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until some execution of `run` matches `pred`.
    pub fn wait_exec(&self, run: Uuid, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.show(run);
            if let Some(e) = v["executions"].as_array().unwrap().iter().find(|e| pred(e)) {
                return e.clone();
            }
            assert!(Instant::now() < deadline, "no matching execution of {run}: {v:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.project.join(rel)).unwrap_or_default()
    }

    /// Publishes messages on this env's queue (duplicates, late ones).
    pub fn publish(&self, messages: &[Message]) {
        if embedded_mode() {
            return self.with_queue(|queue| async move {
                for m in messages {
                    queue.publish(&self.queue, m).await.unwrap();
                }
            });
        }
        with_broker(|broker| async move {
            for m in messages {
                broker.publish(&self.queue, m).await.unwrap();
            }
        });
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(w.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = w.wait();
        }
        let db = self.db_name.clone();
        let url = format!("{}/postgres", base_db_url());
        let rt = if embedded_mode() {
            None
        } else {
            tokio::runtime::Builder::new_current_thread().enable_all().build().ok()
        };
        if let Some(rt) = rt {
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                }
            });
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.project);
        } else {
            eprintln!("kept project dir for inspection: {}", self.project.display());
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A module that appends "<run> <step> <attempt> <pid>" to ledger.txt.
pub const LEDGER_MODULE: &str = "#!/bin/sh\necho \"$ETL_RUN_ID $ETL_STEP $ETL_ATTEMPT $$\" >> ledger.txt\n";

/// How often [`wait_until`] and [`assert_stays`] look again.
const POLL: Duration = Duration::from_millis(50);

/// Polls `probe` until it returns `Ok(value)`, and returns that value.
/// `Err(state)` means "not yet"; once `timeout` has passed the test fails,
/// naming `what` it waited for and showing the last state seen.
pub fn wait_until<T, S: std::fmt::Display>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, S>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(value) => return value,
            Err(state) => assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; last seen:\n{state}"
            ),
        }
        std::thread::sleep(POLL);
    }
}

/// Something that must NOT happen for a while: checks `probe` throughout
/// `window` (the last check starts once the window is over) and fails as
/// soon as it returns `Err(state)`, naming `what` should have held.
pub fn assert_stays<S: std::fmt::Display>(what: &str, window: Duration, mut probe: impl FnMut() -> Result<(), S>) {
    let start = Instant::now();
    loop {
        let checked_at = start.elapsed();
        if let Err(state) = probe() {
            panic!("expected {what} for {window:?}; it stopped after {checked_at:?}:\n{state}");
        }
        if checked_at >= window {
            return;
        }
        std::thread::sleep(POLL.min(window - checked_at));
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

pub fn seq(modules: &[&str]) -> String {
    let steps: Vec<Value> = modules
        .iter()
        .map(|m| serde_json::json!({"module_name": m, "input": "", "output": "", "conf": ""}))
        .collect();
    Value::Array(steps).to_string()
}

impl Env {
    /// Publishes raw bytes on this env's queue (malformed input).
    pub fn publish_raw(&self, payloads: &[&[u8]]) {
        if embedded_mode() {
            return self.with_queue(|queue| async move {
                for p in payloads {
                    queue.publish_raw(&self.queue, p).await.unwrap();
                }
            });
        }
        with_broker(|broker| async move {
            for p in payloads {
                broker.publish_raw(&self.queue, p, "garbage").await.unwrap();
            }
        });
    }

    /// Messages waiting in `queue` (ready, not delivered).
    pub fn queue_depth(&self, queue: &str) -> u32 {
        if embedded_mode() {
            return self.with_queue(|q| async move { q.queue_depth(queue).await.unwrap().0 });
        }
        with_broker(|broker| async move { broker.queue_depth(queue).await.unwrap().0 })
    }

    /// Messages dead-lettered from this env's queue: those waiting in
    /// `<queue>.dead` with RabbitMQ, the queue's dead ones in the embedded
    /// queue (which keeps them in place).
    pub fn dead_letters(&self) -> u32 {
        if embedded_mode() {
            return self.with_queue(|q| async move { q.dead_letters(&self.queue).await.unwrap().len() as u32 });
        }
        self.queue_depth(&format!("{}.dead", self.queue))
    }
}

impl Env {
    /// Runs `f` with the embedded queue of this env's store (embedded mode).
    pub fn with_queue<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(scheduler_tracker::EmbeddedQueue) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = scheduler_tracker::Embedded::open(&scheduler_tracker::EmbeddedConfig::new(self.store_path()))
                .await
                .unwrap();
            let queue = scheduler_tracker::EmbeddedQueue::new(&store);
            queue.declare(&self.queue).await.unwrap();
            let out = f(queue).await;
            store.close().await;
            out
        })
    }
}

/// Runs `f` with a fresh broker connection on a throw-away runtime.
fn with_broker<T, F, Fut>(f: F) -> T
where
    F: FnOnce(Broker) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Publishing and passive declares only: any queue type does.
        let config = BrokerConfig {
            queue_expires_ms: Some(600_000),
            ..BrokerConfig::new(AMQP_URL)
        };
        let broker = Broker::connect(&config, "test").await.unwrap();
        let out = f(broker.clone()).await;
        broker.close().await;
        out
    })
}
