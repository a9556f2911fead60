//! Stopping modules: timeout, cancellation, leftover background processes, abandoned executions.

mod common;

use std::time::{Duration, Instant};

use common::{TestDir, process_exists, run, wait_for_pid_file, wait_until};
use scheduler_executor::{Ending, spawn};
use tokio_util::sync::CancellationToken;

fn short_kill(spec: &mut scheduler_executor::Spec) {
    spec.timeout = Some(Duration::from_millis(300));
    spec.kill_grace = Duration::from_millis(300);
}

#[tokio::test]
async fn timeout_kills_a_module_that_ignores_sigterm() {
    let dir = TestDir::new();
    // `trap '' TERM` is inherited by `sleep`, so only SIGKILL ends either of them.
    dir.script("stubborn.sh", "trap '' TERM; echo started; sleep 300; echo never");
    let mut spec = dir.spec(&["./stubborn.sh"]);
    short_kill(&mut spec);
    let started = Instant::now();
    let outcome = run(spec).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(outcome.ending, Ending::TimedOut);
    assert_eq!(outcome.signal, Some(9));
    assert_eq!(outcome.duration, Duration::from_millis(300));
    assert_eq!(outcome.describe(), "timed out after 300ms; process group killed");
    assert_eq!(outcome.stdout_tail, "started\n");
    assert!(outcome.leftover.is_none(), "{:?}", outcome.leftover);
    assert!(!outcome.succeeded());
}

#[tokio::test]
async fn a_timed_out_module_gets_sigterm_first_and_may_clean_up() {
    let dir = TestDir::new();
    dir.script("polite.sh", "trap 'echo cleaning up; exit 0' TERM; sleep 300 & wait");
    let mut spec = dir.spec(&["./polite.sh"]);
    spec.timeout = Some(Duration::from_millis(300));
    spec.kill_grace = Duration::from_secs(10);
    let started = Instant::now();
    let outcome = run(spec).await;
    // Well within the grace period: SIGTERM sufficed for the script and its `sleep`.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(outcome.ending, Ending::TimedOut);
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(outcome.stdout_tail, "cleaning up\n");
}

#[tokio::test]
async fn cancel_kills_the_process_group_and_reports_canceled() {
    let dir = TestDir::new();
    let pid_file = dir.path().join("pid");
    // The child's pid goes to stdout (for the outcome), then to a file (for the test).
    dir.script(
        "child.sh",
        &format!(
            "trap '' TERM; sleep 300 & echo $!; echo $! > {}; wait",
            pid_file.display()
        ),
    );
    let mut spec = dir.spec(&["./child.sh"]);
    spec.kill_grace = Duration::from_millis(300);
    let running = spawn(spec).await.unwrap();
    // Cancel once the module runs with its child, while `wait` is under way.
    wait_for_pid_file(&pid_file).await;
    let cancel = CancellationToken::new();
    let canceler = cancel.clone();
    tokio::spawn(async move { canceler.cancel() });
    let started = Instant::now();
    let outcome = running.wait(cancel).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(outcome.ending, Ending::Canceled);
    assert_eq!(outcome.describe(), "canceled; process group killed");
    let sleep_pid: i32 = outcome.stdout_tail.trim().parse().unwrap();
    assert!(!process_exists(sleep_pid), "the module's child {sleep_pid} survived");
}

#[tokio::test]
async fn a_background_child_holding_the_pipes_is_killed_and_reported() {
    let dir = TestDir::new();
    dir.script("daemon.sh", "sleep 300 & echo $!; exit 0");
    let started = Instant::now();
    let outcome = run(dir.spec(&["./daemon.sh"])).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(outcome.ending, Ending::Exited(0));
    assert_eq!(
        outcome.leftover.as_deref(),
        Some("module left 1 background process(es) in its process group; they were killed")
    );
    let sleep_pid: i32 = outcome.stdout_tail.trim().parse().unwrap();
    assert!(
        !process_exists(sleep_pid),
        "the module's child {sleep_pid} survived (or is an unreaped zombie)"
    );
}

#[tokio::test]
async fn a_daemon_that_left_the_group_but_holds_the_pipes_is_found_by_its_environment() {
    let dir = TestDir::new();
    // `setsid` puts the daemon in a session and group of its own: only the
    // environment it inherited ties it to this execution.
    dir.script("escape.sh", "setsid sleep 300 & echo $!; exit 0");
    let mut spec = dir.spec(&["./escape.sh"]);
    let marker = format!("escape-{}", std::process::id());
    spec.env = vec![("ETL_TEST_EXECUTION".into(), marker)];
    let started = Instant::now();
    let outcome = run(spec).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(outcome.ending, Ending::Exited(0));
    assert_eq!(
        outcome.leftover.as_deref(),
        Some("module left 1 process group(s) outside its own (setsid); they were killed")
    );
    let daemon: i32 = outcome.stdout_tail.trim().parse().unwrap();
    assert!(!process_exists(daemon), "the escaped daemon {daemon} survived");
}

#[tokio::test]
async fn background_children_with_closed_pipes_are_found_too() {
    let dir = TestDir::new();
    dir.script(
        "quiet.sh",
        "sleep 300 >/dev/null 2>&1 & echo $!; sleep 300 >/dev/null 2>&1 & exit 0",
    );
    let outcome = run(dir.spec(&["./quiet.sh"])).await;
    assert_eq!(outcome.ending, Ending::Exited(0));
    assert_eq!(
        outcome.leftover.as_deref(),
        Some("module left 2 background process(es) in its process group; they were killed")
    );
    let sleep_pid: i32 = outcome.stdout_tail.trim().parse().unwrap();
    assert!(!process_exists(sleep_pid));
}

#[tokio::test]
async fn dropping_a_running_module_kills_its_process_group() {
    let dir = TestDir::new();
    let pid_file = dir.path().join("pid");
    dir.script(
        "forever.sh",
        &format!("sleep 300 & echo $! > {}; wait", pid_file.display()),
    );
    let running = spawn(dir.spec(&["./forever.sh"])).await.unwrap();
    let sleep_pid = wait_for_pid_file(&pid_file).await;
    drop(running);
    // The sleep was killed; it may stay a zombie until someone reaps it, so look at its state.
    wait_until(
        "the module's child to die with the drop",
        Duration::from_secs(5),
        || {
            let stat = std::fs::read_to_string(format!("/proc/{sleep_pid}/stat")).unwrap_or_default();
            if stat.is_empty()
                || stat
                    .rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            {
                Ok(())
            } else {
                Err(format!("the module's child {sleep_pid} survived the drop: {stat}"))
            }
        },
    )
    .await;
}

/// A module whose `Running` was dropped is killed; its leader (our child)
/// must not stay a zombie: a later spawn reaps it.
#[tokio::test]
async fn the_leader_of_a_dropped_module_is_reaped_by_a_later_spawn() {
    let dir = TestDir::new();
    dir.script("forever.sh", "exec sleep 300");
    dir.script("ok.sh", "exit 0");
    let running = spawn(dir.spec(&["./forever.sh"])).await.unwrap();
    let pid = running.pid();
    drop(running);
    let start = Instant::now();
    loop {
        // Each spawn reaps the leaders dropped before it that have exited.
        assert!(run(dir.spec(&["./ok.sh"])).await.succeeded());
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the dropped module {pid} is still there: {stat}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
