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

/// Not a crash: the worker starts without its keeper, as if the keeper
/// had been killed with it, to test recovery's own orphan search.
pub const NO_KEEPER: &str = "no-keeper";

/// Not a crash: the first delivery is dropped on the floor without an ack,
/// as a bug could: it keeps its prefetch credit, so a worker with one slot
/// receives nothing more. Tests that the stall watchdog rebuilds the consumer.
pub const SWALLOW_DELIVERY: &str = "swallow-delivery";

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

/// Whether `name` is listed in `SCHEDULER_FAILPOINTS`.
pub fn is_armed(name: &str) -> bool {
    armed().iter().any(|a| a == name)
}

/// True the first time it is asked about an armed `name`, false after.
pub fn once(name: &str) -> bool {
    static FIRED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    if !is_armed(name) {
        return false;
    }
    let mut fired = FIRED.lock().unwrap_or_else(|p| p.into_inner());
    if fired.iter().any(|f| f == name) {
        return false;
    }
    fired.push(name.to_string());
    true
}

/// Aborts the process if `name` is armed.
pub fn hit(name: &str) {
    if is_armed(name) {
        eprintln!("failpoint {name}: aborting the worker");
        std::process::abort();
    }
}
