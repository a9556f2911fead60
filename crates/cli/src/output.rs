//! Human-readable tables for `runs`, `show` and `run`. Steps are numbered
//! from 1 for people (as in the UI); the JSON and `ETL_STEP` count from 0.

use chrono::{DateTime, Utc};
use scheduler_tracker::{RunDetail, RunSummary};
use std::fmt::Write;

pub fn duration(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) if ms < 3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        Some(ms) => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

pub fn runs_table(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        out.push_str("no runs recorded yet; start one with `scheduler start <sequence>`\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<36}  {:<20}  {:<9}  {:<19}  {:>8}  {:<6}  {:<28}  TRIGGER",
        "RUN", "SEQUENCE", "STATE", "CREATED", "DURATION", "STEP", "NOTE"
    );
    for r in runs {
        let step = match (r.failed_step, r.current_step) {
            (Some(f), _) => format!("{}/{}!", f + 1, r.step_count),
            (None, Some(c)) => format!("{}/{}", c + 1, r.step_count),
            _ => format!("-/{}", r.step_count),
        };
        let note = run_note(r);
        let trigger = match r.logical_date {
            Some(at) => format!("{} for {}", r.trigger, time(Some(at))),
            None => r.trigger.clone(),
        };
        let _ = writeln!(
            out,
            "{:<36}  {:<20}  {:<9}  {:<19}  {:>8}  {:<6}  {note:<28}  {}",
            r.id,
            r.sequence,
            r.state,
            time(Some(r.created_at)),
            duration(r.duration_ms),
            step,
            trigger
        );
    }
    out
}

/// The short note of a run in the runs table: a retry's due time, the queue
/// nobody serves, or why it waits or was skipped.
fn run_note(r: &RunSummary) -> String {
    if let Some(t) = r.retry_at {
        return format!("retry at {}", time(Some(t)));
    }
    if let Some(q) = &r.waiting_on {
        return format!("no worker on queue {q}");
    }
    match (r.state.as_str(), &r.note) {
        ("waiting", _) => "waiting for a slot".into(),
        ("skipped", Some(n)) => n.split(" (").next().unwrap_or(n).to_string(),
        _ => String::new(),
    }
}

pub fn run_detail(d: &RunDetail) -> String {
    let r = &d.run;
    let mut out = String::new();
    let _ = writeln!(out, "run       {}", r.id);
    let _ = writeln!(out, "sequence  {}", r.sequence);
    let _ = writeln!(out, "state     {}", r.state);
    let _ = writeln!(out, "trigger   {}", r.trigger);
    match (&r.schedule, r.logical_date) {
        (Some(schedule), Some(slot)) => {
            let _ = writeln!(
                out,
                "schedule  {schedule}, slot {} UTC (its logical date)",
                time(Some(slot))
            );
        }
        (None, Some(at)) => {
            let _ = writeln!(out, "logical   {} UTC (given at start)", time(Some(at)));
        }
        _ => {}
    }
    let _ = writeln!(
        out,
        "created   {}   started {}   finished {}   ({})",
        time(Some(r.created_at)),
        time(r.started_at),
        time(r.finished_at),
        duration(r.duration_ms)
    );
    if let Some(e) = &r.error {
        let _ = writeln!(out, "error     step {}: {}", r.failed_step.unwrap_or_default() + 1, e);
    }
    if let Some(t) = r.retry_at {
        let _ = writeln!(out, "retry at  {} (its failed step is tried again then)", time(Some(t)));
    }
    if let Some(n) = &r.note {
        let _ = writeln!(out, "note      {n}");
    }
    if let Some(q) = &r.waiting_on {
        let _ = writeln!(
            out,
            "waiting   its next step waits on queue {q}, which no live worker serves; \
             it goes on as soon as one starts (scheduler worker --queue {q})"
        );
    }
    let _ = writeln!(
        out,
        "\n{:<4} {:<3} {:<16} {:<10} {:<12} {:>8} {:>8} {:>7} {:>7} {:>5}  ARGV",
        "STEP", "TRY", "MODULE", "STATE", "QUEUE", "DURATION", "PEAK MEM", "CPU", "PID", "EXIT"
    );
    for e in &d.executions {
        let exit = match (e.exit_code, e.signal) {
            (Some(c), _) => c.to_string(),
            (None, Some(s)) => format!("sig{s}"),
            _ => "-".into(),
        };
        let cpu = match (e.user_cpu_us, e.sys_cpu_us) {
            (Some(u), Some(s)) => duration(Some((u + s) / 1000)),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<4} {:<3} {:<16} {:<10} {:<12} {:>8} {:>8} {:>7} {:>7} {:>5}  {}",
            e.step + 1,
            e.attempt,
            e.module,
            e.state,
            e.queue,
            duration(e.duration_ms),
            e.peak_rss_kib.map(|k| bytes(k * 1024)).unwrap_or_else(|| "-".into()),
            cpu,
            e.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            exit,
            e.argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
        );
        if let Some(err) = &e.error {
            let _ = writeln!(out, "     ! {err}");
        }
        if let Some(at) = e.stalled_at {
            let _ = writeln!(out, "     stalled: no output since {}", time(Some(at)));
        }
        for w in e.warnings.iter().flatten() {
            let _ = writeln!(out, "     warning: {w}");
        }
        if let (Some(path), Some(size)) = (&e.output_path, e.output_bytes) {
            let _ = writeln!(out, "     output {path}: {}{}", bytes(size), output_change(e));
        }
        if let (Some(due), "queued") = (e.due_at, e.state.as_str()) {
            let _ = writeln!(
                out,
                "     retry {} of the step's failures, due at {}",
                e.retry,
                time(Some(due))
            );
        }
    }
    out
}

/// Quotes an argument for display only (nothing is ever run through a shell).
fn shell_quote(a: &str) -> String {
    if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// `1.5 MiB`: binary units, one decimal past KiB.
pub fn bytes(n: i64) -> String {
    let n = n as f64;
    match n {
        n if n < 1024.0 => format!("{n} B"),
        n if n < 1024.0 * 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n if n < 1024.0 * 1024.0 * 1024.0 => format!("{:.1} MiB", n / (1024.0 * 1024.0)),
        n => format!("{:.1} GiB", n / (1024.0 * 1024.0 * 1024.0)),
    }
}

/// Whether a step's output changed since the sequence's previous successful run.
fn output_change(e: &scheduler_tracker::ExecutionView) -> String {
    match (&e.output_sha256, &e.previous_output_sha256) {
        (Some(now), Some(before)) if now == before => {
            ", unchanged since the previous successful run (same SHA-256)".into()
        }
        (Some(now), Some(_)) => format!(", changed since the previous successful run (SHA-256 {})", &now[..12]),
        (Some(now), None) => format!(", SHA-256 {}", &now[..12]),
        (None, _) => " (too large to hash)".into(),
    }
}
