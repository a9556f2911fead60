//! Waiting for the module's leader process with the kernel's accounting of
//! it: `wait4` reaps it and returns its resource usage (peak resident
//! memory, user and system CPU time, its waited-for children included),
//! which tokio's `Child::wait` throws away. The exit is awaited on a pidfd
//! (Linux 5.3+), so no thread blocks; without one, tokio's wait is used and
//! there is no accounting.
//!
//! Also here: whether the kernel's OOM killer struck the worker's cgroup
//! while the module ran (`memory.events`), to tell an OOM kill from another
//! SIGKILL.
//!
//! One of the two places with `unsafe` code (`vfork.rs` is the other): nix 0.31 wraps neither
//! `pidfd_open` nor `wait4`, so they are called through libc, each with its SAFETY note.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::process::Child;

/// What the kernel accounted for the leader and the children it waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Peak resident set size, KiB (the largest of the process and its
    /// waited-for descendants); `None` when it did not exceed the worker's
    /// own. A module is spawned with `vfork` semantics (`posix_spawn`): until
    /// it execs it runs in the worker's memory, and the kernel folds that
    /// memory's high-water mark into the module's `ru_maxrss` at exec. A
    /// figure at or below the worker's own peak is that, not the module's.
    pub max_rss_kib: Option<u64>,
    pub user_cpu: Duration,
    pub system_cpu: Duration,
}

pub(crate) struct Leader {
    pid: i32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// Started by `vfork.rs`, not tokio: reaping it is ours alone, even
    /// when the wait is abandoned (see `Drop`).
    ours: bool,
    reaped: bool,
}

impl Leader {
    /// A leader tokio started: a pidfd of our own is opened for it.
    pub(crate) fn new(pid: u32) -> Leader {
        note_oom_baseline();
        let pid = pid as i32;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = if fd >= 0 {
            // SAFETY: the descriptor was just returned to us and is owned by nothing else.
            let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            // SAFETY: an `OwnedFd` stays open, on the same description, until it is dropped with
            // the `AsyncFd`, and `as_raw_fd` always returns that descriptor.
            unsafe { AsyncFd::register(owned) }.ok()
        } else {
            None
        };
        Leader {
            pid,
            pidfd,
            ours: false,
            reaped: false,
        }
    }

    /// A leader `vfork.rs` started, with the pidfd `clone` gave.
    pub(crate) fn with_pidfd(pid: u32, pidfd: OwnedFd) -> io::Result<Leader> {
        note_oom_baseline();
        reap_abandoned();
        // SAFETY: as in `new`: the `OwnedFd` stays open with the `AsyncFd`.
        let pidfd = match unsafe { AsyncFd::register(pidfd) } {
            Ok(fd) => fd,
            Err(e) => {
                // Not waited for (the caller kills its group): reaped by a later spawn.
                UNREAPED.lock().unwrap_or_else(|p| p.into_inner()).push(pid as i32);
                return Err(e.into());
            }
        };
        Ok(Leader {
            pid: pid as i32,
            pidfd: Some(pidfd),
            ours: true,
            reaped: false,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the leader to exit and reaps it; with a pidfd, returns its
    /// accounting too. Cancel-safe: dropping the future loses nothing.
    pub(crate) async fn wait(&mut self, child: Option<&mut Child>) -> io::Result<(ExitStatus, Option<Usage>)> {
        let Some(fd) = &self.pidfd else {
            let child = child.expect("a leader without a pidfd was started by tokio");
            return child.wait().await.map(|s| (s, None));
        };
        loop {
            let mut guard = fd.readable().await?;
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid value; wait4 fills it in.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: plain syscall with pointers to locals.
            let reaped = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut usage) };
            match reaped {
                0 => guard.clear_ready(),
                -1 => {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                _ => {
                    self.reaped = true;
                    return Ok((ExitStatus::from_raw(status), Some(usage_of(&usage))));
                }
            }
        }
    }
}

/// Leaders of ours whose wait was abandoned before they exited (their group
/// was killed): reaped by the next spawns, so none stays a zombie for long.
static UNREAPED: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

impl Drop for Leader {
    fn drop(&mut self) {
        if self.ours && !self.reaped && !try_reap(self.pid) {
            UNREAPED.lock().unwrap_or_else(|p| p.into_inner()).push(self.pid);
        }
    }
}

/// Reaps the abandoned leaders that have exited since (`Drop`).
pub(crate) fn reap_abandoned() {
    let mut pending = UNREAPED.lock().unwrap_or_else(|p| p.into_inner());
    pending.retain(|pid| !try_reap(*pid));
}

/// Whether `pid` (a child of ours) is reaped now, or gone already.
fn try_reap(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: plain syscall with a pointer to a local.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) != 0 }
}

fn usage_of(u: &libc::rusage) -> Usage {
    let time =
        |t: libc::timeval| Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64);
    let rss = u.ru_maxrss.max(0) as u64;
    Usage {
        max_rss_kib: (rss > own_peak_kib()).then_some(rss),
        user_cpu: time(u.ru_utime),
        system_cpu: time(u.ru_stime),
    }
}

/// Whether the kernel's OOM killer struck this process's cgroup since the
/// last time this was asked (or since the first module started): asked only
/// when a module died of a SIGKILL nobody here sent, so a module that ends
/// normally costs nothing. Its cgroup's `memory.events` counts every process
/// of the cgroup the OOM killer killed (cgroup v2); `false` when unreadable.
pub(crate) fn oom_killed_since_last_look() -> bool {
    static SEEN: std::sync::Mutex<Option<u64>> = std::sync::Mutex::new(None);
    let Some(now) = oom_kills() else {
        return false;
    };
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let rose = seen.is_some_and(|before| now > before);
    *seen = Some(now);
    rose
}

/// Reads the baseline once, when the first module starts.
pub(crate) fn note_oom_baseline() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        oom_killed_since_last_look();
    });
}

/// The `oom_kill` count of this process's cgroup (v2), if it can be read.
fn oom_kills() -> Option<u64> {
    static EVENTS: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let path = EVENTS.get_or_init(|| {
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let dir = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
        Some(format!("/sys/fs/cgroup{}/memory.events", dir.trim()))
    });
    let events = std::fs::read_to_string(path.as_ref()?).ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// This process's own peak RSS (`VmHWM`), KiB; read at most once a second
/// (it only grows, and a slightly old figure errs towards reporting).
fn own_peak_kib() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PEAK: AtomicU64 = AtomicU64::new(0);
    static READ_AT_MS: AtomicU64 = AtomicU64::new(0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if now_ms.saturating_sub(READ_AT_MS.load(Ordering::Relaxed)) >= 1000 {
        READ_AT_MS.store(now_ms, Ordering::Relaxed);
        let hwm = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        });
        if let Some(hwm) = hwm {
            PEAK.fetch_max(hwm, Ordering::Relaxed);
        }
    }
    PEAK.load(Ordering::Relaxed)
}
