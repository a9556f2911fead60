//! A sequence's recent runs as a bar chart of their durations, oldest on
//! the left, newest on the right, one bar per run in its state's colour
//! (a failure also marked with a cross above its bar), the median of the
//! successful ones as a dashed line; and the figures said beside it
//! (success rate, median and 95th percentile).

use super::{pct, step_ms};
use crate::view;
use chrono::{DateTime, Utc};
use scheduler_tracker::RunSummary;

/// The plot's height (px) and the room above it for the failure marks.
const PLOT: u32 = 160;
const TOP: u32 = 18;
/// At least this many slots across, so a few runs make narrow bars at the
/// right (newest) end rather than a few wide blocks.
const MIN_SLOTS: usize = 20;
/// A run that never started still gets a stub this tall (px).
const STUB: u32 = 3;

pub(crate) struct DurationChart {
    pub height: u32,
    /// The baseline (px).
    pub base: u32,
    pub bars: Vec<Bar>,
    pub ticks: Vec<YTick>,
    /// The median successful duration: its line's y and its value
    /// ("2 min 47 s"). The value is said in the legend under the chart, not
    /// beside the line: at the plot's left edge it sat on the line of a
    /// y-axis label whenever the median came near a tick ("3 min median
    /// 2 min 47 s"), and anywhere across it covers bars.
    pub median: Option<(u32, String)>,
    /// When the oldest and the newest run shown were created ("12 d ago").
    pub oldest: String,
    pub newest: String,
}

pub(crate) struct Bar {
    /// The run's whole slot, full height: the band that answers a hover.
    pub slot_x: String,
    pub slot_w: String,
    pub x: String,
    pub w: String,
    /// The bar's centre, for its failure mark.
    pub mid: String,
    pub y: u32,
    pub h: u32,
    /// The failure mark's baseline (px), above the bar.
    pub mark_y: u32,
    pub state: String,
    pub failed: bool,
    /// Longer than the chart's top (a run still going): cut and marked.
    pub cut: bool,
    pub href: String,
    pub title: String,
}

pub(crate) struct YTick {
    pub y: u32,
    /// Where the label's baseline sits (px).
    pub text_y: u32,
    pub label: String,
}

/// What the chart's runs say, in figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stats {
    pub shown: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Success rate over the runs that succeeded or failed ("96 %");
    /// `None` when none did.
    pub rate: Option<String>,
    /// Of the successful runs' durations (nearest rank).
    pub median_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

/// The `q` quantile of `sorted` by nearest rank.
pub(crate) fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl Stats {
    /// Over `runs` (any order).
    pub fn new(runs: &[RunSummary]) -> Stats {
        let count = |s: &str| runs.iter().filter(|r| r.state == s).count();
        let (succeeded, failed) = (count("succeeded"), count("failed"));
        let mut ok: Vec<i64> = runs
            .iter()
            .filter(|r| r.state == "succeeded")
            .filter_map(|r| r.duration_ms)
            .collect();
        ok.sort_unstable();
        Stats {
            shown: runs.len(),
            succeeded,
            failed,
            rate: (succeeded + failed > 0).then(|| {
                let p = succeeded as f64 * 100.0 / (succeeded + failed) as f64;
                // Never round a failure away: 99.9 % is not 100 %.
                if failed > 0 && p > 99.0 {
                    format!("{p:.1} %")
                } else {
                    format!("{} %", p.round())
                }
            }),
            median_ms: quantile(&ok, 0.5),
            p95_ms: quantile(&ok, 0.95),
        }
    }
}

impl DurationChart {
    /// `runs` newest first, as the record lists them.
    pub fn new(runs: &[RunSummary], median_ms: Option<i64>, now: DateTime<Utc>) -> DurationChart {
        // The scale is the finished runs' (a run still going, perhaps
        // stuck, would flatten the others): a longer bar is cut at the top
        // and marked.
        let finished = |r: &&RunSummary| !matches!(r.state.as_str(), "running" | "queued" | "waiting");
        let longest = runs
            .iter()
            .filter(finished)
            .filter_map(|r| r.duration_ms)
            .max()
            .or_else(|| runs.iter().filter_map(|r| r.duration_ms).max())
            .unwrap_or(0)
            .max(1);
        let step = step_ms(longest, 4);
        let top_ms = step * ((longest + step - 1) / step);
        let base = TOP + PLOT;
        let y_of = |ms: i64| base - ((ms.min(top_ms) as f64 / top_ms as f64) * PLOT as f64).round() as u32;
        let slots = runs.len().max(MIN_SLOTS);
        let slot = 100.0 / slots as f64;
        let first = slots - runs.len();
        let bars = runs
            .iter()
            .rev()
            .enumerate()
            .map(|(i, r)| {
                let left = (first + i) as f64 * slot;
                let h = match r.duration_ms {
                    Some(ms) => (base - y_of(ms)).max(2),
                    None => STUB,
                };
                let mut title = format!("{} · {}", r.state, view::ago(r.created_at, now));
                match r.duration_ms {
                    Some(ms) if r.state == "running" => {
                        title.push_str(&format!(" · running for {}", view::duration(ms)))
                    }
                    Some(ms) => title.push_str(&format!(" · took {}", view::duration(ms))),
                    None => title.push_str(" · never started"),
                }
                if let Some(step) = r.failed_step {
                    title.push_str(&format!(
                        " · failed at step {}: {}",
                        step + 1,
                        view::snippet(r.error.as_deref().unwrap_or(""), 100)
                    ));
                }
                title.push_str(" · open the run");
                Bar {
                    slot_x: pct(left),
                    slot_w: pct(slot),
                    x: pct(left + slot * 0.15),
                    w: pct(slot * 0.7),
                    mid: pct(left + slot * 0.5),
                    y: base - h,
                    h,
                    mark_y: (base - h).saturating_sub(4),
                    state: r.state.clone(),
                    failed: r.state == "failed",
                    cut: r.duration_ms.is_some_and(|ms| ms > top_ms),
                    href: format!("/runs/{}", r.id),
                    title,
                }
            })
            .collect();
        let ticks = (0..=top_ms / step)
            .map(|k| {
                let y = y_of(k * step);
                YTick {
                    y,
                    text_y: y + 4,
                    label: super::elapsed(k * step),
                }
            })
            .collect();
        DurationChart {
            // Room under the baseline for the "0" label centred on it
            // (its descent was cut off at base + 2).
            height: base + 8,
            base,
            bars,
            ticks,
            median: median_ms.map(|m| (y_of(m), view::duration(m))),
            // One run: one label, at the right.
            oldest: runs
                .last()
                .filter(|_| runs.len() > 1)
                .map(|r| view::ago(r.created_at, now))
                .unwrap_or_default(),
            newest: runs.first().map(|r| view::ago(r.created_at, now)).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn run(i: i64, state: &str, ms: Option<i64>) -> RunSummary {
        RunSummary {
            id: uuid::Uuid::from_u128(i as u128),
            sequence: "nightly".into(),
            state: state.into(),
            trigger: "cron".into(),
            queue: "etl".into(),
            step_count: 3,
            current_step: None,
            failed_step: (state == "failed").then_some(1),
            error: (state == "failed").then(|| "step 2 (load) exited with code 3".into()),
            created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(i),
            started_at: None,
            finished_at: None,
            duration_ms: ms,
            retry_at: None,
            note: None,
            waiting_on: None,
            schedule: None,
            logical_date: None,
        }
    }

    #[test]
    fn figures_count_successes_against_failures_and_time_the_successes() {
        let runs: Vec<RunSummary> = (1..=20)
            .map(|i| match i {
                7 => run(i, "failed", Some(500)),
                9 => run(i, "canceled", None),
                _ => run(i, "succeeded", Some(i * 1000)),
            })
            .collect();
        let s = Stats::new(&runs);
        assert_eq!((s.shown, s.succeeded, s.failed), (20, 18, 1));
        assert_eq!(s.rate.as_deref(), Some("95 %"));
        // 1..=20 s without 7 and 9: the 9th of 18 is 11 s, the 18th 20 s.
        assert_eq!((s.median_ms, s.p95_ms), (Some(11_000), Some(20_000)));
        let almost: Vec<RunSummary> = (0..1000)
            .map(|i| run(i, if i == 0 { "failed" } else { "succeeded" }, Some(1)))
            .collect();
        assert_eq!(Stats::new(&almost).rate.as_deref(), Some("99.9 %"));
        assert_eq!(Stats::new(&[]).rate, None);
        assert_eq!(quantile(&[5], 0.95), Some(5));
    }

    #[test]
    fn bars_run_oldest_to_newest_scaled_to_a_round_top_with_failures_marked() {
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap();
        // Newest first, as the record lists them.
        let runs = vec![
            run(4, "running", Some(900_000)),
            run(3, "running", Some(20_000)),
            run(2, "failed", Some(5_000)),
            run(1, "succeeded", Some(37_000)),
            run(0, "skipped", None),
        ];
        let c = DurationChart::new(&runs, Some(37_000), now);
        // 37 s: steps of 10 s up to 40 s.
        let labels: Vec<&str> = c.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0", "10 s", "20 s", "30 s", "40 s"]);
        assert_eq!(c.ticks[4].y, TOP);
        assert_eq!(c.bars.len(), 5);
        // 20 slots, the five runs in the last five, oldest first.
        assert_eq!(c.bars[0].state, "skipped");
        assert_eq!((c.bars[0].x.as_str(), c.bars[0].h), ("75.750%", STUB));
        // A run going on for 15 min is cut at the finished runs' top.
        assert!(c.bars[4].cut && !c.bars[3].cut);
        assert_eq!(c.bars[4].h, PLOT);
        assert_eq!(c.bars[2].state, "failed");
        assert!(c.bars[2].failed);
        assert!(
            c.bars[2]
                .title
                .contains("failed at step 2: step 2 (load) exited with code 3")
        );
        assert_eq!(c.bars[1].h, 148, "37 of 40 s of 160 px");
        assert_eq!(c.bars[3].mid, "92.500%");
        assert!(c.bars[3].title.contains("running for 20.0 s"));
        assert_eq!(c.median, Some((TOP + 12, "37.0 s".into())));
        assert_eq!((c.oldest.as_str(), c.newest.as_str()), ("1 d ago", "20 h ago"));
        let one = DurationChart::new(&runs[..1], None, now);
        assert_eq!((one.oldest.as_str(), one.newest.as_str()), ("", "20 h ago"));
    }
}
