//! `schedules.json`: which sequence runs when. Parsed from text and
//! validated once, at the edge, like the sequences; every error names the
//! file, the schedule and the field, and says what to write.

use chrono_tz::Tz;
use croner::Cron;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::str::FromStr;

/// What happens to the slots that passed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Catchup {
    /// Run the most recent one once; record the others as coalesced.
    #[default]
    Latest,
    /// One run per missed slot, oldest first.
    All,
    /// Record them as missed.
    None,
}

impl Catchup {
    pub fn as_str(self) -> &'static str {
        match self {
            Catchup::Latest => "latest",
            Catchup::All => "all",
            Catchup::None => "none",
        }
    }
}

/// One schedule, validated.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub sequence: String,
    /// The expression as written.
    pub cron_text: String,
    pub cron: Cron,
    pub timezone: Tz,
    pub catchup: Catchup,
    /// How far back a scheduler that starts looks for slots to catch up.
    pub catchup_window_secs: u64,
    pub enabled: bool,
    /// Each slot fires up to this many seconds late, by an offset derived
    /// from the schedule and the slot (every instance agrees on it).
    pub jitter_secs: u64,
    pub description: String,
    /// Pinged when each of its runs starts, succeeds and fails (a dead-man's
    /// switch); over its sequence's own.
    pub healthcheck_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: schedule {schedule:?}: {message}")]
pub struct ScheduleError {
    pub file: String,
    pub schedule: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    sequence: String,
    cron: String,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    catchup: Option<String>,
    #[serde(default)]
    catchup_window_secs: Option<u64>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    jitter_secs: Option<u64>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    healthcheck_url: Option<String>,
}

const SHAPE: &str =
    "{\"name\": {\"sequence\": \"s3_to_es\", \"cron\": \"0 * * * *\", \"timezone\": \"Europe/Madrid\"}}";

/// Parses a cron expression the way schedules use it: five fields, an
/// optional leading seconds field, or `@hourly`, `@daily`, `@weekly`,
/// `@monthly` (and `@yearly`).
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    let alias = text.trim_start().starts_with('@');
    if !alias && !(5..=6).contains(&fields) {
        return Err(format!(
            "\"cron\" {text:?} has {fields} fields; write five (minute hour day month weekday), \
             six with leading seconds, or @hourly, @daily, @weekly, @monthly"
        ));
    }
    if text.trim() == "@reboot" {
        return Err("\"cron\" @reboot has no fire time; start the sequence from the host's boot instead".into());
    }
    Cron::from_str(text).map_err(|e| format!("\"cron\" {text:?} is not a valid cron expression: {e}"))
}

/// Parses `schedules.json` (`file` names it in errors). `sequence_exists`
/// says whether a sequence of that name is defined.
pub fn parse(file: &str, text: &str, sequence_exists: impl Fn(&str) -> bool) -> Result<Vec<Schedule>, ScheduleError> {
    let bad = |schedule: &str, message: String| ScheduleError {
        file: file.to_string(),
        schedule: schedule.to_string(),
        message,
    };
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(text).map_err(|e| {
        bad(
            "",
            format!("invalid JSON or not an object of schedules ({e}); expected {SHAPE}"),
        )
    })?;
    let mut out = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let ok_name = !name.is_empty()
            && name.len() <= 200
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok_name {
            return Err(bad(
                &name,
                "a schedule name uses letters, digits, '_', '-' and '.'".into(),
            ));
        }
        let raw: Raw = serde_json::from_value(value).map_err(|e| {
            bad(
                &name,
                format!(
                    "{e}; a schedule has \"sequence\" and \"cron\", and optional \"timezone\", \"catchup\", \
                     \"catchup_window_secs\", \"enabled\", \"jitter_secs\", \"description\", \"healthcheck_url\""
                ),
            )
        })?;
        if !sequence_exists(&raw.sequence) {
            return Err(bad(
                &name,
                format!(
                    "\"sequence\" {:?} is not defined (no etl_sequences/{}.json)",
                    raw.sequence, raw.sequence
                ),
            ));
        }
        let cron = parse_cron(&raw.cron).map_err(|m| bad(&name, m))?;
        let timezone = match raw.timezone.as_deref() {
            None => Tz::UTC,
            Some(tz) => Tz::from_str(tz).map_err(|_| {
                bad(
                    &name,
                    format!("\"timezone\" {tz:?} is not an IANA time zone name such as \"Europe/Madrid\" or \"UTC\""),
                )
            })?,
        };
        let catchup = match raw.catchup.as_deref() {
            None | Some("latest") => Catchup::Latest,
            Some("all") => Catchup::All,
            Some("none") => Catchup::None,
            Some(other) => {
                return Err(bad(
                    &name,
                    format!("\"catchup\" is {other:?}; expected one of: latest, all, none"),
                ));
            }
        };
        let catchup_window_secs = raw.catchup_window_secs.unwrap_or(86_400);
        if catchup_window_secs == 0 {
            return Err(bad(
                &name,
                "\"catchup_window_secs\" must be at least 1 (use \"catchup\": \"none\" to catch nothing up)".into(),
            ));
        }
        if let Some(url) = &raw.healthcheck_url {
            let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) || url.chars().any(char::is_whitespace) {
                return Err(bad(
                    &name,
                    format!("\"healthcheck_url\" {url:?} is not an http:// or https:// URL with a host"),
                ));
            }
        }
        out.push(Schedule {
            name,
            sequence: raw.sequence,
            cron_text: raw.cron,
            cron,
            timezone,
            catchup,
            catchup_window_secs,
            enabled: raw.enabled.unwrap_or(true),
            jitter_secs: raw.jitter_secs.unwrap_or(0),
            description: raw.description.unwrap_or_default(),
            healthcheck_url: raw.healthcheck_url,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse("schedules.json", text, |s| s == "s3_to_es")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_example_of_the_issue_parses() {
        let text = r#"{
          "hourly_sync": {"sequence": "s3_to_es", "cron": "0 * * * *", "timezone": "Europe/Madrid"},
          "limits": {"sequence": "s3_to_es", "cron": "*/2 * * * *", "catchup": "none"},
          "nightly": {"sequence": "s3_to_es", "cron": "30 2 * * *", "catchup": "all", "description": "x"},
          "secs": {"sequence": "s3_to_es", "cron": "*/5 * * * * *"},
          "daily": {"sequence": "s3_to_es", "cron": "@daily", "jitter_secs": 30, "enabled": false}
        }"#;
        let all = parse("schedules.json", text, |s| s == "s3_to_es").unwrap();
        assert_eq!(all.len(), 5);
        let hourly = all.iter().find(|s| s.name == "hourly_sync").unwrap();
        assert_eq!(hourly.timezone, chrono_tz::Europe::Madrid);
        assert_eq!(hourly.catchup, Catchup::Latest);
        assert_eq!(hourly.catchup_window_secs, 86_400);
        assert!(!all.iter().find(|s| s.name == "daily").unwrap().enabled);
        let text = r#"{"d": {"sequence": "s3_to_es", "cron": "@daily", "healthcheck_url": "https://hc.example/p/1"}}"#;
        let d = parse("schedules.json", text, |s| s == "s3_to_es").unwrap();
        assert_eq!(d[0].healthcheck_url.as_deref(), Some("https://hc.example/p/1"));
    }

    #[test]
    fn bad_schedules_name_the_file_the_schedule_and_the_field() {
        let e = err(r#"{"a": {"sequence": "nope", "cron": "* * * * *"}}"#);
        assert!(
            e.starts_with("schedules.json: schedule \"a\": \"sequence\" \"nope\""),
            "{e}"
        );
        let e = err(r#"{"a": {"sequence": "s3_to_es", "cron": "* * *"}}"#);
        assert!(e.contains("has 3 fields"), "{e}");
        let e = err(r#"{"a": {"sequence": "s3_to_es", "cron": "61 * * * *"}}"#);
        assert!(e.contains("not a valid cron expression"), "{e}");
        let e = err(r#"{"a": {"sequence": "s3_to_es", "cron": "* * * * *", "timezone": "Mars/Base"}}"#);
        assert!(e.contains("IANA time zone"), "{e}");
        let e = err(r#"{"a": {"sequence": "s3_to_es", "cron": "* * * * *", "catchup": "some"}}"#);
        assert!(e.contains("expected one of: latest, all, none"), "{e}");
        let e = err(r#"{"a": {"sequence": "s3_to_es", "cron": "* * * * *", "cronn": 1}}"#);
        assert!(e.contains("unknown field `cronn`"), "{e}");
        let e = err(r#"{"a": {"sequence": "s3_to_es", "cron": "@reboot"}}"#);
        assert!(e.contains("@reboot"), "{e}");
        let e = err(r#"{"a": {"sequence": "s3_to_es", "cron": "@daily", "healthcheck_url": "hc/x"}}"#);
        assert!(e.contains("\"healthcheck_url\" \"hc/x\" is not an http"), "{e}");
        assert!(err("[]").contains("expected {"));
    }
}
