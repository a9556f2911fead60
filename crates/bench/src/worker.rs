//! A real `scheduler worker` process for a benchmark, as users run it: its
//! own process, with its keeper beside it, on a throw-away queue, its log in
//! a file. What a benchmark measures of it (its process tree's CPU, its peak
//! memory) is then the worker's and nobody else's.
//!
//! It never outlives the benchmark: [`WorkerProcess::stop`] sends SIGTERM
//! and waits for the drain; dropped without that (an error on the way), the
//! child is killed outright (`kill_on_drop`), and its keeper, seeing its pipe
//! close, stops whatever module was still running. `scheduler bench` drops
//! it so on SIGINT, SIGTERM and SIGHUP too (`commands/bench.rs`): before,
//! a bench killed by a signal left its worker consuming its queue. A
//! bench killed outright (SIGKILL) cannot: its worker runs with
//! `--stop-with-parent`, so the kernel sends it SIGTERM and it drains.

use crate::machine;
use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How to start one.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The `scheduler` program (`std::env::current_exe()` for the CLI).
    pub program: PathBuf,
    /// The project directory: the worker runs there and reads its modules.
    pub project: PathBuf,
    /// Arguments after `worker` (`-c N`, `--queue Q`, ...).
    pub args: Vec<OsString>,
    /// The mode's environment (`DATABASE_URL`, `AMQP_URL`); every other
    /// `SCHEDULER_*` variable of ours is left out, so the user's settings
    /// for their own workers do not change the benchmark's.
    pub env: Vec<(OsString, OsString)>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

/// The peak resident sets, KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeakRss {
    pub worker_kib: u64,
    /// 0 when the worker runs without a keeper.
    pub keeper_kib: u64,
    /// The two processes' proportional set sizes (`Pss`) when read: the
    /// keeper runs the worker's binary, so their resident sets share most
    /// of the keeper's pages, which RSS counts twice and PSS once.
    pub pss_kib: u64,
}

impl PeakRss {
    pub fn total_kib(&self) -> u64 {
        self.worker_kib + self.keeper_kib
    }
}

/// A running `scheduler worker`.
#[derive(Debug)]
pub struct WorkerProcess {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
}

impl WorkerProcess {
    /// Starts it and returns once it consumes ("worker started" in its log,
    /// within a minute); an error names the log.
    pub async fn start(spec: &WorkerSpec) -> anyhow::Result<WorkerProcess> {
        let log = std::fs::File::create(&spec.log).with_context(|| format!("creating {}", spec.log.display()))?;
        let mut cmd = tokio::process::Command::new(&spec.program);
        for (key, _) in std::env::vars_os() {
            if key
                .to_str()
                .is_some_and(|k| k.starts_with("SCHEDULER_") || ["DATABASE_URL", "AMQP_URL", "RUST_LOG"].contains(&k))
            {
                cmd.env_remove(key);
            }
        }
        // A bench killed outright (SIGKILL) runs no drop: the kernel tells
        // its worker with SIGTERM, and the worker drains and stops.
        cmd.arg("worker")
            .args(["--stop-with-parent".to_string(), std::process::id().to_string()])
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("SCHEDULER_PROJECT", &spec.project)
            // The level users run it at; the ready line is at info.
            .env("RUST_LOG", "info")
            .current_dir(&spec.project)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd.spawn().context("starting the bench's worker")?;
        let pid = child.id().context("the bench's worker has no pid")?;
        let mut worker = WorkerProcess {
            child,
            pid,
            log: spec.log.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::fs::read_to_string(&worker.log)?.contains("worker started") {
                return Ok(worker);
            }
            if let Some(status) = worker.child.try_wait()? {
                bail!(
                    "the bench's worker ended ({status}) before it started; see {}",
                    worker.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the bench's worker did not start within a minute; see {}",
                    worker.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The keeper: the worker's child whose first argument is `keeper`.
    pub fn keeper_pid(&self) -> Option<u32> {
        machine::processes()
            .into_iter()
            .filter(|p| p.ppid == self.pid)
            .map(|p| p.pid)
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .ok()
                    .is_some_and(|c| c.split(|b| *b == 0).nth(1) == Some(b"keeper"))
            })
    }

    /// The worker's and its keeper's peak resident sets so far.
    pub fn peak_rss(&self) -> anyhow::Result<PeakRss> {
        let keeper = self.keeper_pid();
        Ok(PeakRss {
            worker_kib: machine::peak_rss_kib(self.pid)?,
            keeper_kib: match keeper {
                Some(k) => machine::peak_rss_kib(k)?,
                None => 0,
            },
            pss_kib: machine::pss_kib(self.pid)? + keeper.map(machine::pss_kib).transpose()?.unwrap_or(0),
        })
    }

    /// SIGTERM (the worker drains and exits), then waits for it, 30 s at
    /// most before it is killed, and for its keeper, which outlives it
    /// briefly: it reports the worker's end to the store (re-creating an
    /// embedded store's directory if it was removed meanwhile).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid).context("the worker's pid")?;
        let keeper = self.keeper_pid();
        kill(Pid::from_raw(pid), Signal::SIGTERM).ok();
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("the bench's worker ended with {status}; see {}", self.log.display());
                }
                if let Some(keeper) = keeper {
                    let deadline = Instant::now() + Duration::from_secs(15);
                    while alive(keeper) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await.ok();
                bail!(
                    "the bench's worker did not stop within 30 s of SIGTERM and was killed; see {}",
                    self.log.display()
                )
            }
        }
    }
}

/// Whether `pid` is a process that has not ended (a zombie has).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').and_then(|i| s.get(i + 2..i + 3)).map(|state| state != "Z"))
        .unwrap_or(false)
}
