//! Turning records into what a page shows: durations, "3 min ago" with the
//! exact time beside it, progress, error snippets. `now` is always passed
//! in, so these are plain functions the tests pin down.

use chrono::{DateTime, SecondsFormat, Utc};
use scheduler_tracker::RunSummary;

/// One line of the runs table (also used for a sequence's last runs).
pub(crate) struct RunRow {
    pub id: String,
    pub short_id: String,
    pub sequence: String,
    pub state: String,
    pub trigger: String,
    pub created: Stamp,
    pub duration: String,
    /// `2/3`: the step reached (1-based) out of the sequence's steps.
    pub progress: String,
    /// Percentage of steps done, for the progress bar.
    pub percent: u32,
    /// `(step number, first line of the error)` of a failed run.
    pub failure: Option<(i32, String)>,
    /// When its failed step is retried, while it waits.
    pub retry_at: Option<Stamp>,
}

impl RunRow {
    pub fn new(r: &RunSummary, now: DateTime<Utc>) -> RunRow {
        let reached = match r.state.as_str() {
            "succeeded" => r.step_count,
            "queued" => 0,
            _ => r.current_step.map_or(0, |s| s + 1),
        };
        let done = match r.state.as_str() {
            "succeeded" => r.step_count,
            _ => r.current_step.unwrap_or(0),
        };
        RunRow {
            id: r.id.to_string(),
            short_id: short_id(&r.id),
            sequence: r.sequence.clone(),
            state: r.state.clone(),
            trigger: r.trigger.clone(),
            created: Stamp::new(r.created_at, now),
            duration: r.duration_ms.map(duration).unwrap_or_default(),
            progress: format!("{reached}/{}", r.step_count),
            percent: (done.max(0) as u32 * 100) / (r.step_count.max(1) as u32),
            failure: r
                .failed_step
                .map(|s| (s + 1, snippet(r.error.as_deref().unwrap_or("no reason recorded"), 120))),
            retry_at: r.retry_at.map(|t| Stamp::new(t, now)),
        }
    }
}

/// A time shown as "3 min ago", with the exact UTC time as a tooltip.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stamp {
    pub relative: String,
    pub exact: String,
}

impl Stamp {
    pub fn new(t: DateTime<Utc>, now: DateTime<Utc>) -> Stamp {
        Stamp {
            relative: ago(t, now),
            exact: t.to_rfc3339_opts(SecondsFormat::Millis, true).replace('T', " "),
        }
    }
    pub fn opt(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Stamp {
        t.map(|t| Stamp::new(t, now)).unwrap_or_default()
    }
}

pub(crate) fn short_id(id: &uuid::Uuid) -> String {
    // UUIDv7: the leading digits are the timestamp and alike for runs
    // started together; the tail tells them apart.
    let s = id.simple().to_string();
    s[s.len() - 8..].to_string()
}

pub(crate) fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    match secs {
        s if s < -5 => format!("in {}", span(-s)),
        s if s < 5 => "just now".into(),
        s => format!("{} ago", span(s)),
    }
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// `850 ms`, `4.2 s`, `3 min 07 s`, `2 h 05 min`.
pub(crate) fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        m if m < 1000 => format!("{m} ms"),
        m if m < 60_000 => format!("{:.1} s", m as f64 / 1000.0),
        m if m < 3_600_000 => format!("{} min {:02} s", m / 60_000, (m / 1000) % 60),
        m => format!("{} h {:02} min", m / 3_600_000, (m / 60_000) % 60),
    }
}

/// The first line of `s`, cut to about `max` characters.
pub(crate) fn snippet(s: &str, max: usize) -> String {
    let line = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let mut out: String = line.chars().take(max).collect();
    if line.chars().count() > max || s.trim().lines().count() > 1 {
        out.push('…');
    }
    out
}

/// `1.2 KiB`.
pub(crate) fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    match n {
        n if n < 1024.0 => format!("{n} B"),
        n if n < 1024.0 * 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n if n < 1024.0 * 1024.0 * 1024.0 => format!("{:.1} MiB", n / 1024.0 / 1024.0),
        n => format!("{:.1} GiB", n / 1024.0 / 1024.0 / 1024.0),
    }
}

/// An argv as a copy-pasteable shell line (single-quoted where needed).
pub(crate) fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '=' | ':' | ',' | '+'));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn signal_name(sig: i32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    format!("signal {sig} ({name})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        for (ms, text) in [
            (0, "0 ms"),
            (850, "850 ms"),
            (4_200, "4.2 s"),
            (187_000, "3 min 07 s"),
            (7_500_000, "2 h 05 min"),
            (-5, "0 ms"),
        ] {
            assert_eq!(duration(ms), text);
        }
    }

    #[test]
    fn relative_times_round_down() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let at = |s: i64| now - chrono::Duration::seconds(s);
        assert_eq!(ago(at(2), now), "just now");
        assert_eq!(ago(at(42), now), "42 s ago");
        assert_eq!(ago(at(150), now), "2 min ago");
        assert_eq!(ago(at(7300), now), "2 h ago");
        assert_eq!(ago(at(200_000), now), "2 d ago");
        assert_eq!(ago(at(-120), now), "in 2 min");
    }

    #[test]
    fn snippets_keep_the_first_meaningful_line() {
        assert_eq!(snippet("\n  boom: disk full\nmore", 50), "boom: disk full…");
        assert_eq!(snippet("short", 50), "short");
        assert_eq!(snippet("abcdef", 3), "abc…");
    }

    #[test]
    fn argv_is_shown_quoted_for_a_shell() {
        let argv = ["./bin/x.sh", "--input", "a b", "it's", ""].map(String::from);
        assert_eq!(shell_line(&argv), r"./bin/x.sh --input 'a b' 'it'\''s' ''");
    }
}
