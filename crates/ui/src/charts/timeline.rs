//! A run's timeline: one bar per execution (and one for the run itself) on
//! a time axis shared by all of them, from when the run was recorded to
//! when it ended (or now). A bar shows its execution's life: the retry
//! delay it waited (hatched), its wait in the queue (pale), the module
//! running (its state's colour), and the time it spent stalled. The gaps
//! between steps are the empty stretches between one bar's end and the
//! next one's start.
//!
//! A run of a thousand steps keeps a row per execution, only thinner
//! (labels every so many rows then), so its slow steps still stand out.

use super::{elapsed, pct, step_ms};
use crate::view;
use chrono::{DateTime, Utc};
use scheduler_tracker::{ExecutionView, RunDetail};

/// The tallest and shortest row (px), and the height rows share before
/// they get thinner.
const ROW_MAX: f64 = 22.0;
const ROW_MIN: f64 = 2.0;
const ROWS_BUDGET: f64 = 1600.0;
/// The band above the rows that holds the axis labels (px).
const AXIS: u32 = 22;
/// Rows at least this tall carry their own label.
const LABELLED_FROM: u32 = 16;
/// A running bar is never thinner than this (% of the width), so a 5 ms
/// step in an hour-long run still shows.
const MIN_RUN_WIDTH: f64 = 0.25;

pub(crate) struct Timeline {
    /// Total height of the chart (px).
    pub height: u32,
    pub rows: Vec<Row>,
    pub ticks: Vec<Tick>,
    /// Every row has a label beside it; otherwise `marks` label some.
    pub labelled: bool,
    pub marks: Vec<Mark>,
    /// Where now is, while the run goes on.
    pub now_x: Option<String>,
    /// When the axis starts (the run recorded), exact UTC.
    pub start: String,
    /// "4 min 12 s from creation to end: steps ran 3 min 50 s, waited ..."
    pub summary: String,
}

pub(crate) struct Row {
    /// Top of the row (px) and its height: the band that answers a hover.
    pub top: u32,
    pub row_h: u32,
    /// Top of the row's bar (px).
    pub y: u32,
    pub bar_h: u32,
    /// The label's baseline (px).
    pub text_y: u32,
    /// "3 load", "3 load · try 2", "run".
    pub label: String,
    /// The step's card on the page (`#step-3`), or the run's head.
    pub href: String,
    /// Everything the bar means, in words (the SVG `<title>`).
    pub title: String,
    pub segments: Vec<Segment>,
}

pub(crate) struct Segment {
    pub x: String,
    pub w: String,
    /// `tl-delay`, `tl-queue`, `tl-run s-<state>`, `tl-stall`.
    pub class: String,
}

pub(crate) struct Tick {
    pub x: String,
    pub label: String,
    /// Every other tick: its label is left out where the chart is narrow.
    pub minor: bool,
    /// `start`, `middle` or `end`: labels at the edges stay inside.
    pub anchor: &'static str,
}

pub(crate) struct Mark {
    pub y: u32,
    pub label: String,
}

/// The axis: times as percentages of the run's span.
struct Axis {
    t0: DateTime<Utc>,
    span_ms: f64,
}

impl Axis {
    fn at(&self, t: DateTime<Utc>) -> f64 {
        ((t - self.t0).num_milliseconds() as f64 / self.span_ms * 100.0).clamp(0.0, 100.0)
    }
    /// A segment from `a` to `b`, at least `min` wide; `None` when empty.
    fn segment(&self, a: DateTime<Utc>, b: DateTime<Utc>, min: f64, class: String) -> Option<Segment> {
        let (x0, x1) = (self.at(a), self.at(b));
        if x1 <= x0 && min == 0.0 {
            return None;
        }
        let w = (x1 - x0).max(min);
        // A minimum width grows leftwards at the right edge.
        let x = x0.min(100.0 - w);
        Some(Segment {
            x: pct(x),
            w: pct(w),
            class,
        })
    }
}

fn is_live(state: &str) -> bool {
    matches!(state, "waiting" | "queued" | "running")
}

/// When an execution stopped occupying its row: its end, or `now` while it
/// runs or waits, or (a worker lost before recording it) its start plus
/// what was measured.
fn exec_end(e: &ExecutionView, now: DateTime<Utc>) -> DateTime<Utc> {
    match (e.finished_at, e.state.as_str()) {
        (Some(t), _) => t,
        (None, "running" | "queued") => now,
        (None, _) => e
            .started_at
            .zip(e.duration_ms)
            .map(|(s, d)| s + chrono::Duration::milliseconds(d))
            .unwrap_or(now),
    }
}

impl Timeline {
    pub fn new(d: &RunDetail, now: DateTime<Utc>) -> Timeline {
        let run = &d.run;
        let t0 = d
            .executions
            .iter()
            .map(|e| e.queued_at)
            .chain([run.created_at])
            .min()
            .unwrap_or(run.created_at);
        let end = if is_live(&run.state) {
            now
        } else {
            d.executions
                .iter()
                .map(|e| exec_end(e, now))
                .chain(run.finished_at)
                .max()
                .unwrap_or(now)
        }
        .max(t0);
        let span_ms = (end - t0).num_milliseconds().max(1);
        let axis = Axis {
            t0,
            span_ms: span_ms as f64,
        };

        let n = d.executions.len() + 1;
        let row_f = (ROWS_BUDGET / n as f64).clamp(ROW_MIN, ROW_MAX).floor();
        let row_h = row_f as u32;
        let bar_h = match row_h {
            h if h >= 10 => h - 8,
            h if h >= 4 => h - 1,
            h => h,
        };
        let labelled = row_h >= LABELLED_FROM;
        let row_top = |i: usize| AXIS + i as u32 * row_h;
        let mut rows = Vec::with_capacity(n);
        rows.push(run_row(d, &axis, now, row_top(0), row_h, bar_h));
        let mut prev_end: Option<(i32, DateTime<Utc>)> = None;
        let (mut ran, mut queued, mut delayed) = (0i64, 0i64, 0i64);
        for (i, e) in d.executions.iter().enumerate() {
            let r = exec_row(e, &axis, now, prev_end, row_top(i + 1), row_h, bar_h);
            ran += r.1;
            queued += r.2;
            delayed += r.3;
            rows.push(r.0);
            prev_end = Some((e.step, exec_end(e, now)));
        }

        let step = step_ms(span_ms, 5);
        let ticks = (0..=span_ms / step)
            .map(|k| {
                let x = (k * step) as f64 / span_ms as f64 * 100.0;
                Tick {
                    x: pct(x),
                    minor: k % 2 == 1,
                    label: if k == 0 {
                        "0".into()
                    } else {
                        format!("+{}", elapsed(k * step))
                    },
                    anchor: match x {
                        x if x < 4.0 => "start",
                        x if x > 94.0 => "end",
                        _ => "middle",
                    },
                }
            })
            .collect();
        let marks = if labelled {
            vec![]
        } else {
            // A label every `every` executions, about every 40 px.
            let every = [5usize, 10, 20, 25, 50, 100, 200, 250, 500]
                .into_iter()
                .find(|k| *k as u32 * row_h >= 40)
                .unwrap_or(1000);
            // By step number, on a step's first attempt.
            d.executions
                .iter()
                .enumerate()
                .filter(|(i, e)| *i == 0 || (e.attempt == 1 && (e.step as usize + 1).is_multiple_of(every)))
                .map(|(i, e)| Mark {
                    y: row_top(i + 1) + row_h / 2 + 4,
                    label: format!("step {}", e.step + 1),
                })
                .collect()
        };
        let summary = summary(span_ms, ran, queued, delayed, is_live(&run.state));
        Timeline {
            height: row_top(n) + 4,
            rows,
            ticks,
            labelled,
            marks,
            now_x: is_live(&run.state).then(|| pct(axis.at(now))),
            start: t0.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
            summary,
        }
    }
}

/// The run's own bar: waiting to start, then running until it ended.
fn run_row(d: &RunDetail, axis: &Axis, now: DateTime<Utc>, y: u32, row_h: u32, bar_h: u32) -> Row {
    let run = &d.run;
    let end = run.finished_at.unwrap_or(now);
    let mut segments = Vec::new();
    let started = run.started_at.unwrap_or(end);
    segments.extend(axis.segment(run.created_at, started, 0.0, "tl-queue".into()));
    if let Some(s) = run.started_at {
        segments.extend(axis.segment(s, end, MIN_RUN_WIDTH, format!("tl-run s-{}", run.state)));
    }
    let mut title = format!("the run: {}", run.state);
    if let Some(s) = run.started_at {
        title.push_str(&format!(
            " · waited {} to start · {} from start to {}",
            view::duration((s - run.created_at).num_milliseconds()),
            view::duration((end - s).num_milliseconds()),
            if run.finished_at.is_some() { "end" } else { "now" }
        ));
    } else {
        title.push_str(&format!(
            " · not started after {}",
            view::duration((end - run.created_at).num_milliseconds())
        ));
    }
    Row {
        top: y,
        row_h,
        y: y + (row_h - bar_h) / 2,
        bar_h,
        text_y: y + row_h / 2 + 4,
        label: "run".into(),
        href: "#run-body".into(),
        title,
        segments,
    }
}

/// An execution's bar, and how long it ran, waited in its queue and waited
/// for its retry delay (ms).
fn exec_row(
    e: &ExecutionView,
    axis: &Axis,
    now: DateTime<Utc>,
    prev: Option<(i32, DateTime<Utc>)>,
    y: u32,
    row_h: u32,
    bar_h: u32,
) -> (Row, i64, i64, i64) {
    let end = exec_end(e, now);
    let ms = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_milliseconds().max(0);
    let mut segments = Vec::new();
    let mut words = vec![format!("step {} · {} · attempt {}", e.step + 1, e.module, e.attempt)];
    if e.retry > 0 {
        words[0].push_str(&format!(" (retry {})", e.retry));
    }
    words.push(e.state.clone());
    // A retry waits for its delay, then for a worker.
    let due = e.due_at.filter(|d| *d > e.queued_at).map(|d| d.min(end));
    let ready = due.unwrap_or(e.queued_at);
    let mut delayed = 0;
    if let Some(d) = due {
        segments.extend(axis.segment(e.queued_at, d, 0.0, "tl-delay".into()));
        delayed = ms(e.queued_at, d);
        words.push(format!("retry delay {}", view::duration(delayed)));
    }
    let started = e.started_at.map(|s| s.min(end));
    let queue_end = started.unwrap_or(end);
    segments.extend(axis.segment(ready, queue_end, 0.0, "tl-queue".into()));
    let queued = ms(ready, queue_end);
    words.push(match started {
        Some(_) => format!("{} in the queue", view::duration(queued)),
        None => format!("queued for {}", view::duration(queued)),
    });
    let mut ran = 0;
    if let Some(s) = started {
        segments.extend(axis.segment(s, end, MIN_RUN_WIDTH, format!("tl-run s-{}", e.state)));
        ran = ms(s, end);
        words.push(format!("ran {}", view::duration(ran)));
    }
    if let Some(st) = e.stalled_at {
        segments.extend(axis.segment(st.max(started.unwrap_or(st)), end, MIN_RUN_WIDTH, "tl-stall".into()));
        words.push(format!("stalled (no output) from +{}", elapsed(ms(axis.t0, st))));
    }
    match (e.exit_code, e.signal) {
        (_, Some(sig)) => words.push(view::signal_name(sig)),
        (Some(code), None) => words.push(format!("exit {code}")),
        _ => {}
    }
    if let Some((prev_step, prev_end)) = prev {
        let gap = (e.queued_at - prev_end).num_milliseconds();
        let what = if prev_step == e.step {
            "the previous attempt"
        } else {
            "the previous step"
        };
        if gap >= 0 {
            words.push(format!("queued {} after {what} ended", view::duration(gap)));
        }
    }
    words.push(format!("from +{}", elapsed(ms(axis.t0, e.queued_at))));
    let label = if e.attempt > 1 {
        format!("{} {} · try {}", e.step + 1, short(&e.module), e.attempt)
    } else {
        format!("{} {}", e.step + 1, short(&e.module))
    };
    let row = Row {
        top: y,
        row_h,
        y: y + (row_h - bar_h) / 2,
        bar_h,
        text_y: y + row_h / 2 + 4,
        label,
        href: format!("#step-{}", e.step + 1),
        title: words.join(" · "),
        segments,
    };
    (row, ran, queued, delayed)
}

/// A module name cut to fit the label column.
fn short(name: &str) -> String {
    const MAX: usize = 14;
    if name.chars().count() <= MAX {
        name.to_string()
    } else {
        let mut s: String = name.chars().take(MAX - 1).collect();
        s.push('…');
        s
    }
}

fn summary(span_ms: i64, ran: i64, queued: i64, delayed: i64, live: bool) -> String {
    let mut s = format!(
        "{} from the run's creation to {}: steps ran {}",
        view::duration(span_ms),
        if live { "now" } else { "its end" },
        view::duration(ran)
    );
    match (queued > 0, delayed > 0) {
        (true, true) => s.push_str(&format!(
            ", waited {} in queues and {} for retry delays",
            view::duration(queued),
            view::duration(delayed)
        )),
        (true, false) => s.push_str(&format!(", waited {} in queues", view::duration(queued))),
        (false, true) => s.push_str(&format!(", waited {} for retry delays", view::duration(delayed))),
        (false, false) => {}
    }
    s.push('.');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use scheduler_tracker::RunSummary;

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 2, 0, 0).unwrap() + chrono::Duration::milliseconds(ms)
    }

    fn run(state: &str, started: Option<i64>, finished: Option<i64>) -> RunSummary {
        RunSummary {
            id: uuid::Uuid::nil(),
            sequence: "nightly".into(),
            state: state.into(),
            trigger: "test".into(),
            queue: "etl".into(),
            step_count: 2,
            current_step: None,
            failed_step: None,
            error: None,
            created_at: t(0),
            started_at: started.map(t),
            finished_at: finished.map(t),
            duration_ms: None,
            retry_at: None,
            note: None,
            waiting_on: None,
            schedule: None,
            logical_date: None,
        }
    }

    /// An execution queued at `q`, started at `s`, finished at `f` (ms).
    fn exec(step: i32, attempt: i32, state: &str, q: i64, s: Option<i64>, f: Option<i64>) -> ExecutionView {
        ExecutionView {
            step,
            attempt,
            module: "load".into(),
            argv: vec![],
            state: state.into(),
            worker_id: None,
            worker_host: None,
            pid: None,
            queued_at: t(q),
            started_at: s.map(t),
            finished_at: f.map(t),
            lease_until: None,
            duration_ms: None,
            exit_code: None,
            signal: None,
            error: None,
            stdout_tail: None,
            stderr_tail: None,
            stdout_bytes: None,
            stderr_bytes: None,
            retry: attempt - 1,
            due_at: None,
            queue: "etl".into(),
            log_bytes: None,
            log_omitted: None,
            wall_us: None,
            peak_rss_kib: None,
            user_cpu_us: None,
            sys_cpu_us: None,
            output_path: None,
            output_bytes: None,
            output_mtime: None,
            output_sha256: None,
            previous_output_sha256: None,
            warnings: None,
            stalled_at: None,
            given_back: false,
        }
    }

    fn detail(run: RunSummary, executions: Vec<ExecutionView>) -> RunDetail {
        RunDetail {
            run,
            snapshot: serde_json::json!({}),
            executions,
        }
    }

    #[test]
    fn bars_share_one_axis_with_waits_retries_and_gaps_where_they_happened() {
        // Recorded at 0, started at 1 s; step 1 queued 1 s, ran 1..4 s;
        // step 2 failed 5..6 s, its retry waited a 2 s delay then ran 8..10 s.
        let mut retry = exec(1, 2, "succeeded", 6_000, Some(8_000), Some(10_000));
        retry.due_at = Some(t(8_000));
        let d = detail(
            run("succeeded", Some(1_000), Some(10_000)),
            vec![
                exec(0, 1, "succeeded", 1_000, Some(1_000), Some(4_000)),
                exec(1, 1, "failed", 5_000, Some(5_000), Some(6_000)),
                retry,
            ],
        );
        let tl = Timeline::new(&d, t(60_000));
        assert_eq!(tl.rows.len(), 4, "the run and one per execution");
        assert!(tl.labelled);
        let seg = |r: usize| -> Vec<(String, String, String)> {
            tl.rows[r]
                .segments
                .iter()
                .map(|s| (s.class.clone(), s.x.clone(), s.w.clone()))
                .collect()
        };
        let s = |c: &str, x: &str, w: &str| (c.to_string(), x.to_string(), w.to_string());
        assert_eq!(
            seg(0),
            [
                s("tl-queue", "0.000%", "10.000%"),
                s("tl-run s-succeeded", "10.000%", "90.000%")
            ]
        );
        assert_eq!(seg(1), [s("tl-run s-succeeded", "10.000%", "30.000%")]);
        // The gap between steps 1 and 2 (4..5 s) is left empty.
        assert_eq!(seg(2), [s("tl-run s-failed", "50.000%", "10.000%")]);
        assert_eq!(
            seg(3),
            [
                s("tl-delay", "60.000%", "20.000%"),
                s("tl-run s-succeeded", "80.000%", "20.000%")
            ]
        );
        assert_eq!(tl.rows[3].label, "2 load · try 2");
        assert_eq!(tl.rows[3].href, "#step-2");
        let title = &tl.rows[3].title;
        assert!(title.contains("retry delay 2.0 s"), "{title}");
        assert!(
            title.contains("queued 0 ms after the previous attempt ended"),
            "{title}"
        );
        assert!(tl.rows[2].title.contains("queued 1.0 s after the previous step ended"));
        assert!(tl.now_x.is_none(), "a finished run has no now line");
        let ticks: Vec<&str> = tl.ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(ticks, ["0", "+2 s", "+4 s", "+6 s", "+8 s", "+10 s"]);
        assert_eq!(tl.ticks.last().unwrap().anchor, "end");
        assert_eq!(
            tl.summary,
            "10.0 s from the run's creation to its end: steps ran 6.0 s, waited 2.0 s for retry delays."
        );
    }

    #[test]
    fn a_live_run_reaches_now_and_a_waiting_step_queues_until_then() {
        let mut stalled = exec(0, 1, "running", 0, Some(0), None);
        stalled.stalled_at = Some(t(30_000));
        let d = detail(
            run("running", Some(0), None),
            vec![stalled, exec(1, 1, "queued", 40_000, None, None)],
        );
        let tl = Timeline::new(&d, t(40_000));
        assert_eq!(tl.now_x.as_deref(), Some("100.000%"));
        let classes: Vec<&str> = tl.rows[1].segments.iter().map(|s| s.class.as_str()).collect();
        assert_eq!(classes, ["tl-run s-running", "tl-stall"]);
        assert_eq!(tl.rows[1].segments[1].x, "75.000%");
        assert!(tl.rows[1].title.contains("stalled (no output) from +30 s"));
        // Queued at now: a sliver, never a negative width.
        assert!(tl.rows[2].segments.is_empty());
        assert!(tl.summary.ends_with("to now: steps ran 40.0 s."), "{}", tl.summary);
    }

    #[test]
    fn a_thousand_steps_keep_a_row_each_thinner_with_a_label_every_so_often() {
        let execs = (0..1000)
            .map(|i| {
                exec(
                    i,
                    1,
                    "succeeded",
                    i as i64 * 10,
                    Some(i as i64 * 10),
                    Some(i as i64 * 10 + 5),
                )
            })
            .collect();
        let tl = Timeline::new(&detail(run("succeeded", Some(0), Some(10_000)), execs), t(20_000));
        assert_eq!(tl.rows.len(), 1001);
        assert!(!tl.labelled);
        assert_eq!(tl.rows[1].bar_h, 2);
        assert_eq!(tl.height, AXIS + 1001 * 2 + 4);
        let marks: Vec<&str> = tl.marks.iter().take(3).map(|m| m.label.as_str()).collect();
        assert_eq!(marks, ["step 1", "step 20", "step 40"]);
        // A 5 ms step of a 10 s run is still visible.
        assert_eq!(tl.rows[500].segments[0].w, "0.250%");
    }
}
