//! Resolving a module's program and starting it in a process group of its own.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Once;
use std::time::Duration;

use nix::errno::Errno;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::AsyncRead;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::group::KillOnDrop;
use crate::leader::Leader;
use crate::{Spec, output, running::Running};

/// Why a module could not be started. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{}", not_found_message(program, resolved))]
    NotFound { program: String, resolved: PathBuf },
    #[error(
        "command \"{program}\" ({}) is not executable; run chmod +x {}",
        resolved.display(),
        shell_quote(resolved)
    )]
    NotExecutable { program: String, resolved: PathBuf },
    /// Anything else: a bad working directory, a missing `#!` interpreter, too many open files...
    #[error("could not start command \"{program}\"")]
    Io {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("the command is empty; set the \"cmd\" of this module in modules.json")]
    EmptyArgv,
}

fn not_found_message(program: &str, resolved: &Path) -> String {
    let fix = "check the \"cmd\" of this module in modules.json";
    if program.contains('/') {
        format!(
            "command \"{program}\" not found (looked for {}); {fix}",
            resolved.display()
        )
    } else {
        format!("command \"{program}\" not found in any directory of $PATH; {fix}, or give its path")
    }
}

fn shell_quote(path: &Path) -> String {
    let s = path.to_string_lossy();
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@".contains(&b)) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Finds the file `program` names, the way `execvp` would, and checks that it can be executed.
///
/// With a `/` in it, `program` is a path: absolute as is, relative joined onto `cwd`. Without one it
/// is looked up in the directories of this process's `$PATH` (relative entries are relative to `cwd`).
pub fn resolve_program(program: &str, cwd: &Path) -> Result<PathBuf, SpawnError> {
    resolve_with_path(program, cwd, std::env::var_os("PATH").as_deref())
}

fn resolve_with_path(program: &str, cwd: &Path, path_var: Option<&OsStr>) -> Result<PathBuf, SpawnError> {
    if program.is_empty() {
        return Err(SpawnError::EmptyArgv);
    }
    if program.contains('/') {
        let resolved = cwd.join(program);
        return match check_executable(program, &resolved)? {
            Found::Executable => Ok(resolved),
            Found::NotExecutable => Err(SpawnError::NotExecutable {
                program: program.to_owned(),
                resolved,
            }),
            Found::Missing => Err(SpawnError::NotFound {
                program: program.to_owned(),
                resolved,
            }),
        };
    }
    // Like execvp: the first executable match wins, but a match without an execute bit is reported
    // (as EACCES would be) rather than "not found".
    let mut not_executable = None;
    for dir in std::env::split_paths(path_var.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"))) {
        let resolved = cwd.join(dir).join(program);
        match check_executable(program, &resolved) {
            Ok(Found::Executable) => return Ok(resolved),
            Ok(Found::NotExecutable) => {
                not_executable.get_or_insert(resolved);
            }
            // An unreadable or missing directory in $PATH is skipped, as execvp does.
            Ok(Found::Missing) | Err(_) => {}
        }
    }
    Err(match not_executable {
        Some(resolved) => SpawnError::NotExecutable {
            program: program.to_owned(),
            resolved,
        },
        None => SpawnError::NotFound {
            program: program.to_owned(),
            resolved: PathBuf::from(program),
        },
    })
}

enum Found {
    Executable,
    NotExecutable,
    Missing,
}

fn check_executable(program: &str, path: &Path) -> Result<Found, SpawnError> {
    let io_error = |source| SpawnError::Io {
        program: program.to_owned(),
        source,
    };
    // `metadata` follows symlinks, so a symlink to an executable file is fine.
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(Errno::ENOTDIR as i32) => {
            return Ok(Found::Missing);
        }
        Err(e) => return Err(io_error(e)),
    };
    if !meta.is_file() {
        let msg = format!("{} is not a regular file", path.display());
        return Err(io_error(io::Error::new(io::ErrorKind::InvalidInput, msg)));
    }
    Ok(if meta.permissions().mode() & 0o111 != 0 {
        Found::Executable
    } else {
        Found::NotExecutable
    })
}

/// Starts the module described by `spec` and the two tasks that read its output.
///
/// The module leads a new process group whose id is its pid and has stdin on `/dev/null`.
pub async fn spawn(spec: Spec) -> Result<Running, SpawnError> {
    let program = spec.argv.first().ok_or(SpawnError::EmptyArgv)?;
    let io_error = |source| SpawnError::Io {
        program: program.clone(),
        source,
    };
    if !spec.cwd.is_dir() {
        let msg = format!(
            "working directory {} does not exist or is not a directory",
            spec.cwd.display()
        );
        return Err(io_error(io::Error::new(io::ErrorKind::NotFound, msg)));
    }
    let path_var = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| OsString::from(v));
    let path_var = path_var.or_else(|| std::env::var_os("PATH"));
    let resolved = resolve_with_path(program, &spec.cwd, path_var.as_deref())?;

    become_subreaper();
    let argv: Vec<&OsStr> = spec.argv.iter().map(OsStr::new).collect();
    let started = match spawn_cloned(&resolved, &argv, &spec).await {
        Ok(Some(started)) => Ok(started),
        Ok(None) => spawn_tokio(&resolved, &spec).await,
        Err(e) => Err(e),
    }
    .map_err(|e| io_error(explain_exec_error(e, &resolved)))?;
    let (child, leader, stdout, stderr, start) = started;
    tracing::debug!(label = %spec.log_label, pid = leader.pid(), program = %resolved.display(), "module started");
    let readers = output::Readers::start(stdout, stderr, spec.tail_bytes, &spec.log_label, spec.log.clone());
    Ok(Running::new(child, leader, start, &spec, readers))
}

/// A started module: tokio's handle (only when tokio started it), its
/// leader, its output pipes, and when its spawn began.
///
/// The module's wall time (and its timeout) runs from the start of the
/// spawn that succeeded: the spawning thread sleeps while the module execs
/// (`CLONE_VFORK`, and `posix_spawn` alike) and may then wait for a CPU
/// while the module runs. Read after the spawn returned, the clock missed
/// that: a 1.4 ms module recorded as 0.03 ms on a busy machine, its wall
/// time below its own CPU time, and the dispatch overhead of the bench
/// (a run's wall time minus its modules') grown by as much.
type Started = (
    Option<Child>,
    Leader,
    Box<dyn AsyncRead + Send + Unpin>,
    Box<dyn AsyncRead + Send + Unpin>,
    Instant,
);

/// Whether `SCHEDULER_SPAWN=posix_spawn` asks for tokio's `posix_spawn`
/// instead of `vfork.rs` (for a kernel or sandbox where `clone` misbehaves);
/// read once.
fn posix_spawn_asked() -> bool {
    static ASKED: LazyLock<bool> = LazyLock::new(|| match std::env::var("SCHEDULER_SPAWN").as_deref() {
        Ok("posix_spawn") => true,
        Ok("clone") | Err(_) => false,
        Ok(other) => {
            tracing::warn!(
                value = other,
                "SCHEDULER_SPAWN is neither clone nor posix_spawn; using clone (unset it, or set one of those)"
            );
            false
        }
    });
    *ASKED
}

/// Starts the module with `vfork.rs`; `Ok(None)` when the kernel cannot
/// (no `CLONE_PIDFD`, before Linux 5.2) or `SCHEDULER_SPAWN` says not to.
async fn spawn_cloned(resolved: &Path, argv: &[&OsStr], spec: &Spec) -> io::Result<Option<Started>> {
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Ordering::Relaxed) || posix_spawn_asked() {
        return Ok(None);
    }
    let (spawned, start) = retry_busy(|| crate::vfork::spawn(resolved, argv, &spec.env, &spec.cwd)).await?;
    let Some(s) = spawned else {
        UNSUPPORTED.store(true, Ordering::Relaxed);
        return Ok(None);
    };
    // The module runs now: should it not be watched (a registration with
    // tokio failing), its group is killed, and its leader reaped later.
    let mut guard = KillOnDrop {
        pgid: nix::unistd::Pid::from_raw(s.pid as i32),
        armed: true,
    };
    let leader = Leader::with_pidfd(s.pid, s.pidfd)?;
    let stdout = pipe::Receiver::from_owned_fd_unchecked(s.stdout)?;
    let stderr = pipe::Receiver::from_owned_fd_unchecked(s.stderr)?;
    guard.armed = false;
    Ok(Some((None, leader, Box::new(stdout), Box::new(stderr), start)))
}

/// Starts the module with tokio (`posix_spawn`).
async fn spawn_tokio(resolved: &Path, spec: &Spec) -> io::Result<Started> {
    let program = &spec.argv[0];
    let mut cmd = Command::new(resolved);
    cmd.arg0(program)
        .args(&spec.argv[1..])
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Dropping a `Running` kills the whole group itself; killing only the leader would be worse.
        .kill_on_drop(false);
    // No `pre_exec` hook (such as PR_SET_PDEATHSIG): any hook forces std to
    // fork the whole worker instead of using posix_spawn, which costs about
    // 1.5 ms per module here. A module outliving a killed worker is stopped
    // by the worker's keeper (`keeper.rs`), which sees the worker's pipe close
    // and kills every group carrying its `ETL_WORKER_ID`; recovery on the same
    // host kills the recorded group too if the keeper died with the worker
    // (see ARCHITECTURE.md).
    let (mut child, start) = retry_busy(|| cmd.spawn()).await?;
    let pid = child.id().expect("a child that was just spawned has not been reaped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    Ok((Some(child), Leader::new(pid), Box::new(stdout), Box::new(stderr), start))
}

/// Retries `ETXTBSY`: another thread forking at the moment a script was written still holds a
/// writable descriptor to it until its own exec, and the kernel refuses to exec the file meanwhile.
/// Returns what the attempt that succeeded returned and when it began.
async fn retry_busy<T>(mut spawn: impl FnMut() -> io::Result<T>) -> io::Result<(T, Instant)> {
    let mut attempt = 0;
    loop {
        let start = Instant::now();
        match spawn() {
            Err(e) if e.raw_os_error() == Some(Errno::ETXTBSY as i32) && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(10 * attempt)).await;
            }
            other => return other.map(|v| (v, start)),
        }
    }
}

/// The file was checked just before, so these errors of `execve` mean something about its content.
fn explain_exec_error(e: io::Error, resolved: &Path) -> io::Error {
    let path = resolved.display();
    let msg = match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
        Errno::ENOENT => {
            format!("{path} exists but could not be run; if it is a script, check the interpreter in its #! line")
        }
        Errno::ENOEXEC => format!("{path} is neither a binary nor a script; add a #! line such as #!/bin/sh"),
        _ => return e,
    };
    io::Error::new(e.kind(), msg)
}

/// The worker must reap what its modules leave behind (see the crate docs), so orphans of a module
/// have to become its children instead of PID 1's. A failure only costs zombies, hence best effort.
fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "could not become a child subreaper; orphans of modules go to PID 1");
        }
    });
}
