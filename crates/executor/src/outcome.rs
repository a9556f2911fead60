//! How an execution ended: plain values, decided here and persisted by the caller.

use std::time::Duration;

use nix::sys::signal::Signal;

/// Why the module's process is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The module exited by itself with this code.
    Exited(i32),
    /// The module was terminated by this signal, and not by us.
    Signaled(i32),
    /// We killed its process group because it ran longer than `Spec::timeout`.
    TimedOut,
    /// We killed its process group because the cancellation token fired.
    Canceled,
}

/// Everything the caller needs to record about one execution.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ending: Ending,
    /// Exit code as reported by the OS, when there is one (also after a timeout, if the module exited
    /// by itself on SIGTERM).
    pub exit_code: Option<i32>,
    /// Terminating signal as reported by the OS, when there is one.
    pub signal: Option<i32>,
    /// From the spawn to the leader's exit, or to the moment we decided to kill it: for
    /// [`Ending::TimedOut`] this is exactly the timeout, so the grace period does not count.
    pub duration: Duration,
    /// Last bytes of stdout, lossy UTF-8, prefixed with `[... N bytes omitted]\n` when cut.
    pub stdout_tail: String,
    /// Last bytes of stderr, same format as `stdout_tail`.
    pub stderr_tail: String,
    /// Total bytes the module wrote to stdout (that we read before the pipe closed).
    pub stdout_bytes: u64,
    /// Total bytes the module wrote to stderr.
    pub stderr_bytes: u64,
    /// A sentence for the run record when the group still had members after the leader exited.
    pub leftover: Option<String>,
    /// The kernel's accounting of the leader and the children it waited for (`None` without a
    /// pidfd, before Linux 5.3).
    pub usage: Option<crate::Usage>,
    /// Killed by SIGKILL while the cgroup's OOM kill count rose: the kernel's OOM killer.
    pub oom_killed: bool,
}

impl Outcome {
    /// True only for [`Ending::Exited`]`(0)`. Killed leftovers do not make a run fail; they are
    /// reported in `leftover` and by [`describe`](Self::describe).
    pub fn succeeded(&self) -> bool {
        self.ending == Ending::Exited(0)
    }

    /// A short sentence for humans, e.g. `exit code 3` or `killed by signal 9 (SIGKILL)`.
    pub fn describe(&self) -> String {
        let ending = match self.ending {
            Ending::Exited(code) => format!("exit code {code}"),
            Ending::Signaled(_) if self.oom_killed => "killed by the OOM killer (signal 9, SIGKILL)".to_owned(),
            // Our own kills are `TimedOut` or `Canceled`: this one came from elsewhere.
            Ending::Signaled(9) => "killed by SIGKILL from outside the scheduler: out of memory?".to_owned(),
            Ending::Signaled(sig) => format!("killed by signal {sig} ({})", signal_name(sig)),
            Ending::TimedOut => format!("timed out after {}; process group killed", human(self.duration)),
            Ending::Canceled => "canceled; process group killed".to_owned(),
        };
        match &self.leftover {
            Some(leftover) => format!("{ending}; {leftover}"),
            None => ending,
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig).map(Signal::as_str).unwrap_or("unknown signal")
}

/// `30s`, `300ms`, `1.5s`: short, and exact for the round values timeouts are usually given in.
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.subsec_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(ending: Ending, duration: Duration) -> Outcome {
        Outcome {
            ending,
            exit_code: None,
            signal: None,
            duration,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            leftover: None,
            usage: None,
            oom_killed: false,
        }
    }

    #[test]
    fn describe_says_how_the_module_ended() {
        let check = |ending, ms, expected: &str| {
            assert_eq!(outcome(ending, Duration::from_millis(ms)).describe(), expected);
        };
        check(Ending::Exited(3), 5, "exit code 3");
        check(
            Ending::Signaled(9),
            5,
            "killed by SIGKILL from outside the scheduler: out of memory?",
        );
        check(Ending::Signaled(15), 5, "killed by signal 15 (SIGTERM)");
        check(Ending::Signaled(200), 5, "killed by signal 200 (unknown signal)");
        check(Ending::TimedOut, 30_000, "timed out after 30s; process group killed");
        check(Ending::TimedOut, 300, "timed out after 300ms; process group killed");
        check(Ending::TimedOut, 1_500, "timed out after 1.5s; process group killed");
        check(Ending::Canceled, 5, "canceled; process group killed");
        let mut oom = outcome(Ending::Signaled(9), Duration::ZERO);
        oom.oom_killed = true;
        assert_eq!(oom.describe(), "killed by the OOM killer (signal 9, SIGKILL)");
    }

    #[test]
    fn only_exit_code_zero_succeeds_and_leftovers_are_described() {
        let mut ok = outcome(Ending::Exited(0), Duration::ZERO);
        assert!(ok.succeeded());
        ok.leftover = Some("module left 1 background process(es) in its process group; they were killed".into());
        assert!(ok.succeeded());
        assert!(ok.describe().starts_with("exit code 0; module left 1 background"));
        for ending in [
            Ending::Exited(1),
            Ending::Signaled(9),
            Ending::TimedOut,
            Ending::Canceled,
        ] {
            assert!(!outcome(ending, Duration::ZERO).succeeded());
        }
    }
}
