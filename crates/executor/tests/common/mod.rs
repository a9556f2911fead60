//! Test harness: a fresh directory per test, scripts written into it, and a `Spec` with sane defaults.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use scheduler_executor::{Outcome, Spec};
use tokio_util::sync::CancellationToken;

/// A directory unique to one test, removed when dropped.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("executor-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes an executable `/bin/sh` script named `name` and returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.file(name, &format!("#!/bin/sh\n{body}\n"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Writes a plain file (mode 0644) named `name` and returns its path.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    /// A spec running `argv` in this directory, with no timeout, 2 s grace and a 64 KiB tail.
    pub fn spec(&self, argv: &[&str]) -> Spec {
        Spec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: self.0.clone(),
            env: Vec::new(),
            timeout: None,
            kill_grace: Duration::from_secs(2),
            tail_bytes: 64 * 1024,
            log_label: "test".to_owned(),
            log: None,
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Spawns and waits, never canceling.
pub async fn run(spec: Spec) -> Outcome {
    scheduler_executor::spawn(spec)
        .await
        .expect("spawn")
        .wait(CancellationToken::new())
        .await
}

/// Polls `probe` until it returns `Ok(value)`, and returns that value.
/// `Err(state)` means "not yet"; once `timeout` has passed the test fails,
/// naming `what` it waited for and showing the last state seen.
pub async fn wait_until<T, S: std::fmt::Display>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, S>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(value) => return value,
            Err(state) => assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; last seen: {state}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for a module to write a pid (a whole line) to `path`, and returns it.
pub async fn wait_for_pid_file(path: &Path) -> i32 {
    wait_until("the module to note its child's pid", Duration::from_secs(5), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        match text.strip_suffix('\n').map(|line| line.trim().parse()) {
            Some(Ok(pid)) => Ok(pid),
            _ => Err(format!("{}: {text:?}", path.display())),
        }
    })
    .await
}

/// Whether a process with this pid exists (zombies included).
pub fn process_exists(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Runs a module whose exec is long (about 1.8 MB of arguments, which the
/// kernel copies into its memory before the spawning thread resumes) and
/// checks that its recorded wall time covers that exec: a single-threaded
/// process cannot use more CPU than wall time.
pub async fn assert_wall_time_covers_the_exec(dir: &TestDir) {
    dir.script("quick.sh", "exit 0");
    let big = "x".repeat(120 * 1024);
    let mut argv = vec!["./quick.sh"];
    argv.extend(std::iter::repeat_n(big.as_str(), 15));
    for _ in 0..3 {
        let outcome = run(dir.spec(&argv)).await;
        assert!(outcome.succeeded(), "{}", outcome.stderr_tail);
        let usage = outcome.usage.expect("the module's accounting (wait4 on its pidfd)");
        let cpu = usage.user_cpu + usage.system_cpu;
        // The accounting is in microseconds.
        assert!(
            outcome.duration + Duration::from_micros(100) >= cpu,
            "recorded wall time {:?} is below the module's CPU time {cpu:?}: the clock started after the exec",
            outcome.duration
        );
    }
}
