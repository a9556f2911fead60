//! Finding and killing the process group of a module whose worker died
//! (SIGKILL, OOM): the group outlives the worker, and if the worker's keeper
//! died with it, recovery on the same host stops it before the step runs
//! again. A pid can be reused, so the group is only
//! killed if one of its members carries the run's `ETL_RUN_ID` in its
//! environment.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Kills process group `pgid` if a member of it belongs to run `run_id`.
/// Returns whether a group was found and killed.
pub fn kill_orphan_group(pgid: u32, run_id: &str) -> bool {
    let Ok(raw) = i32::try_from(pgid) else { return false };
    if raw <= 1 || !group_belongs_to(raw, run_id) {
        return false;
    }
    tracing::warn!(pgid, run_id, "killing the process group left behind by a dead worker");
    killpg(Pid::from_raw(raw), Signal::SIGKILL).is_ok()
}

/// Kills the process group of every process on this host that carries the
/// environment of one execution (`ETL_RUN_ID`, `ETL_STEP`, `ETL_ATTEMPT`):
/// for a dead worker that did not get to record its module's pid. Returns
/// how many groups were killed.
pub fn kill_orphans_of(run_id: &str, step: u32, attempt: u32) -> usize {
    let wanted = [
        format!("ETL_RUN_ID={run_id}"),
        format!("ETL_STEP={step}"),
        format!("ETL_ATTEMPT={attempt}"),
    ];
    let groups = groups_with_env(&wanted);
    for pgid in &groups {
        tracing::warn!(
            pgid,
            run_id,
            step,
            attempt,
            "killing the process group of an execution whose worker died"
        );
        let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
    }
    groups.len()
}

/// The process groups (sorted, deduplicated, never 0 or 1) of every process
/// on this host whose environment holds all of `wanted` (`NAME=value`).
pub(crate) fn groups_with_env(wanted: &[String]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut groups: Vec<i32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| {
                    wanted
                        .iter()
                        .all(|w| env.split(|b| *b == 0).any(|var| var == w.as_bytes()))
                })
                .unwrap_or(false)
        })
        .filter_map(process_group_of)
        .filter(|pgid| *pgid > 1)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

fn group_belongs_to(pgid: i32, run_id: &str) -> bool {
    let needle = format!("ETL_RUN_ID={run_id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| process_group_of(*pid) == Some(pgid))
        .any(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
                .unwrap_or(false)
        })
}

/// Field 5 of /proc/<pid>/stat, read after the command name (which may
/// contain spaces and parentheses).
fn process_group_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn only_a_group_carrying_the_run_id_is_killed() {
        let run = "0190-test-run";
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("ETL_RUN_ID", run)
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            !kill_orphan_group(pid, "another-run"),
            "a foreign group must be left alone"
        );
        assert!(kill_orphan_group(pid, run));
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9));
        assert!(!kill_orphan_group(pid, run), "nothing left to kill");
    }
}
