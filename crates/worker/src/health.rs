//! The worker's health as another process sees it: a probe (Kubernetes'
//! exec probes, Compose's healthcheck) cannot ask the worker anything, so
//! with `--health-file PATH` the worker rewrites PATH at every heartbeat tick
//! with a [`Report`], and `scheduler health` judges it with [`verdict`].
//!
//! Healthy means: the last heartbeat reached the database and the consumer
//! holds a broker connection. `healthy_at` is the last tick at which both
//! held; the probe fails once it is older than the reconnect budget (two
//! leases by default). Past one lease without a heartbeat the worker has
//! already stopped its modules (`heartbeat.rs`), so restarting it then
//! loses nothing; a broker connection is retried at least every 15 s
//! (`worker::reconnect`), so by then the worker's own reconnects have failed
//! several times and a fresh process is the next thing to try. A worker that
//! is hung writes nothing: its report ages and the probe fails the same way.
//!
//! Times here are the wall clock (seconds since the Unix epoch), unlike the
//! worker's own timers ([`crate::Clock`]): the reader is another process.
//! The decision is the pure [`verdict`], tested with times given to it.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// What the health file holds (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub worker_id: Uuid,
    pub pid: u32,
    /// When this report was written.
    pub written_at: f64,
    /// The last tick at which the database and the broker were both reached.
    pub healthy_at: f64,
    /// Since when heartbeats fail; `None`: the last one succeeded.
    pub database_lost_at: Option<f64>,
    /// Since when the broker connection is lost; `None`: connected.
    pub broker_lost_at: Option<f64>,
    /// Shutting down: no new work, running modules finishing.
    pub draining: bool,
    /// The worker's lease, in seconds: the default budget is two of them.
    pub lease_secs: f64,
}

/// What the worker knows of its connections, updated where they succeed
/// or fail (the heartbeat, the consume loop).
#[derive(Debug)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    healthy_at: f64,
    database_lost_at: Option<f64>,
    broker_lost_at: Option<f64>,
}

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Health {
    pub fn new(now: SystemTime) -> Health {
        Health {
            state: Mutex::new(State {
                healthy_at: unix(now),
                database_lost_at: None,
                broker_lost_at: None,
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A heartbeat succeeded (`ok`) or failed at `now`.
    pub fn database(&self, ok: bool, now: SystemTime) {
        self.with(|s| mark(&mut s.database_lost_at, ok, now));
    }

    /// The broker connection was lost (`ok == false`) or is back.
    pub fn broker(&self, ok: bool, now: SystemTime) {
        self.with(|s| mark(&mut s.broker_lost_at, ok, now));
    }

    /// The report to write at `now`; a tick with both reachable moves
    /// `healthy_at` to `now`.
    pub fn report(&self, worker_id: Uuid, draining: bool, lease_secs: f64, now: SystemTime) -> Report {
        let now = unix(now);
        let s = self.with(|s| {
            if s.database_lost_at.is_none() && s.broker_lost_at.is_none() {
                s.healthy_at = now;
            }
            *s
        });
        Report {
            worker_id,
            pid: std::process::id(),
            written_at: now,
            healthy_at: s.healthy_at,
            database_lost_at: s.database_lost_at,
            broker_lost_at: s.broker_lost_at,
            draining,
            lease_secs,
        }
    }
}

/// The first failure sets the time; a success clears it.
fn mark(lost_at: &mut Option<f64>, ok: bool, now: SystemTime) {
    match ok {
        true => *lost_at = None,
        false => *lost_at = lost_at.or(Some(unix(now))),
    }
}

/// Writes `report` to `path` whole (a temporary file renamed over it), so a
/// probe never reads half of one.
pub async fn write(path: &Path, report: &Report) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let json = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    tokio::fs::write(&tmp, json).await?;
    tokio::fs::rename(&tmp, path).await
}

/// Removes the file of a worker that is not running (at start, a previous
/// run's; at exit, its own), so a probe never trusts a stale one.
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove the health file"),
    }
}

/// Whether the worker that wrote `report` is healthy at `now`: it reached
/// its database and its broker within `budget` seconds (default: two of
/// its leases). `Ok` and `Err` both carry the sentence a probe prints.
pub fn verdict(report: &Report, now: f64, budget: Option<f64>) -> Result<String, String> {
    let budget = budget.unwrap_or(2.0 * report.lease_secs);
    let ago = |t: f64| (now - t).max(0.0);
    let mut troubles = Vec::new();
    if let Some(t) = report.database_lost_at {
        troubles.push(format!("database unreachable for {:.0} s", ago(t)));
    }
    if let Some(t) = report.broker_lost_at {
        troubles.push(format!("broker unreachable for {:.0} s", ago(t)));
    }
    if ago(report.written_at) > budget {
        troubles.push(format!(
            "no report for {:.0} s (worker pid {} hung or gone)",
            ago(report.written_at),
            report.pid
        ));
    }
    let draining = if report.draining { ", draining" } else { "" };
    if ago(report.healthy_at) <= budget {
        let mut line = format!(
            "healthy: database and broker reached {:.0} s ago{draining}",
            ago(report.healthy_at)
        );
        if !troubles.is_empty() {
            line += &format!(" ({}; budget {budget:.0} s)", troubles.join(", "));
        }
        return Ok(line);
    }
    if troubles.is_empty() {
        troubles.push(format!("not healthy for {:.0} s", ago(report.healthy_at)));
    }
    Err(format!(
        "unhealthy: {}, past the {budget:.0} s budget{draining}",
        troubles.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T0: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(T0 + secs)
    }

    fn now(secs: u64) -> f64 {
        (T0 + secs) as f64
    }

    #[test]
    fn a_worker_that_reaches_both_is_healthy_and_its_report_says_when() {
        let h = Health::new(at(0));
        h.database(true, at(10));
        let r = h.report(Uuid::nil(), false, 30.0, at(10));
        assert_eq!(r.healthy_at, now(10));
        assert_eq!(
            verdict(&r, now(12), None),
            Ok("healthy: database and broker reached 2 s ago".into())
        );
    }

    #[test]
    fn a_lost_database_fails_the_probe_only_past_the_budget_of_two_leases() {
        let h = Health::new(at(0));
        h.database(false, at(10));
        h.database(false, at(20)); // the first failure is the one that counts
        let r = h.report(Uuid::nil(), false, 30.0, at(60));
        assert_eq!(r.healthy_at, now(0));
        assert_eq!(r.database_lost_at, Some(now(10)));
        assert!(
            verdict(&r, now(60), None)
                .unwrap()
                .contains("database unreachable for 50 s")
        );
        assert_eq!(
            verdict(&r, now(61), None),
            Err("unhealthy: database unreachable for 51 s, past the 60 s budget".into())
        );
        assert!(verdict(&r, now(61), Some(120.0)).is_ok(), "a budget given wins");
    }

    #[test]
    fn a_lost_broker_counts_like_a_lost_database_and_its_return_heals() {
        let h = Health::new(at(0));
        h.broker(false, at(5));
        let r = h.report(Uuid::nil(), false, 30.0, at(70));
        let e = verdict(&r, now(70), None).unwrap_err();
        assert!(e.contains("broker unreachable for 65 s"), "{e}");
        h.broker(true, at(71));
        let r = h.report(Uuid::nil(), false, 30.0, at(72));
        assert_eq!(r.broker_lost_at, None);
        assert!(verdict(&r, now(72), None).is_ok());
    }

    #[test]
    fn a_report_nobody_rewrites_goes_stale() {
        let h = Health::new(at(0));
        let r = h.report(Uuid::nil(), true, 30.0, at(0));
        assert!(verdict(&r, now(60), None).unwrap().ends_with(", draining"));
        let e = verdict(&r, now(61), None).unwrap_err();
        assert!(e.contains("no report for 61 s"), "{e}");
    }

    #[test]
    fn a_clock_moved_back_is_not_read_as_a_negative_age() {
        let h = Health::new(at(100));
        let r = h.report(Uuid::nil(), false, 30.0, at(100));
        assert!(verdict(&r, now(50), None).unwrap().contains("reached 0 s ago"));
    }

    #[test]
    fn a_report_reads_back_as_written() {
        let h = Health::new(at(0));
        h.broker(false, at(3));
        let r = h.report(Uuid::now_v7(), false, 30.0, at(4));
        let back: Report = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
