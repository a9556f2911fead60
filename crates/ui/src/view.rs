//! Turning records into what a page shows: durations, "3 min ago" with the
//! exact time beside it, progress, error snippets. `now` is always passed
//! in, so these are plain functions the tests pin down.

use chrono::{DateTime, SecondsFormat, Utc};
use scheduler_core::Concurrency;
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
    /// Why it waits for a slot, was skipped, or was canceled by a newer run;
    /// empty when there is nothing to say.
    pub note: Vec<NotePart>,
    /// The whole note, for a tooltip.
    pub note_text: String,
    /// `(step number, queue)`: its next step waits on a queue no live
    /// worker serves.
    pub waiting_on: Option<(i32, String)>,
    /// The schedule that started it, if one did.
    pub schedule: Option<String>,
    /// Its logical date (a scheduled or backfilled slot, or `--logical-date`).
    pub logical_date: Option<String>,
}

impl RunRow {
    pub fn new(r: &RunSummary, now: DateTime<Utc>) -> RunRow {
        let reached = match r.state.as_str() {
            "succeeded" => r.step_count,
            "waiting" | "queued" | "skipped" => 0,
            _ => r.current_step.map_or(0, |s| s + 1),
        };
        let done = match r.state.as_str() {
            "succeeded" => r.step_count,
            _ => r.current_step.unwrap_or(0),
        };
        let note = r.note.as_deref();
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
            note: note.map(note_parts).unwrap_or_default(),
            note_text: note.unwrap_or_default().to_string(),
            // The step that waits is the last one queued: one past the
            // steps done.
            waiting_on: r.waiting_on.clone().map(|q| (r.current_step.map_or(1, |s| s + 1), q)),
            schedule: r.schedule.clone(),
            logical_date: r.logical_date.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
        }
    }
}

/// A sequence's concurrency policy in words (`max_concurrent 1 ·
/// on_conflict skip`); `None` when its runs are not limited.
pub(crate) fn concurrency(c: &Concurrency) -> Option<String> {
    c.max_concurrent
        .map(|max| format!("max_concurrent {max} · on_conflict {}", c.on_conflict.as_str()))
}

/// A piece of a note: plain text, or a run id shown short and linked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotePart {
    pub text: String,
    /// The full id when this part is a run id.
    pub run: Option<String>,
}

/// Splits a note around the run ids in it ("run 0192f0c4-…-5d2a1c3b4e5f
/// holds the slot"), so a page can link each run and show it short.
pub(crate) fn note_parts(note: &str) -> Vec<NotePart> {
    const LEN: usize = 36; // a hyphenated UUID
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = note;
    while !rest.is_empty() {
        let id = rest
            .get(..LEN)
            .filter(|s| s.as_bytes()[8] == b'-')
            .and_then(|s| s.parse::<uuid::Uuid>().ok());
        if let Some(id) = id {
            if !text.is_empty() {
                parts.push(NotePart {
                    text: std::mem::take(&mut text),
                    run: None,
                });
            }
            parts.push(NotePart {
                text: short_id(&id),
                run: Some(id.to_string()),
            });
            rest = &rest[LEN..];
        } else {
            let c = rest.chars().next().unwrap_or_default();
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !text.is_empty() {
        parts.push(NotePart { text, run: None });
    }
    parts
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
    fn run_ids_in_a_note_are_cut_out_to_be_linked() {
        let id = "0192f0c4-8b1e-7c3a-9f00-5d2a1c3b4e5f";
        let parts = note_parts(&format!("skipped: run {id} holds the slot (é, max_concurrent 1)"));
        let shown: Vec<_> = parts.iter().map(|p| (p.text.as_str(), p.run.as_deref())).collect();
        assert_eq!(
            shown,
            [
                ("skipped: run ", None),
                ("1c3b4e5f", Some(id)),
                (" holds the slot (é, max_concurrent 1)", None)
            ]
        );
        assert_eq!(note_parts(id).len(), 1);
        assert!(note_parts("").is_empty());
        assert_eq!(note_parts("not-a-uuid-at-all-but-quite-long-enough")[0].run, None);
    }

    fn summary(state: &str, note: Option<&str>, waiting_on: Option<&str>) -> RunSummary {
        RunSummary {
            id: uuid::Uuid::nil(),
            sequence: "s".into(),
            state: state.into(),
            trigger: "ui".into(),
            queue: "etl".into(),
            step_count: 3,
            current_step: Some(1),
            failed_step: None,
            error: None,
            created_at: Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap(),
            started_at: None,
            finished_at: None,
            duration_ms: None,
            retry_at: None,
            note: note.map(str::to_string),
            waiting_on: waiting_on.map(str::to_string),
            schedule: None,
            logical_date: None,
        }
    }

    #[test]
    fn a_row_shows_the_note_that_still_holds_and_the_step_waiting_on_a_queue() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let waiting = RunRow::new(
            &summary("waiting", Some("waiting for a slot (max_concurrent 1)"), None),
            now,
        );
        assert_eq!(waiting.note_text, "waiting for a slot (max_concurrent 1)");
        assert_eq!(waiting.progress, "0/3");
        let replaced = RunRow::new(&summary("canceled", Some("canceled: run x replaced it"), None), now);
        assert_eq!(replaced.note_text, "canceled: run x replaced it");
        let stuck = RunRow::new(&summary("running", None, Some("heavy")), now);
        assert_eq!(stuck.waiting_on, Some((2, "heavy".to_string())));
    }

    #[test]
    fn argv_is_shown_quoted_for_a_shell() {
        let argv = ["./bin/x.sh", "--input", "a b", "it's", ""].map(String::from);
        assert_eq!(shell_line(&argv), r"./bin/x.sh --input 'a b' 'it'\''s' ''");
    }
}
