//! The keeper: a small process each worker starts beside itself, so that a
//! worker killed with SIGKILL (or by the OOM killer) does not leave its
//! modules running. Nothing in the worker runs when it is SIGKILLed, and
//! `PR_SET_PDEATHSIG` would need a `pre_exec` hook (a full fork per module,
//! +1.5 ms a step) and fires when the spawning *thread* exits, not the
//! process. So the keeper watches instead:
//!
//! - The worker starts it with a pipe on its stdin and keeps the write end
//!   (close-on-exec, so no module inherits it). The keeper blocks reading.
//! - However the worker ends, the kernel closes the write end; the keeper
//!   reads end-of-file, and stops the process group of every process on the
//!   host whose environment carries the worker's marker (`ETL_WORKER_ID=<id>`,
//!   set on every module the worker spawns): SIGTERM, up to `grace`, SIGKILL.
//! - It sits in a process group of its own and blocks SIGTERM, SIGINT and
//!   SIGHUP, so a Ctrl-C at the terminal or `pkill scheduler` reaches the
//!   worker (which drains) but not the keeper, which outlives it by design.
//!
//! This happens within milliseconds of the worker's death, long before its
//! leases expire and recovery re-runs the steps on any host: two copies of
//! one step never run at once, even when recovery runs elsewhere. Its caller
//! (`scheduler keeper`) then tells the store the worker is gone, so that
//! recovery re-attempts its steps at once instead of waiting for the lease.
//!
//! A worker that is *frozen* (SIGSTOP, a debugger) rather than dead keeps
//! its pipe open. The keeper looks at its state in `/proc` twice a second;
//! once it has been stopped for `freeze_after` (half a lease: before its
//! leases can expire, since the last renewal was at most a third of a lease
//! before the freeze), the keeper stops its modules, so that the re-run that
//! recovery starts when the lease lapses never runs beside them.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::orphans::groups_with_env;

/// The environment variable that marks a module with the worker that runs it.
pub const WORKER_ENV: &str = "ETL_WORKER_ID";

/// What the keeper prints on stdout once it is ready.
const READY: &str = "READY";

/// How long the worker waits for that.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// How often the keeper looks again for the worker's modules while stopping them.
const POLL: Duration = Duration::from_millis(100);

/// A keeper seen from its worker. The worker holds it for its whole life;
/// dropping it closes the pipe, and the keeper then stops whatever modules
/// of the worker are still running and exits.
pub struct KeeperProcess {
    child: tokio::process::Child,
    _pipe: Option<tokio::process::ChildStdin>,
}

impl KeeperProcess {
    /// Starts `command` (e.g. `scheduler keeper`) with `--worker-id <id>
    /// --grace-ms <ms> --freeze-ms <ms>` appended and `env` added, in a process group of its own, stdin a
    /// pipe whose write end only this process holds, stderr shared (its log
    /// lines land in the worker's log). Returns once the keeper has said it
    /// is ready (its termination signals blocked).
    pub async fn start(
        command: &[OsString],
        worker_id: &str,
        grace: Duration,
        freeze_after: Duration,
        env: &[(OsString, OsString)],
    ) -> std::io::Result<Self> {
        let Some((program, args)) = command.split_first() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty keeper command",
            ));
        };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .arg("--worker-id")
            .arg(worker_id)
            .arg("--grace-ms")
            .arg(grace.as_millis().to_string())
            .arg("--freeze-ms")
            .arg(freeze_after.as_millis().to_string())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false)
            .spawn()?;
        let pipe = child.stdin.take();
        let mut ready = child.stdout.take().map(BufReader::new);
        // The keeper says READY once its termination signals are blocked:
        // until then a `pkill` would kill it, and the worker would believe
        // it protected.
        let mut line = String::new();
        let said = match ready.as_mut() {
            Some(out) => tokio::time::timeout(READY_WITHIN, out.read_line(&mut line)).await,
            None => Ok(Ok(0)),
        };
        match said {
            Ok(Ok(_)) if line.trim_end() == READY => Ok(KeeperProcess { child, _pipe: pipe }),
            outcome => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(std::io::Error::other(format!(
                    "the keeper did not report ready within {READY_WITHIN:?} (said {line:?}, {outcome:?})"
                )))
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resolves when the keeper process ends (it should not, while the worker lives).
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }
}

/// The body of the keeper process: waits until the worker is gone (end of
/// file on stdin), then stops its modules. Returns how many process groups
/// it stopped. Blocks SIGTERM, SIGINT and SIGHUP for the whole process:
/// call it from a single-threaded program. While it waits, a worker found
/// stopped (SIGSTOP) for `freeze_after` has its modules stopped too.
pub fn keep(worker_id: &str, grace: Duration, freeze_after: Duration) -> usize {
    if let Err(e) = termination_signals().thread_block() {
        tracing::warn!(error = %e, "keeper: could not block termination signals");
    }
    // Tell the worker; then stdout is done with (closed, so that the
    // worker's reader ends).
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{READY}").and_then(|_| out.flush());
    }
    let worker = std::os::unix::process::parent_id();
    let (gone_tx, gone) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        wait_for_end_of_file();
        let _ = gone_tx.send(());
    });
    let mut frozen_since: Option<Instant> = None;
    let mut handled = false;
    let mut stopped = 0;
    loop {
        match gone.recv_timeout(FREEZE_LOOK) {
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if !is_stopped(worker) {
            (frozen_since, handled) = (None, false);
            continue;
        }
        let since = *frozen_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= freeze_after && !handled {
            tracing::warn!(
                worker_pid = worker,
                frozen = ?since.elapsed(),
                "keeper: the worker is frozen (stopped) and its leases will lapse: stopping its modules so a re-run never runs beside them"
            );
            stopped += stop_modules_of(worker_id, grace);
            handled = true;
        }
    }
    stopped + stop_modules_of(worker_id, grace)
}

/// How often the keeper looks at whether its worker is frozen.
const FREEZE_LOOK: Duration = Duration::from_millis(500);

/// Whether process `pid` is stopped (`T`: SIGSTOP; `t`: stopped by a
/// tracer), from `/proc/<pid>/stat`.
fn is_stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may
    // itself hold spaces or parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| matches!(state, 'T' | 't'))
}

fn termination_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

fn wait_for_end_of_file() {
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Stops every process group on this host whose members carry
/// `ETL_WORKER_ID=<worker_id>`: SIGTERM at once, SIGKILL for what is still
/// there after `grace`. Looks again every 100 ms (a module the worker was
/// spawning as it died appears a moment later) until a look finds nothing
/// or `grace` is over. Returns how many groups it stopped.
pub fn stop_modules_of(worker_id: &str, grace: Duration) -> usize {
    let wanted = [format!("{WORKER_ENV}={worker_id}")];
    let began = Instant::now();
    let mut stopped: Vec<i32> = Vec::new();
    let mut empty_looks = 0;
    while began.elapsed() < grace && empty_looks < 3 {
        let groups = groups_with_env(&wanted);
        if groups.is_empty() {
            empty_looks += 1;
        } else {
            empty_looks = 0;
        }
        for pgid in groups {
            if !stopped.contains(&pgid) {
                tracing::warn!(
                    pgid,
                    worker_id,
                    "the worker is gone: stopping its module's process group"
                );
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
                stopped.push(pgid);
            }
        }
        std::thread::sleep(POLL);
    }
    // Whatever is left ignored SIGTERM or appeared late.
    for _ in 0..2 {
        for pgid in groups_with_env(&wanted) {
            tracing::warn!(pgid, worker_id, "module still running after the grace period: SIGKILL");
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            if !stopped.contains(&pgid) {
                stopped.push(pgid);
            }
        }
        std::thread::sleep(POLL);
    }
    stopped.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};

    fn module(marker: &str, script: &str) -> std::process::Child {
        std::process::Command::new("sh")
            .args(["-c", script])
            .env(WORKER_ENV, marker)
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn stops_only_the_groups_of_its_worker_and_kills_those_that_ignore_sigterm() {
        let mine = "keeper-test-mine";
        let polite = module(mine, "sleep 30");
        let stubborn = module(mine, "trap '' TERM; sleep 30 & wait; sleep 30");
        let other = module("keeper-test-other", "sleep 30");
        std::thread::sleep(Duration::from_millis(200));
        let began = Instant::now();
        assert_eq!(stop_modules_of(mine, Duration::from_millis(600)), 2);
        assert!(began.elapsed() < Duration::from_secs(3));
        for (mut child, signal) in [(polite, 15), (stubborn, 9)] {
            assert_eq!(child.wait().unwrap().signal(), Some(signal));
        }
        let mut other = other;
        assert!(
            other.try_wait().unwrap().is_none(),
            "another worker's module is left alone"
        );
        other.kill().unwrap();
        other.wait().unwrap();
        assert_eq!(stop_modules_of(mine, Duration::from_millis(300)), 0, "nothing left");
    }
}
