//! Signalling, reaping and killing the process group of one module.
//!
//! The group id is the leader's pid. The kernel does not reuse a pid while a group with that id has
//! members, so signalling the group is safe for as long as it is not empty. Reaping with
//! `waitpid(-pgid)` must wait until tokio has reaped the leader, or it would steal its exit status:
//! every function here that reaps says so.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::time::{Instant, sleep};

const POLL: Duration = Duration::from_millis(50);
/// After SIGKILL, how long to wait for the group to empty before giving up (a process stuck in
/// uninterruptible sleep dies only when its I/O returns).
const AFTER_KILL: Duration = Duration::from_secs(2);

/// Sends `signal` to every member of the group; an empty group is not an error.
pub(crate) fn signal(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid = pgid.as_raw(), %signal, error = %e, "could not signal process group"),
    }
}

/// Whether any process (zombies included) still has this group id.
pub(crate) fn is_alive(pgid: Pid) -> bool {
    // EPERM means a member exists that we may not signal (it changed its uid): still a member.
    !matches!(killpg(pgid, None), Err(Errno::ESRCH))
}

/// Reaps the members of the group that are our children and have exited: orphans of the module
/// reparented to us because we are a subreaper. Only call once the leader has been reaped.
pub(crate) fn reap(pgid: Pid) {
    loop {
        match waitpid(Pid::from_raw(-pgid.as_raw()), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Number of live (not zombie) members of the group, from `/proc`; `None` if `/proc` is unreadable.
pub(crate) fn count_live_members(pgid: Pid) -> Option<usize> {
    let entries = std::fs::read_dir("/proc").ok()?;
    let count = entries
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // Fields after the command name, which is in parentheses and may contain anything.
            let mut fields = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest)
                .unwrap_or("")
                .split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|f| f.parse::<i32>().ok());
            pgrp == Some(pgid.as_raw()) && state != Some("Z")
        })
        .count();
    Some(count)
}

/// SIGTERM to the group, then up to `grace` for it to empty, then SIGKILL. Only call once the leader
/// has been reaped. Returns when the group is empty or SIGKILL did not empty it in time.
pub(crate) async fn terminate(pgid: Pid, grace: Duration) {
    signal(pgid, Signal::SIGTERM);
    finish(pgid, Instant::now() + grace).await;
}

/// Waits until `deadline` for an already signalled group to empty, reaping as it goes, then sends
/// SIGKILL and waits a little more. Only call once the leader has been reaped.
pub(crate) async fn finish(pgid: Pid, deadline: Instant) {
    if wait_empty(pgid, deadline).await {
        return;
    }
    signal(pgid, Signal::SIGKILL);
    if !wait_empty(pgid, Instant::now() + AFTER_KILL).await {
        tracing::warn!(
            pgid = pgid.as_raw(),
            "process group still has members after SIGKILL; giving up"
        );
    }
}

async fn wait_empty(pgid: Pid, deadline: Instant) -> bool {
    loop {
        reap(pgid);
        if !is_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL.min(deadline - Instant::now())).await;
    }
}

/// Kills the group with SIGKILL when dropped while armed: a `Running`, or a `wait()` future, that is
/// dropped before the execution was cleaned up must not leave the module running unobserved.
pub(crate) struct KillOnDrop {
    pub(crate) pgid: Pid,
    pub(crate) armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.armed {
            tracing::warn!(
                pgid = self.pgid.as_raw(),
                "module abandoned before it ended; killing its process group"
            );
            signal(self.pgid, Signal::SIGKILL);
        }
    }
}
