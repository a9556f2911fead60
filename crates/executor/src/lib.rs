//! Runs one ETL module as a child process and reports how it ended.
//!
//! Every process the scheduler starts is started here. A module is any executable, run as
//! `argv[0] argv[1..]` with no shell in between, in a process group of its own. While it runs, each
//! line it writes is forwarded to `tracing` (target `module_output`), every byte goes to the spec's
//! [`LogSink`] (if any), and the last bytes of each stream are kept for the run record. A timeout or a cancellation kills the whole group (SIGTERM, a grace
//! period, SIGKILL), and whatever the module left behind in its group when it exited is killed and
//! reported too.
//!
//! ```no_run
//! # async fn demo(spec: scheduler_executor::Spec) -> Result<(), scheduler_executor::SpawnError> {
//! let running = scheduler_executor::spawn(spec).await?;
//! let outcome = running.wait(tokio_util::sync::CancellationToken::new()).await;
//! println!("{}", outcome.describe());
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`spawn`](crate::spawn()) (`spawn.rs`): resolving the program ([`resolve_program`]) and starting it,
//!   with `clone` (`vfork.rs`), or tokio where the kernel refuses `CLONE_PIDFD`.
//! - `leader.rs`: waiting for and reaping the module's leader, with the kernel's accounting.
//! - `running.rs`: [`Running::wait`], the life cycle of one execution: wait, timeout, cancel, clean up.
//! - `output.rs`: the two pipe readers: bounded tail capture and line forwarding to `tracing`.
//! - `group.rs`: signalling, polling, reaping and killing a process group.
//! - `outcome.rs`: [`Outcome`] and [`Ending`], plain values the caller persists.
//! - `orphans.rs`: finding a dead worker's module groups by pid or by environment; `keeper.rs`: the
//!   process beside each worker that stops its modules the moment it dies.
//!
//! Architecture invariant: this crate does no database or broker I/O; it turns a [`Spec`] into an
//! [`Outcome`] and nothing else. Memory per execution is bounded by `tail_bytes` and one 4 KiB partial
//! line per stream, whatever the module writes.
//!
//! Architecture invariant: when [`Running::wait`] returns, the module's process group is empty and every
//! member we could reap is reaped. To make that possible the process becomes a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`) on its first [`spawn`](crate::spawn()), so that orphans of a module are
//! reparented to it rather than to PID 1 (which in a container often never reaps). Processes that leave
//! the group on purpose (`setsid`, `setpgid`) are outside that promise: if they still hold the
//! module's pipes they are found by the module's environment and killed (the step must not hang on
//! them); otherwise they run on until the keeper sweeps the worker's modules as the worker ends
//! (only a cgroup could do better). When they exit they stay zombies of the worker, since reaping
//! any pid but our own would steal exit statuses from tokio.

mod group;
pub mod keeper;
mod leader;
mod orphans;
mod outcome;
mod output;
mod running;
mod spawn;
mod vfork;

use std::path::PathBuf;
use std::time::Duration;

pub use leader::Usage;
pub use orphans::{kill_orphan_group, kill_orphans_of};
pub use outcome::{Ending, Outcome};
pub use running::Running;
pub use spawn::{SpawnError, resolve_program, spawn};

/// Everything needed to run one module once.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `argv[0]` is the program; the whole vector reaches the module verbatim, never through a shell.
    pub argv: Vec<String>,
    /// Working directory of the module, and the base a relative program path is resolved against.
    pub cwd: PathBuf,
    /// Added to the inherited environment (`ETL_RUN_ID`, `ETL_STEP`, ...). A `PATH` here is also the
    /// one used to look up a program without a `/`. The pairs named `ETL_*` (all of them when none
    /// is) must identify this execution: a process outside the module's group that carries all of
    /// them and holds its pipes is killed as the module's escaped daemon.
    pub env: Vec<(String, String)>,
    /// How long the module may run before its group is killed; `None` means no limit.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL, so a module can clean up when it is stopped.
    pub kill_grace: Duration,
    /// How many trailing bytes of stdout and of stderr to keep in the [`Outcome`].
    pub tail_bytes: usize,
    /// Put into the `label` field of every forwarded output line, so log lines can be told apart
    /// (e.g. `run=<uuid> step=1 module=extract`).
    pub log_label: String,
    /// Receives every byte the module writes, as it is read; `None` keeps only the tails.
    pub log: Option<LogTap>,
}

/// Which pipe a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where a module's whole output goes while it runs (the worker ships it to
/// the record). `write` is called from the pipe readers for every read, so
/// it must not block: a sink that cannot keep up drops bytes and counts
/// them, it never slows the module down. Each reader holds a clone of the
/// [`LogTap`] and drops it when its pipe is done: a sink learns that the
/// output has ended from its own `Drop` (once the spec's clone is gone too).
pub trait LogSink: Send + Sync {
    fn write(&self, stream: Stream, bytes: &[u8], at: std::time::SystemTime);
}

/// A shared [`LogSink`] in a [`Spec`].
#[derive(Clone)]
pub struct LogTap(pub std::sync::Arc<dyn LogSink>);

impl std::fmt::Debug for LogTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogTap")
    }
}

/// Kills a module's whole process group at once (SIGKILL), for a worker that
/// must exit immediately (a second Ctrl-C). `pid` is [`Running::pid`], which
/// is also the group id. Harmless if the group is already gone.
pub fn kill_group_now(pid: u32) {
    if let Ok(raw) = i32::try_from(pid)
        && raw > 1
    {
        group::signal(nix::unistd::Pid::from_raw(raw), nix::sys::signal::Signal::SIGKILL);
    }
}
