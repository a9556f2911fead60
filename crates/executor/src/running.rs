//! The life cycle of one started module: wait for it, stop it on timeout or cancel, clean up after it.
//!
//! Order matters. The leader is reaped first, by `wait4` on its pidfd so that the kernel's accounting
//! of it is kept (`leader.rs`; reaping the group before that would steal its exit status). Then the readers get a short time to reach EOF: a module's background child may hold
//! the pipes open forever (tokio #2363), so EOF is never awaited without a bound. Then whatever is left
//! in the group is terminated and reported, and the readers get a last bounded chance to drain.

use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::group::{self, KillOnDrop};
use crate::leader::{self, Leader, Usage};
use crate::output::Readers;
use crate::{Ending, Outcome, Spec};

/// How long the pipes may stay open after the leader exited before the group is assumed to hold them.
const EOF_AFTER_EXIT: Duration = Duration::from_millis(500);
/// How long the pipes may take to close once the group is gone, before processes outside it that
/// carry the module's environment are looked for.
const EOF_AFTER_GROUP: Duration = Duration::from_millis(100);
/// How long the pipes may stay open after the group was killed (a process outside the group may
/// still hold them); what was read until then is kept.
const EOF_AFTER_KILL: Duration = Duration::from_secs(1);

/// A module that was started and not yet waited for. Dropping it kills its process group.
pub struct Running {
    /// tokio's handle, when the module was started by tokio (no `CLONE_PIDFD`).
    child: Option<Child>,
    /// The leader's pid, which is also the process group id.
    pid: u32,
    started: Instant,
    timeout: Option<Duration>,
    kill_grace: Duration,
    label: String,
    /// The `NAME=value` pairs that identify the execution (see [`marker`]):
    /// processes that left its group (`setsid`) still carry them.
    marker: Vec<String>,
    readers: Readers,
    /// Disarmed only once the group is known to be empty.
    guard: KillOnDrop,
    leader: Leader,
}

impl Running {
    pub(crate) fn new(child: Option<Child>, leader: Leader, started: Instant, spec: &Spec, readers: Readers) -> Self {
        let pid = leader.pid();
        let pgid = Pid::from_raw(pid as i32);
        Running {
            child,
            pid,
            started,
            timeout: spec.timeout,
            kill_grace: spec.kill_grace,
            label: spec.log_label.clone(),
            marker: marker(&spec.env),
            readers,
            guard: KillOnDrop { pgid, armed: true },
            leader,
        }
    }

    /// The module's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the module was started with `clone` (`vfork.rs`) rather than
    /// tokio's `posix_spawn` (`SCHEDULER_SPAWN=posix_spawn`, or a kernel
    /// without `CLONE_PIDFD`).
    pub fn started_with_clone(&self) -> bool {
        self.child.is_none()
    }

    /// Waits until the module ends, was timed out or canceled, and its process group is empty.
    ///
    /// Dropping the returned future before it completes kills the process group with SIGKILL.
    pub async fn wait(mut self, cancel: CancellationToken) -> Outcome {
        let pgid = self.guard.pgid;
        let deadline = self.timeout.map(|t| self.started + t);
        let decided = tokio::select! {
            status = self.leader.wait(self.child.as_mut()) => Ok(status),
            _ = sleep_until(deadline.unwrap_or(self.started)), if deadline.is_some() => Err(Ending::TimedOut),
            _ = cancel.cancelled() => Err(Ending::Canceled),
        };
        let (status, ending, duration) = match decided {
            Ok(status) => (status, None, self.started.elapsed()),
            Err(ending) => {
                let duration = match ending {
                    Ending::TimedOut => self.timeout.unwrap_or_default(),
                    _ => self.started.elapsed(),
                };
                tracing::info!(label = %self.label, pid = self.pid, ?ending, "stopping module: killing its group");
                (self.kill(pgid).await, Some(ending), duration)
            }
        };
        let usage = status.as_ref().ok().and_then(|(_, u)| *u);
        let (ending, exit_code, signal) = classify(status.map(|(s, _)| s), ending, pgid);
        // A SIGKILL we did not send: the OOM killer's, if the cgroup counted one meanwhile.
        let oom_killed = ending == Ending::Signaled(Signal::SIGKILL as i32) && leader::oom_killed_since_last_look();

        let leftover = self.clean_up(pgid).await;
        self.guard.armed = false;
        let (stdout, stderr) = self.readers.finish().await;
        Outcome {
            ending,
            exit_code,
            signal,
            duration,
            stdout_tail: stdout.tail,
            stderr_tail: stderr.tail,
            stdout_bytes: stdout.bytes,
            stderr_bytes: stderr.bytes,
            leftover,
            usage,
            oom_killed,
        }
    }

    /// SIGTERM to the group, up to `kill_grace` for it to end, then SIGKILL. Returns the leader's status.
    async fn kill(&mut self, pgid: Pid) -> std::io::Result<(ExitStatus, Option<Usage>)> {
        group::signal(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + self.kill_grace;
        let status = tokio::select! {
            status = self.leader.wait(self.child.as_mut()) => status,
            _ = sleep_until(deadline) => {
                group::signal(pgid, Signal::SIGKILL);
                self.leader.wait(self.child.as_mut()).await
            }
        };
        // The leader is reaped now, so the rest of the group can be awaited (and reaped) too, within
        // the same grace period; members that ignored SIGTERM get SIGKILL.
        group::finish(pgid, deadline).await;
        status
    }

    /// After the leader was reaped: kills what is left in the group and bounds the wait for EOF.
    /// Returns the sentence for `Outcome::leftover`.
    async fn clean_up(&mut self, pgid: Pid) -> Option<String> {
        let eof = self.readers.wait_eof(EOF_AFTER_EXIT).await;
        group::reap(pgid);
        let mut leftover = if group::is_alive(pgid) {
            let what = match group::count_live_members(pgid) {
                Some(n) if n > 0 => format!("{n} background process(es)"),
                _ => "background process(es)".to_owned(),
            };
            tracing::warn!(label = %self.label, pid = self.pid, "module left {what} in its group; killing them");
            group::terminate(pgid, self.kill_grace).await;
            Some(format!("module left {what} in its process group; they were killed"))
        } else {
            None
        };
        if !eof && !self.readers.wait_eof(EOF_AFTER_GROUP).await {
            // Something outside the group holds the pipes: a process that
            // left it (`setsid`) but still carries the module's environment.
            let escaped = self.kill_escaped(pgid).await;
            if escaped > 0 {
                let note = format!("module left {escaped} process group(s) outside its own (setsid); they were killed");
                leftover = Some(match leftover {
                    Some(l) => format!("{l}; {note}"),
                    None => note,
                });
            }
        }
        if !eof && !self.readers.wait_eof(EOF_AFTER_KILL).await {
            tracing::warn!(
                label = %self.label,
                pid = self.pid,
                "module output still open after its process group ended (held by a process outside the group?); \
                 keeping what was read"
            );
        }
        leftover
    }

    /// Terminates the groups of processes outside the module's own group
    /// that carry its environment; returns how many groups there were.
    async fn kill_escaped(&self, own: Pid) -> usize {
        // Without a marker every process would match.
        if self.marker.is_empty() {
            return 0;
        }
        let groups: Vec<i32> = crate::orphans::groups_with_env(&self.marker)
            .into_iter()
            .filter(|g| *g != own.as_raw())
            .collect();
        for g in &groups {
            tracing::warn!(label = %self.label, pgid = g, "module left a process outside its group holding its output; killing its group");
            group::terminate(Pid::from_raw(*g), self.kill_grace).await;
        }
        groups.len()
    }
}

/// Turns the leader's wait status into the outcome's ending, exit code and signal.
fn classify(
    status: std::io::Result<ExitStatus>,
    ending: Option<Ending>,
    pgid: Pid,
) -> (Ending, Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => {
            let (code, signal) = (status.code(), status.signal());
            let ending = ending.unwrap_or(match (code, signal) {
                (Some(code), _) => Ending::Exited(code),
                (None, Some(signal)) => Ending::Signaled(signal),
                // `wait` reports only terminated processes, which have one or the other.
                (None, None) => Ending::Exited(-1),
            });
            (ending, code, signal)
        }
        Err(e) => {
            // Only possible if something else reaped our child (e.g. SIGCHLD set to SIG_IGN). The status
            // is lost; make sure the module is gone and report it as killed.
            tracing::error!(pid = pgid.as_raw(), error = %e, "could not wait for module; killing its process group");
            group::signal(pgid, Signal::SIGKILL);
            (ending.unwrap_or(Ending::Signaled(Signal::SIGKILL as i32)), None, None)
        }
    }
}

/// The pairs of `env` that identify one execution: those named `ETL_*` (the
/// run, step and attempt the worker sets), or all of them when none is. A
/// module's own variables (a `PATH` it sets) are left out, so a daemon that
/// changes one is still found.
fn marker(env: &[(String, String)]) -> Vec<String> {
    let etl: Vec<String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("ETL_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if etl.is_empty() {
        env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    } else {
        etl
    }
}
