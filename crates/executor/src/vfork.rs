//! Starting a module with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`:
//! what `posix_spawn` does, without the costs that are glibc's and tokio's
//! rather than the kernel's.
//!
//! glibc's `posix_spawn` (which `std` and tokio use) asks the kernel about
//! each of the 64 signals in the child before it execs (about 65 system
//! calls), maps and unmaps a stack for the child at every spawn (the unmap
//! flushes the TLB of every CPU running a worker thread), and tokio then
//! opens a pidfd of its own beside ours, registers it, and once it has a
//! child it did not reap (ours: we reap with `wait4`) installs a `SIGCHLD`
//! handler, so that every module's exit interrupts a worker thread. Here: the
//! child resets only the signals this process handles, and `SIGPIPE`
//! (rescanned at most once a second), runs on a stack each thread keeps,
//! `/dev/null` is opened once, and the pidfd comes from `clone` itself.
//! Measured (2026-11-30, embedded bench, `-c 2`, three rounds alternating):
//! the worker's own CPU per module execution 0.744-0.754 -> 0.698-0.728 ms.
//! `spawn.rs` falls back to tokio where the kernel refuses `CLONE_PIDFD`, or
//! where `SCHEDULER_SPAWN=posix_spawn` asks for it.
//!
//! The child shares the parent's memory until it execs, so it makes system
//! calls only (no allocation, no lock), with every signal blocked until just
//! before `execve`: a handler of this process must not run on the parent's
//! memory. A handler installed in the second before a spawn is not yet in
//! the rescanned set; a signal sent to the new pid in the microseconds
//! between its unblock and its exec would then run that handler in the
//! child: that is the one thing glibc's per-signal loop guards against and
//! this does not.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A started child: its pid, a pidfd for it, and the read ends of its
/// stdout and stderr pipes (non-blocking, close-on-exec).
pub(crate) struct Spawned {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

/// What the child needs, prepared by the parent (the child may not allocate).
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    report: RawFd,
    reset: *const libc::c_int,
    reset_len: usize,
}

const STACK_BYTES: usize = 64 * 1024;

thread_local! {
    /// The child's stack: the calling thread is suspended until the child
    /// execs or exits (`CLONE_VFORK`), so one per thread is enough.
    static STACK: RefCell<Vec<u128>> = RefCell::new(vec![0u128; STACK_BYTES / 16]);
}

/// Starts `path` with `argv` and `envp` in `cwd`, in a new process group,
/// stdin on `/dev/null`, stdout and stderr on new pipes. `Ok(None)`: the
/// kernel has no `CLONE_PIDFD` (before 5.2) or a seccomp filter refuses it;
/// use another way.
pub(crate) fn spawn(path: &Path, argv: &[&OsStr], env: &[(String, String)], cwd: &Path) -> io::Result<Option<Spawned>> {
    let path = cstring(path.as_os_str())?;
    let argv: Vec<CString> = argv.iter().map(|a| cstring(a)).collect::<io::Result<_>>()?;
    let envp = environment(env)?;
    let cwd = cstring(cwd.as_os_str())?;
    let argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let stdin = dev_null()?;
    let (out_r, out_w) = pipe(0)?;
    let (err_r, err_w) = pipe(0)?;
    // Non-blocking: see `read_report`.
    let (report_r, report_w) = pipe(libc::O_NONBLOCK)?;
    let reset = handled_signals();
    let args = ChildArgs {
        path: path.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        cwd: cwd.as_ptr(),
        stdin,
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        report: report_w.as_raw_fd(),
        reset: reset.as_ptr(),
        reset_len: reset.len(),
    };
    let mut pidfd: libc::c_int = -1;
    let pid = STACK.with(|stack| {
        let mut stack = stack.borrow_mut();
        // SAFETY: the stack grows down from its end, 16-byte aligned (u128).
        let top = unsafe { stack.as_mut_ptr().add(stack.len()) } as *mut libc::c_void;
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: plain calls on local sigsets. Every signal is blocked
        // around the clone so that no handler runs in the child.
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        // SAFETY: `child` makes only system calls on what `args` points to,
        // which outlives the call: with CLONE_VFORK this thread resumes only
        // once the child has exec'd or exited.
        let pid = unsafe {
            libc::clone(
                child,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                &args as *const ChildArgs as *mut libc::c_void,
                &mut pidfd as *mut libc::c_int,
            )
        };
        let e = io::Error::last_os_error();
        // SAFETY: restores this thread's mask.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        if pid < 0 { Err(e) } else { Ok(pid) }
    });
    drop((out_w, err_w, report_w));
    let pid = match pid {
        Ok(pid) => pid,
        // No CLONE_PIDFD (Linux before 5.2), or a seccomp filter refusing it.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EPERM)) => return Ok(None),
        Err(e) => return Err(e),
    };
    // SAFETY: clone returned a new descriptor there (CLONE_PIDFD).
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    if let Some((stage, errno)) = read_report(&report_r) {
        let mut status = 0;
        // SAFETY: reaps the child, which has exited (a step before or at its exec failed).
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let e = io::Error::from_raw_os_error(errno);
        return Err(match stage {
            Stage::Exec => e,
            other => io::Error::new(e.kind(), format!("could not {} for the module: {e}", other.what())),
        });
    }
    for fd in [&out_r, &err_r] {
        // SAFETY: the read ends are ours; they become non-blocking for tokio.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    }
    Ok(Some(Spawned {
        pid: pid as u32,
        pidfd,
        stdout: out_r,
        stderr: err_r,
    }))
}

/// The step of the child that failed, reported to the parent with its errno.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Stage {
    Group = 1,
    Stdio = 2,
    Cwd = 3,
    Exec = 4,
}

impl Stage {
    fn what(self) -> &'static str {
        match self {
            Stage::Group => "create a process group",
            Stage::Stdio => "set up stdin, stdout and stderr",
            Stage::Cwd => "enter the working directory",
            Stage::Exec => "execute the program",
        }
    }
}

/// What the child wrote before it exited, if it failed: `None` when the
/// pipe is empty, which means the child went past the point where `execve`
/// can no longer return.
///
/// The read does not wait. This thread resumes (`CLONE_VFORK`) either when
/// the child exits, having written its report first, or when its `execve`
/// replaces its memory, after which `execve` cannot fail back to the child.
/// The kernel wakes this thread there, before the child closes its
/// close-on-exec descriptors, so a blocking read found the pipe still open
/// and slept until it closed: a sleep and a wake-up of this runtime thread
/// at 40-50 % of the spawns (`sched_switch` trace, embedded bench, `-c 16`).
/// A concurrent spawn's child, forked from another thread before this
/// pipe's write end was closed, holds it open too, until its own exec.
fn read_report(report: &OwnedFd) -> Option<(Stage, i32)> {
    let mut buf = [0u8; 5];
    let n = loop {
        // SAFETY: reads into a local buffer.
        let n = unsafe { libc::read(report.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break n;
        }
    };
    // `EAGAIN`: empty and still open (the child is in its exec): no report.
    if n != 5 {
        return None;
    }
    let stage = match buf[0] {
        1 => Stage::Group,
        2 => Stage::Stdio,
        3 => Stage::Cwd,
        _ => Stage::Exec,
    };
    Some((stage, i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]])))
}

/// The child, until `execve`: system calls only.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive while it is suspended.
    let a = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: system calls on descriptors and strings the parent prepared.
    unsafe {
        let fail = |stage: Stage| -> ! {
            let e = (*libc::__errno_location()).to_ne_bytes();
            let report = [stage as u8, e[0], e[1], e[2], e[3]];
            libc::write(a.report, report.as_ptr().cast(), report.len());
            libc::_exit(127)
        };
        if libc::setpgid(0, 0) != 0 {
            fail(Stage::Group);
        }
        if libc::dup2(a.stdin, 0) < 0 || libc::dup2(a.stdout, 1) < 0 || libc::dup2(a.stderr, 2) < 0 {
            fail(Stage::Stdio);
        }
        if libc::chdir(a.cwd) != 0 {
            fail(Stage::Cwd);
        }
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for i in 0..a.reset_len {
            libc::sigaction(*a.reset.add(i), &dfl, std::ptr::null_mut());
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(a.path, a.argv, a.envp);
        fail(Stage::Exec)
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        let msg = format!("{:?} contains a NUL byte; remove it from the module's command", s);
        io::Error::new(io::ErrorKind::InvalidInput, msg)
    })
}

/// This process's environment with `env` set over it.
fn environment(env: &[(String, String)]) -> io::Result<Vec<CString>> {
    let mut out = Vec::with_capacity(64);
    for (k, v) in std::env::vars_os() {
        if env.iter().any(|(ek, _)| OsStr::new(ek) == k) {
            continue;
        }
        let mut pair = k.into_vec();
        pair.push(b'=');
        pair.extend_from_slice(v.as_bytes());
        // The environment comes from C strings: it holds no NUL.
        if let Ok(pair) = CString::new(pair) {
            out.push(pair);
        }
    }
    // The last value of a name wins, as with `Command::env`.
    for (i, (k, v)) in env.iter().enumerate() {
        if env[i + 1..].iter().any(|(later, _)| later == k) {
            continue;
        }
        let pair = CString::new(format!("{k}={v}")).map_err(|_| {
            let msg = format!("environment variable {k} contains a NUL byte; remove it from the module's env");
            io::Error::new(io::ErrorKind::InvalidInput, msg)
        })?;
        out.push(pair);
    }
    Ok(out)
}

/// A pipe, both ends close-on-exec, with `flags` (`O_NONBLOCK`) on both.
fn pipe(flags: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just returned to us.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(r)?, above_stdio(w)?))
}

/// `fd` itself, or a close-on-exec copy numbered 3 or above when it is 0, 1
/// or 2 (this process was started with one of those closed): the child's
/// `dup2` onto 0, 1 and 2 must not overwrite one of its own sources.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicates a descriptor we own; the copy is new and ours.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// `/dev/null`, opened once (close-on-exec; each child gets a copy as stdin).
fn dev_null() -> io::Result<RawFd> {
    static NULL: std::sync::OnceLock<Result<OwnedFd, i32>> = std::sync::OnceLock::new();
    match NULL.get_or_init(|| {
        std::fs::File::open("/dev/null")
            .map(OwnedFd::from)
            .and_then(above_stdio)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }) {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(e) => Err(io::Error::from_raw_os_error(*e)),
    }
}

/// The signals the child sets back to their default before it execs: those
/// this process handles, and `SIGPIPE`, which Rust's runtime ignores. As
/// with `posix_spawn` and `std`, another ignored signal stays ignored
/// (`nohup`), and `execve` resets nothing else: a handled signal becomes
/// default at exec anyway, but must not run its handler in the child before.
/// Rescanned at most once a second.
fn handled_signals() -> Vec<libc::c_int> {
    static CACHE: Mutex<Option<(Instant, Vec<libc::c_int>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, set)) = &*cache
        && at.elapsed() < Duration::from_secs(1)
    {
        return set.clone();
    }
    let mut set = Vec::new();
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a query (no new action) into a local.
        let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
        let queried = unsafe { libc::sigaction(sig, std::ptr::null(), &mut current) } == 0;
        let handled = queried && current.sa_sigaction != libc::SIG_DFL && current.sa_sigaction != libc::SIG_IGN;
        if handled || sig == libc::SIGPIPE {
            set.push(sig);
        }
    }
    *cache = Some((Instant::now(), set.clone()));
    set
}
