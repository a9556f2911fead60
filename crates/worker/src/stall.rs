//! The stall watch: a module with `stall_secs` that writes no byte on
//! stdout or stderr and does not grow its output file for that long is
//! marked stalled (visibly, in the record, and in the worker's log); with
//! `"on_stall": "kill"` it is stopped and the step handled as a failure,
//! whose retries apply. When it writes again, the mark is lifted. A module
//! without `stall_secs` is not watched at all.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// When the module last wrote, as the log sink sees it.
pub struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last write.
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Called for every read of the module's pipes.
    pub fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

/// What one look decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    Quiet,
    /// Silent for at least `stall_secs`, and not marked yet.
    Stalled(Duration),
    /// Marked, and it wrote again.
    Resumed,
}

/// One execution's watch.
pub struct Watch {
    stall: Duration,
    output: Option<PathBuf>,
    last_output: Option<(u64, SystemTime)>,
    grew_at: Instant,
    stalled: bool,
}

impl Watch {
    pub fn new(stall: Duration, output: Option<PathBuf>) -> Watch {
        let last_output = output.as_deref().and_then(size_and_time);
        Watch {
            stall,
            output,
            last_output,
            grew_at: Instant::now(),
            stalled: false,
        }
    }

    /// How often to look: often enough to mark a stall within a tenth of
    /// its bound (at most every 5 s, at least every 100 ms).
    pub fn every(&self) -> Duration {
        (self.stall / 10).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Looks at the module's output and its output file now.
    pub fn look(&mut self, activity: &Activity, now: Instant) -> Look {
        if let Some(path) = &self.output {
            let seen = size_and_time(path);
            if seen.is_some() && seen != self.last_output {
                self.last_output = seen;
                self.grew_at = now;
            }
        }
        let quiet = now.saturating_duration_since(activity.last().max(self.grew_at));
        match (self.stalled, quiet >= self.stall) {
            (false, true) => {
                self.stalled = true;
                Look::Stalled(quiet)
            }
            (true, false) => {
                self.stalled = false;
                Look::Resumed
            }
            _ => Look::Quiet,
        }
    }
}

fn size_and_time(path: &std::path::Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_past_the_bound_is_a_stall_once_and_output_lifts_it() {
        let activity = Activity::new();
        let mut w = Watch::new(Duration::from_millis(300), None);
        let t0 = Instant::now();
        assert_eq!(w.look(&activity, t0 + Duration::from_millis(100)), Look::Quiet);
        assert!(matches!(
            w.look(&activity, t0 + Duration::from_millis(400)),
            Look::Stalled(_)
        ));
        assert_eq!(
            w.look(&activity, t0 + Duration::from_millis(500)),
            Look::Quiet,
            "marked once"
        );
        activity.touch();
        assert_eq!(w.look(&activity, Instant::now()), Look::Resumed);
    }

    #[test]
    fn a_growing_output_file_counts_as_activity() {
        let path = std::env::temp_dir().join(format!("stall-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "a").unwrap();
        let activity = Activity::new();
        let mut w = Watch::new(Duration::from_millis(300), Some(path.clone()));
        std::fs::write(&path, "ab").unwrap();
        let later = Instant::now() + Duration::from_millis(200);
        assert_eq!(w.look(&activity, later), Look::Quiet);
        // 200 ms after the growth: not yet 300 ms of silence.
        assert_eq!(w.look(&activity, later + Duration::from_millis(200)), Look::Quiet);
        assert!(matches!(
            w.look(&activity, later + Duration::from_millis(400)),
            Look::Stalled(_)
        ));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn the_look_interval_follows_the_bound() {
        assert_eq!(
            Watch::new(Duration::from_secs(600), None).every(),
            Duration::from_secs(5)
        );
        assert_eq!(
            Watch::new(Duration::from_secs(2), None).every(),
            Duration::from_millis(200)
        );
        assert_eq!(
            Watch::new(Duration::from_millis(500), None).every(),
            Duration::from_millis(100)
        );
    }
}
