//! Stopping and starting the real local services, for outage tests. Only a
//! test binary of its own may use these: every other test of the binary
//! would see the outage too.

use std::process::Command;

fn run(program: &str, args: &[&str]) {
    let ok = Command::new(program)
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{program} {args:?} failed");
}

pub fn restart_rabbitmq() {
    run("rabbitmqctl", &["-q", "stop_app"]);
    run("rabbitmqctl", &["-q", "start_app"]);
}

fn postgres_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql (Debian's PostgreSQL)")
        .next()
        .expect("a PostgreSQL cluster")
        .unwrap()
        .file_name()
        .to_string_lossy()
        .to_string()
}

/// `action`: "stop", "start" or "restart"; stops are immediate (as a crash).
/// A checkpoint first: crash recovery then replays only what the test
/// wrote, not every write since the last checkpoint (a large fill by
/// another test or benchmark made the restart outlast a worker's lease).
pub fn postgres(action: &str) {
    if action != "start" {
        let _ = Command::new("psql")
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                "CHECKPOINT",
            ])
            .status();
    }
    let version = postgres_version();
    let mut args = vec!["--skip-systemctl-redirect", &version, "main", action];
    if action != "start" {
        args.extend(["-m", "immediate"]);
    }
    run("pg_ctlcluster", &args);
}

/// Stops PostgreSQL (immediately, as a crash) until the returned guard is
/// dropped: it is started again even if an assertion fails while it is down.
#[must_use = "PostgreSQL starts again when this guard is dropped"]
pub fn postgres_down() -> PostgresDown {
    postgres("stop");
    PostgresDown
}

pub struct PostgresDown;

impl Drop for PostgresDown {
    fn drop(&mut self) {
        postgres("start");
    }
}
