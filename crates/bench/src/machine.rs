//! What the machine and its processes spent, read from `/proc`: the whole
//! machine's busy time (`/proc/stat`), each process's CPU
//! (`/proc/PID/stat`) summed into the groups `scheduler bench` reports
//! (the worker, PostgreSQL, RabbitMQ, the bench itself), a process's peak
//! resident set (`VmHWM`), and the bounded wait for a quiet machine before
//! a phase is measured.
//!
//! The definitions are those of the Celery reference benchmark
//! (`bench.py`: `cpu_jiffies`, `proc_cpu_by_group`, `wait_quiet`), so the
//! two benchmarks' figures compare: busy = all of the `cpu` line's first
//! eight fields but idle and iowait; a process group's CPU is
//! utime + stime + cutime + cstime of its processes (what they spent, and
//! what the children they reaped spent); the bench process counts
//! utime + stime only, as Python's `os.times()` user + system does.
//!
//! Parsing is pure (text in, numbers out) and tested here; reading is a thin
//! layer over `std::fs`. Linux only.

use anyhow::Context;
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Jiffies of the whole machine, summed over its CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// All but idle and iowait.
    pub busy: u64,
    pub total: u64,
}

impl CpuTimes {
    pub fn read() -> anyhow::Result<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        parse_cpu_line(&stat).context("no cpu line in /proc/stat")
    }

    /// The busy share of all CPUs between `self` and `later` (0 to 1).
    pub fn busy_fraction(self, later: CpuTimes) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        later.busy.saturating_sub(self.busy) as f64 / total as f64
    }
}

/// The `cpu` line of `/proc/stat`: user nice system idle iowait irq softirq
/// steal are summed (guest time is already inside user), idle and iowait
/// are not busy.
pub fn parse_cpu_line(stat: &str) -> Option<CpuTimes> {
    let mut fields = stat.lines().next()?.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields.take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some(CpuTimes {
        busy: total - v[3] - v[4],
        total,
    })
}

/// One process, from `/proc/PID/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// The program's name as the kernel keeps it (15 bytes at most).
    pub comm: String,
    pub ppid: u32,
    /// utime + stime, in jiffies.
    pub own: u64,
    /// cutime + cstime: what the children it waited for spent.
    pub reaped: u64,
}

/// Parses `/proc/PID/stat`. The name is between the first `(` and the last
/// `)`, since it may itself hold spaces and parentheses.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?.to_string();
    // After the name: state ppid pgrp session tty_nr tpgid flags minflt
    // cminflt majflt cmajflt utime stime cutime cstime ...
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let num = |i: usize| -> Option<u64> {
        // cutime and cstime are signed in the kernel's format; never below 0 in practice.
        rest.get(i)?.parse::<i64>().ok().map(|n| n.max(0) as u64)
    };
    Some(ProcStat {
        pid,
        comm,
        ppid: u32::try_from(num(1)?).ok()?,
        own: num(11)? + num(12)?,
        reaped: num(13)? + num(14)?,
    })
}

/// Every process now (one that ends while it is read is left out).
pub fn processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        e.file_name().to_str()?.parse::<u32>().ok()?;
        parse_proc_stat(&std::fs::read_to_string(e.path().join("stat")).ok()?)
    })
    .collect()
}

/// The names RabbitMQ's processes go by: the Erlang VM, the port mapper
/// and the VM's helpers (any process under `beam.smp` counts too, e.g. its
/// disk monitor's shell).
const RABBITMQ: &[&str] = &["beam.smp", "epmd", "erl_child_setup", "inet_gethost"];

/// CPU jiffies per process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupTicks {
    /// The worker process and everything under it (its keeper, its modules),
    /// with what they reaped.
    pub worker: u64,
    /// The worker process alone: its threads' utime + stime, without its
    /// keeper and modules (the dispatch machinery's own CPU).
    pub worker_own: u64,
    /// What the worker process reaped: its modules (and what they reaped),
    /// exec included, as the kernel accounts them (cutime + cstime).
    pub worker_reaped: u64,
    /// Every process named `postgres` (server, backends, its helpers).
    pub postgres: u64,
    pub rabbitmq: u64,
    /// The benchmark's own process, utime + stime (not its children: the
    /// worker is one).
    pub bench: u64,
}

/// Sums `procs` into groups; `worker` and `bench` are process ids.
pub fn group_ticks(procs: &[ProcStat], worker: u32, bench: u32) -> GroupTicks {
    let by_pid: HashMap<u32, &ProcStat> = procs.iter().map(|p| (p.pid, p)).collect();
    // Whether `p` or one of its ancestors satisfies `f` (bounded: a pid
    // reused while we read could make a loop).
    let lineage = |p: &ProcStat, f: &dyn Fn(&ProcStat) -> bool| {
        let mut cur = Some(p);
        for _ in 0..64 {
            match cur {
                Some(c) if f(c) => return true,
                Some(c) if c.ppid > 1 => cur = by_pid.get(&c.ppid).copied(),
                _ => return false,
            }
        }
        false
    };
    let mut g = GroupTicks::default();
    for p in procs {
        let all = p.own + p.reaped;
        if p.pid == bench {
            g.bench += p.own;
        } else if lineage(p, &|c| c.pid == worker) {
            g.worker += all;
            if p.pid == worker {
                g.worker_own += p.own;
                g.worker_reaped += p.reaped;
            }
        } else if p.comm == "postgres" {
            g.postgres += all;
        } else if RABBITMQ.contains(&p.comm.as_str()) || lineage(p, &|c| c.comm == "beam.smp") {
            g.rabbitmq += all;
        }
    }
    g
}

/// Context switches of a process's live threads, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Switches {
    /// The thread blocked (waited for I/O, a lock, a wake-up).
    pub voluntary: u64,
    /// The thread was preempted: something else wanted its CPU.
    pub involuntary: u64,
}

/// Reads `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` from a
/// thread's `/proc/PID/task/TID/status`.
pub fn parse_switches(status: &str) -> Option<Switches> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    Some(Switches {
        voluntary: field("voluntary_ctxt_switches:")?,
        involuntary: field("nonvoluntary_ctxt_switches:")?,
    })
}

/// The switches of `pid`'s threads alive now (a thread that ended takes
/// its counts with it: tokio's idle blocking threads live 10 s, longer
/// than a phase).
pub fn switches(pid: u32) -> Switches {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Switches::default();
    };
    dir.filter_map(|e| parse_switches(&std::fs::read_to_string(e.ok()?.path().join("status")).ok()?))
        .fold(Switches::default(), |a, b| Switches {
            voluntary: a.voluntary + b.voluntary,
            involuntary: a.involuntary + b.involuntary,
        })
}

/// The machine and the groups at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub cpu: CpuTimes,
    pub groups: GroupTicks,
    /// The worker process's threads.
    pub worker_switches: Switches,
}

impl Sample {
    /// Reads `/proc` now, with `worker` the worker's pid and this process
    /// the bench.
    pub fn take(worker: u32) -> anyhow::Result<Sample> {
        let cpu = CpuTimes::read()?;
        let groups = group_ticks(&processes(), worker, std::process::id());
        Ok(Sample {
            cpu,
            groups,
            worker_switches: switches(worker),
        })
    }
}

/// CPU milliseconds per module execution between two samples, the
/// machine's and each group's; `rest` is the machine's minus the groups'
/// (the kernel's own work, other processes), as in the Celery reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuPerExecution {
    /// Busy share of all CPUs over the interval (0 to 1).
    pub machine_busy: f64,
    pub machine_ms: f64,
    pub worker_ms: f64,
    /// The worker process alone, without its keeper and modules: what
    /// dispatching costs it (the part of `worker_ms` that is ours).
    pub worker_own_ms: f64,
    /// The modules themselves (what the worker reaped, exec included), the
    /// part of `worker_ms` a bare spawn of the same modules costs too.
    pub modules_ms: f64,
    /// `machine_ms` without `modules_ms`: what running them through the
    /// scheduler cost the machine (the worker, the services, the kernel's
    /// work outside the modules).
    pub dispatch_ms: f64,
    /// The worker's threads' context switches per execution, voluntary
    /// (a wait) and involuntary (preempted). Unlike the times, these move
    /// little with the machine's speed, so an A/B of a change to the step's
    /// path shows here first.
    pub worker_switches_voluntary: f64,
    pub worker_switches_involuntary: f64,
    pub postgres_ms: f64,
    pub rabbitmq_ms: f64,
    pub bench_ms: f64,
    pub rest_ms: f64,
    /// `rest` as a share of the machine's capacity over the interval: CPU
    /// no group explains (the Celery reference's `foreign_cpu_share`; it
    /// drops a repetition where this is 10 % or more).
    pub unexplained_share: f64,
}

/// `ticks_per_sec` is `CLK_TCK` (see [`clk_tck`]).
pub fn per_execution(before: &Sample, after: &Sample, executions: u64, ticks_per_sec: u64) -> CpuPerExecution {
    let per = |ticks: u64| 1000.0 * ticks as f64 / ticks_per_sec as f64 / executions.max(1) as f64;
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let (b, a) = (&before.groups, &after.groups);
    let machine_ms = per(d(before.cpu.busy, after.cpu.busy));
    let worker_ms = per(d(b.worker, a.worker));
    let worker_own_ms = per(d(b.worker_own, a.worker_own));
    let modules_ms = per(d(b.worker_reaped, a.worker_reaped));
    let (sb, sa) = (before.worker_switches, after.worker_switches);
    let each = |n: u64| n as f64 / executions.max(1) as f64;
    let postgres_ms = per(d(b.postgres, a.postgres));
    let rabbitmq_ms = per(d(b.rabbitmq, a.rabbitmq));
    let bench_ms = per(d(b.bench, a.bench));
    let rest_ms = machine_ms - worker_ms - postgres_ms - rabbitmq_ms - bench_ms;
    let capacity_ms = per(d(before.cpu.total, after.cpu.total));
    CpuPerExecution {
        machine_busy: before.cpu.busy_fraction(after.cpu),
        machine_ms,
        worker_ms,
        worker_own_ms,
        modules_ms,
        dispatch_ms: machine_ms - modules_ms,
        worker_switches_voluntary: each(d(sb.voluntary, sa.voluntary)),
        worker_switches_involuntary: each(d(sb.involuntary, sa.involuntary)),
        postgres_ms,
        rabbitmq_ms,
        bench_ms,
        rest_ms,
        unexplained_share: if capacity_ms > 0.0 { rest_ms / capacity_ms } else { 0.0 },
    }
}

/// Jiffies per second (`CLK_TCK`, 100 on every Linux we know of).
pub fn clk_tck() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 100,
    }
}

/// `Pss` (proportional set size: each shared page divided among the
/// processes that map it) from `/proc/PID/smaps_rollup`, KiB.
pub fn parse_pss_kib(rollup: &str) -> Option<u64> {
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

pub fn pss_kib(pid: u32) -> anyhow::Result<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("reading /proc/{pid}/smaps_rollup"))?;
    parse_pss_kib(&rollup).with_context(|| format!("no Pss in /proc/{pid}/smaps_rollup"))
}

/// `VmHWM` (peak resident set) from `/proc/PID/status`, KiB.
pub fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// A live process's peak resident set, KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm_hwm_kib(&status).with_context(|| format!("no VmHWM in /proc/{pid}/status"))
}

/// When the machine counts as quiet enough to measure on.
#[derive(Debug, Clone, Copy)]
pub struct QuietRule {
    /// Give up waiting after this long (and measure anyway).
    pub max_wait: Duration,
    /// A 1-s window is quiet below this busy share of all CPUs.
    pub threshold: f64,
    /// Consecutive quiet windows needed.
    pub windows: u32,
}

impl Default for QuietRule {
    /// The Celery reference's: 3 windows under 10 %; up to a minute.
    fn default() -> Self {
        QuietRule {
            max_wait: Duration::from_secs(60),
            threshold: 0.10,
            windows: 3,
        }
    }
}

/// The quiet wait's arithmetic, one window at a time.
#[derive(Debug, Clone, Copy)]
pub struct QuietWatch {
    rule: QuietRule,
    in_a_row: u32,
}

impl QuietWatch {
    pub fn new(rule: QuietRule) -> Self {
        QuietWatch { rule, in_a_row: 0 }
    }

    /// One more window, `busy` its busy share, `waited` the time since the
    /// wait began: `Some(true)` quiet, `Some(false)` the wait is over and
    /// the machine was not quiet, `None` keep watching.
    pub fn observe(&mut self, busy: f64, waited: Duration) -> Option<bool> {
        self.in_a_row = if busy < self.rule.threshold {
            self.in_a_row + 1
        } else {
            0
        };
        if self.in_a_row >= self.rule.windows {
            Some(true)
        } else if waited >= self.rule.max_wait {
            Some(false)
        } else {
            None
        }
    }
}

/// How the wait before a phase went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quiet {
    pub quiet: bool,
    pub waited_s: f64,
    /// Busy share of the last 1-s window.
    pub last_busy: f64,
    /// When not quiet: the busiest processes of the last window
    /// ("name(pid) 93%"), for the log.
    pub busy_processes: Vec<String>,
}

/// Waits, one 1-s window at a time, until the machine is quiet by `rule`
/// or the wait is over.
pub async fn wait_quiet(rule: QuietRule) -> anyhow::Result<Quiet> {
    let start = Instant::now();
    let mut watch = QuietWatch::new(rule);
    loop {
        let before = CpuTimes::read()?;
        let procs = processes();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = CpuTimes::read()?;
        let busy = before.busy_fraction(after);
        if let Some(quiet) = watch.observe(busy, start.elapsed()) {
            let busy_processes = if quiet {
                Vec::new()
            } else {
                busiest(&procs, &processes(), clk_tck(), 0.2)
            };
            return Ok(Quiet {
                quiet,
                waited_s: start.elapsed().as_secs_f64(),
                last_busy: busy,
                busy_processes,
            });
        }
    }
}

/// Processes that used at least `min` of a CPU between two tables taken
/// about a second apart, busiest first: "name(pid) 93%".
pub fn busiest(before: &[ProcStat], after: &[ProcStat], ticks_per_sec: u64, min: f64) -> Vec<String> {
    let then: HashMap<u32, u64> = before.iter().map(|p| (p.pid, p.own)).collect();
    let mut busy: Vec<(u64, &ProcStat)> = after
        .iter()
        .filter_map(|p| Some((p.own.checked_sub(*then.get(&p.pid)?)?, p)))
        .filter(|(d, _)| *d as f64 >= min * ticks_per_sec as f64)
        .collect();
    busy.sort_by_key(|b| std::cmp::Reverse(b.0));
    busy.iter()
        .take(5)
        .map(|(d, p)| format!("{}({}) {:.0}%", p.comm, p.pid, 100.0 * *d as f64 / ticks_per_sec as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, comm: &str, ppid: u32, own: u64, reaped: u64) -> ProcStat {
        ProcStat {
            pid,
            comm: comm.into(),
            ppid,
            own,
            reaped,
        }
    }

    #[test]
    fn the_cpu_line_counts_idle_and_iowait_as_not_busy() {
        let stat = "cpu  100 5 50 1000 20 3 2 1 7 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        // user nice system idle iowait irq softirq steal; guest (7) is inside user.
        assert_eq!(
            parse_cpu_line(stat),
            Some(CpuTimes {
                busy: 100 + 5 + 50 + 3 + 2 + 1,
                total: 1181
            })
        );
        assert_eq!(parse_cpu_line("intr 1 2 3\n"), None);
    }

    #[test]
    fn a_thread_status_gives_its_voluntary_and_involuntary_switches() {
        let status = "Name:\ttokio-rt-worker\nState:\tS (sleeping)\nvoluntary_ctxt_switches:\t7499\n\
                      nonvoluntary_ctxt_switches:\t1519\n";
        assert_eq!(
            parse_switches(status),
            Some(Switches {
                voluntary: 7499,
                involuntary: 1519
            })
        );
        assert_eq!(parse_switches("Name:\tx\nvoluntary_ctxt_switches:\t3\n"), None);
    }

    #[test]
    fn the_switches_of_this_process_are_read_and_grow() {
        let me = std::process::id();
        let before = switches(me);
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let after = switches(me);
        assert!(after.voluntary >= before.voluntary + 20, "{before:?} -> {after:?}");
    }

    #[test]
    fn busy_fraction_is_the_busy_share_of_the_interval() {
        let a = CpuTimes { busy: 100, total: 1000 };
        let b = CpuTimes { busy: 150, total: 1200 };
        assert!((a.busy_fraction(b) - 0.25).abs() < 1e-12);
        assert_eq!(a.busy_fraction(a), 0.0);
    }

    #[test]
    fn a_stat_line_gives_parent_own_and_reaped_time_even_with_odd_names() {
        let text = "4242 (my (odd) prog) S 17 4242 4242 0 -1 4194560 900 0 0 0 \
                    31 12 250 40 20 0 3 0 12345 1000000 200 18446744073709551615";
        assert_eq!(parse_proc_stat(text), Some(proc(4242, "my (odd) prog", 17, 43, 290)));
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn groups_follow_the_worker_tree_the_server_names_and_the_bench_alone() {
        let procs = vec![
            proc(10, "scheduler", 1, 100, 0),  // the bench
            proc(20, "scheduler", 10, 50, 30), // the worker, a child of the bench
            proc(21, "scheduler", 20, 5, 0),   // its keeper
            proc(22, "noop.sh", 20, 1, 0),     // a module running now
            proc(23, "sh", 22, 2, 0),          // and its own child
            proc(30, "postgres", 1, 40, 60),
            proc(31, "postgres", 30, 7, 0),
            proc(40, "beam.smp", 1, 80, 0),
            proc(41, "erl_child_setup", 40, 1, 0),
            proc(42, "sh", 41, 3, 1), // RabbitMQ's disk monitor
            proc(43, "epmd", 1, 2, 0),
            proc(50, "cc1", 1, 900, 0),
        ];
        assert_eq!(
            group_ticks(&procs, 20, 10),
            GroupTicks {
                worker: 50 + 30 + 5 + 1 + 2,
                worker_own: 50,
                worker_reaped: 30,
                postgres: 40 + 60 + 7,
                rabbitmq: 80 + 1 + 3 + 1 + 2,
                bench: 100,
            }
        );
    }

    #[test]
    fn cpu_per_execution_splits_the_machine_and_leaves_the_rest() {
        let at = |busy, total, worker, postgres, rabbitmq, bench| Sample {
            cpu: CpuTimes { busy, total },
            groups: GroupTicks {
                worker,
                worker_own: worker / 4,
                worker_reaped: worker / 2,
                postgres,
                rabbitmq,
                bench,
            },
            worker_switches: Switches {
                voluntary: worker * 10,
                involuntary: worker,
            },
        };
        // 10 s of 2 CPUs at 100 ticks/s = 2000 ticks; 1000 busy over 500 executions.
        let c = per_execution(&at(0, 0, 0, 0, 0, 0), &at(1000, 2000, 400, 300, 150, 100), 500, 100);
        assert!((c.machine_ms - 20.0).abs() < 1e-9);
        assert!((c.worker_ms - 8.0).abs() < 1e-9);
        assert!((c.worker_own_ms - 2.0).abs() < 1e-9);
        assert!((c.modules_ms - 4.0).abs() < 1e-9);
        assert!((c.dispatch_ms - 16.0).abs() < 1e-9);
        assert!((c.worker_switches_voluntary - 8.0).abs() < 1e-9);
        assert!((c.worker_switches_involuntary - 0.8).abs() < 1e-9);
        assert!((c.postgres_ms - 6.0).abs() < 1e-9);
        assert!((c.rabbitmq_ms - 3.0).abs() < 1e-9);
        assert!((c.bench_ms - 2.0).abs() < 1e-9);
        assert!((c.rest_ms - 1.0).abs() < 1e-9);
        assert!((c.machine_busy - 0.5).abs() < 1e-9);
        assert!((c.unexplained_share - 0.025).abs() < 1e-9);
    }

    #[test]
    fn pss_is_read_in_kib_and_not_confused_with_its_variants() {
        let rollup = "Rss:               10524 kB\nPss:                3650 kB\nPss_Dirty:          2200 kB\n";
        assert_eq!(super::parse_pss_kib(rollup), Some(3650));
        assert_eq!(super::parse_pss_kib("Rss: 1 kB\n"), None);
    }

    #[test]
    fn vm_hwm_is_read_in_kib() {
        let status = "Name:\tscheduler\nVmPeak:\t  900000 kB\nVmHWM:\t   23456 kB\nVmRSS:\t   20000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(23456));
        assert_eq!(parse_vm_hwm_kib("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn the_quiet_wait_needs_windows_in_a_row_and_gives_up_at_its_bound() {
        let rule = QuietRule::default();
        let s = Duration::from_secs;
        let mut w = QuietWatch::new(rule);
        assert_eq!(w.observe(0.05, s(1)), None);
        assert_eq!(w.observe(0.09, s(2)), None);
        assert_eq!(w.observe(0.50, s(3)), None, "a busy window starts the count again");
        assert_eq!(w.observe(0.01, s(4)), None);
        assert_eq!(w.observe(0.02, s(5)), None);
        assert_eq!(w.observe(0.03, s(6)), Some(true));

        let mut w = QuietWatch::new(rule);
        assert_eq!(w.observe(0.95, s(59)), None);
        assert_eq!(w.observe(0.05, s(60)), Some(false), "over the bound, not quiet yet");
        let mut w = QuietWatch::new(rule);
        assert_eq!(w.observe(0.10, s(1)), None, "at the threshold is not under it");
    }

    #[test]
    fn busiest_names_the_processes_that_used_the_most_cpu() {
        let before = vec![
            proc(1, "idle", 0, 10, 0),
            proc(2, "rustc", 1, 100, 0),
            proc(3, "cc1", 1, 0, 0),
        ];
        let after = vec![
            proc(1, "idle", 0, 11, 0),
            proc(2, "rustc", 1, 150, 0),
            proc(3, "cc1", 1, 90, 0),
            proc(4, "new", 1, 99, 0), // not there before: unknown share
        ];
        assert_eq!(busiest(&before, &after, 100, 0.2), vec!["cc1(3) 90%", "rustc(2) 50%"]);
    }
}
