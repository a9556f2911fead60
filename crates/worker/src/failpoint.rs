//! Failpoints: crash the worker on purpose at a named point, to test that
//! every crash window named in ARCHITECTURE.md is closed. Off unless the
//! environment variable `SCHEDULER_FAILPOINTS` lists the point (comma
//! separated). A hit aborts the process at once, as a SIGKILL or an OOM kill
//! would: no destructor, no cleanup, no goodbye to the broker or database.

use std::sync::OnceLock;

/// After a step is claimed (committed), before its delivery is acknowledged.
pub const AFTER_CLAIM: &str = "after-claim";
/// After the module was spawned, before its pid is recorded.
pub const AFTER_SPAWN: &str = "after-spawn";
/// After a step's result is committed, before what follows is published.
pub const AFTER_COMMIT: &str = "after-commit";
/// After what follows a step is published (and confirmed), before the
/// worker notes it and carries on.
pub const AFTER_PUBLISH: &str = "after-publish";

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("SCHEDULER_FAILPOINTS")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Aborts the process if `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|a| a == name) {
        eprintln!("failpoint {name}: aborting the worker");
        std::process::abort();
    }
}
