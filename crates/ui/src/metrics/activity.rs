//! The part of `/metrics` that says what happened lately, from
//! [`scheduler_tracker::Store::activity`]: runs ended by sequence and
//! state, retries, stalls, step duration and peak memory by module (all
//! over the last hour), steps stalled now, and every missed and skipped
//! slot per schedule.
//!
//! The windowed families are gauges over the record, not counters kept by
//! this process (any replica answers the same, a restart loses nothing):
//! compare or sum them, never `rate()` them; a histogram's buckets feed
//! `histogram_quantile` as they are. The slot families are real counters
//! (the ledger is never pruned). Labels: sequence, module and schedule
//! names, bounded by the project's definitions; never a run id.

use super::escape;
use crate::AppState;
use crate::error::ApiResult;
use scheduler_tracker::ModuleHistogram;
use std::fmt::Write;
use std::time::Duration;

/// The window of every family below but the slot counters.
pub(crate) const WINDOW: Duration = Duration::from_secs(3600);
/// Step-duration bucket bounds (seconds).
const DURATION_BOUNDS_SECS: &[i64] = &[1, 5, 15, 30, 60, 300, 900, 1800, 3600];
/// Peak-memory bucket bounds (MiB).
const MEMORY_BOUNDS_MIB: &[i64] = &[16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384];
/// The final states a run ends in, each given for every sequence.
const FINAL: &[&str] = &["succeeded", "failed", "canceled", "skipped"];

pub(crate) async fn render(state: &AppState, out: &mut String) -> ApiResult<()> {
    let bounds_ms: Vec<i64> = DURATION_BOUNDS_SECS.iter().map(|s| s * 1000).collect();
    let bounds_kib: Vec<i64> = MEMORY_BOUNDS_MIB.iter().map(|m| m * 1024).collect();
    let a = state.store.activity(WINDOW, &bounds_ms, &bounds_kib).await?;
    let w = WINDOW.as_secs();

    // Every defined sequence and every final state, 0 included, so a
    // failure rate has a denominator and a quiet sequence reads 0.
    let mut finished = a.runs_finished.clone();
    for seq in state.project.sequence_names().unwrap_or_default() {
        for s in FINAL {
            if !finished.iter().any(|(q, st, _)| *q == seq && st == s) {
                finished.push((seq.clone(), s.to_string(), 0));
            }
        }
    }
    finished.sort();
    pairs(
        out,
        "scheduler_runs_finished",
        &format!(
            "Runs that ended in the last {w} s, by sequence and final state (a window over the record: compare, do not rate())."
        ),
        ("sequence", "state"),
        &finished,
    );
    pairs(
        out,
        "scheduler_step_retries",
        &format!("Retry attempts of failed steps queued in the last {w} s, by sequence and module."),
        ("sequence", "module"),
        &a.retries,
    );
    pairs(
        out,
        "scheduler_step_stalls",
        &format!(
            "Steps the stall watch marked stalled in the last {w} s (no output for their stall_secs), by sequence and module."
        ),
        ("sequence", "module"),
        &a.stalls,
    );
    pairs(
        out,
        "scheduler_executions_stalled",
        "Steps running now that their stall watch marks stalled, by sequence and module.",
        ("sequence", "module"),
        &a.stalled_now,
    );
    histogram(
        out,
        "scheduler_step_duration_seconds",
        &format!("Durations of the step executions that finished in the last {w} s, by module."),
        &a.durations,
        1000.0,
    );
    histogram(
        out,
        "scheduler_step_peak_memory_bytes",
        &format!(
            "Peak resident memory of the step executions that finished in the last {w} s (the module and the children it waited for, as the kernel accounted them), by module."
        ),
        &a.peak_memory,
        1.0 / 1024.0,
    );
    let missed: Vec<(String, i64)> = a.slots.iter().map(|(s, m, _)| (s.clone(), *m)).collect();
    let skipped: Vec<(String, i64)> = a.slots.iter().map(|(s, _, k)| (s.clone(), *k)).collect();
    counter(
        out,
        "scheduler_slots_missed_total",
        "Schedule slots that passed while no scheduler ran and were outside the catch-up policy or window, by schedule.",
        &missed,
    );
    counter(
        out,
        "scheduler_slots_skipped_total",
        "Schedule slots whose run the sequence's concurrency policy turned away (on_conflict skip), by schedule.",
        &skipped,
    );
    Ok(())
}

/// A gauge with two labels.
fn pairs(out: &mut String, name: &str, help: &str, labels: (&str, &str), rows: &[(String, String, i64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (a, b, n) in rows {
        let _ = writeln!(
            out,
            "{name}{{{}=\"{}\",{}=\"{}\"}} {n}",
            labels.0,
            escape(a),
            labels.1,
            escape(b)
        );
    }
}

fn counter(out: &mut String, name: &str, help: &str, rows: &[(String, i64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (schedule, n) in rows {
        let _ = writeln!(out, "{name}{{schedule=\"{}\"}} {n}", escape(schedule));
    }
}

/// A histogram per module; the record's values are divided by `per_unit`
/// (ms -> s: 1000; KiB -> bytes: 1/1024).
fn histogram(out: &mut String, name: &str, help: &str, modules: &[ModuleHistogram], per_unit: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for h in modules {
        let m = escape(&h.module);
        for (bound, n) in &h.le {
            let _ = writeln!(
                out,
                "{name}_bucket{{module=\"{m}\",le=\"{}\"}} {n}",
                *bound as f64 / per_unit
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{module=\"{m}\",le=\"+Inf\"}} {count}\n{name}_sum{{module=\"{m}\"}} {}\n{name}_count{{module=\"{m}\"}} {count}",
            h.sum as f64 / per_unit,
            count = h.count
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_reads_in_base_units_with_a_module_label() {
        let mut out = String::new();
        let h = ModuleHistogram {
            module: "lo\"ad".into(),
            le: vec![(1000, 2), (5000, 3)],
            count: 4,
            sum: 12_500,
        };
        histogram(&mut out, "x_seconds", "X.", &[h], 1000.0);
        assert_eq!(
            out,
            "# HELP x_seconds X.\n# TYPE x_seconds histogram\n\
             x_seconds_bucket{module=\"lo\\\"ad\",le=\"1\"} 2\n\
             x_seconds_bucket{module=\"lo\\\"ad\",le=\"5\"} 3\n\
             x_seconds_bucket{module=\"lo\\\"ad\",le=\"+Inf\"} 4\n\
             x_seconds_sum{module=\"lo\\\"ad\"} 12.5\n\
             x_seconds_count{module=\"lo\\\"ad\"} 4\n"
        );
        let mut mem = String::new();
        let m = ModuleHistogram {
            module: "m".into(),
            le: vec![(16_384, 1)],
            count: 1,
            sum: 2048,
        };
        histogram(&mut mem, "y_bytes", "Y.", &[m], 1.0 / 1024.0);
        assert!(
            mem.contains("y_bytes_bucket{module=\"m\",le=\"16777216\"} 1\n"),
            "{mem}"
        );
        assert!(mem.contains("y_bytes_sum{module=\"m\"} 2097152\n"), "{mem}");
    }
}
