//! Parsing what arrives in URLs, once, at the edge: run ids, the runs filter
//! and its keyset cursor. Query fields arrive as optional strings (an HTML
//! form sends empty ones) so that every mistake gets its own sentence rather
//! than a generic deserializer message.

use crate::error::Problem;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use scheduler_core::RunState;
use scheduler_tracker::{RunFilter, RunSummary};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub(crate) const DEFAULT_PAGE: u32 = 50;
pub(crate) const MAX_PAGE: u32 = 200;

pub(crate) fn run_id(raw: &str) -> Result<Uuid, Problem> {
    raw.parse().map_err(|_| {
        Problem::bad_request(format!(
            "{raw:?} is not a run id; a run id is a UUID such as 0192f0c4-8b1e-7c3a-9f00-5d2a1c3b4e5f"
        ))
    })
}

/// The runs filter as it appears in a query string (the runs page, its
/// fragment and `/api/v1/runs` share it).
/// The `param` attributes describe it in the OpenAPI document.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunsQuery {
    /// Only runs of this sequence.
    pub sequence: Option<String>,
    /// Only runs this schedule started.
    pub schedule: Option<String>,
    /// Only runs in this state.
    #[param(value_type = Option<RunStateParam>, inline)]
    pub state: Option<String>,
    /// Only runs created at or after this time: RFC 3339, or a date
    /// (midnight UTC).
    pub since: Option<String>,
    /// Only runs created before this time (as `since`).
    pub until: Option<String>,
    /// The `next` of the previous page: runs older than it.
    pub before: Option<String>,
    /// Runs per page (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
}

/// A run's state, as the `state` filter takes it.
#[derive(utoipa::ToSchema)]
#[schema(as = RunState, rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum RunStateParam {
    Waiting,
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
    Skipped,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl RunsQuery {
    pub fn parse(&self) -> Result<RunFilter, Problem> {
        let state = given(&self.state)
            .map(|s| {
                s.parse::<RunState>()
                    .map_err(|e| Problem::bad_request(format!("state: {e}")))
            })
            .transpose()?;
        let limit = match given(&self.limit) {
            None => DEFAULT_PAGE,
            Some(l) => match l.parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Err(Problem::bad_request(format!(
                        "limit: {l:?} is not a page size; use a whole number from 1 to {MAX_PAGE}"
                    )));
                }
            },
        };
        let filter = RunFilter {
            sequence: given(&self.sequence).map(str::to_string),
            schedule: given(&self.schedule).map(str::to_string),
            state,
            since: given(&self.since).map(|s| time("since", s)).transpose()?,
            until: given(&self.until).map(|s| time("until", s)).transpose()?,
            before: given(&self.before).map(parse_cursor).transpose()?,
            limit,
        };
        if let (Some(s), Some(u)) = (filter.since, filter.until)
            && s >= u
        {
            return Err(Problem::bad_request("since must be earlier than until"));
        }
        Ok(filter)
    }

    /// This filter's query string without its cursor (for the page links
    /// and the live fragment), and with `before` set to `next`.
    pub fn with_before(&self, next: Option<&str>) -> String {
        let q = RunsQuery {
            before: next.map(str::to_string),
            ..self.clone()
        };
        let pairs: Vec<(&str, &str)> = [
            ("sequence", given(&q.sequence)),
            ("schedule", given(&q.schedule)),
            ("state", given(&q.state)),
            ("since", given(&q.since)),
            ("until", given(&q.until)),
            ("limit", given(&q.limit)),
            ("before", given(&q.before)),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// RFC 3339 (`2026-01-02T03:04:05Z`), an HTML `datetime-local` value
/// (`2026-01-02T03:04`, read as UTC) or a date (`2026-01-02`, midnight UTC).
fn time(field: &str, s: &str) -> Result<DateTime<Utc>, Problem> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(Problem::bad_request(format!(
        "{field}: {s:?} is not a time; use RFC 3339 (2026-01-02T03:04:05Z) or a date (2026-01-02), in UTC"
    )))
}

/// The keyset cursor: the `(created_at, id)` of the last run shown, as
/// `<rfc3339 with microseconds>_<uuid>`.
pub(crate) fn cursor(run: &RunSummary) -> String {
    format!(
        "{}_{}",
        run.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        run.id
    )
}

fn parse_cursor(s: &str) -> Result<(DateTime<Utc>, Uuid), Problem> {
    let bad = || {
        Problem::bad_request(format!(
            "before: {s:?} is not a page cursor; use the `next` value of the previous page \
             (<rfc3339 time>_<run id>)"
        ))
    };
    let (t, id) = s.rsplit_once('_').ok_or_else(bad)?;
    let t = DateTime::parse_from_rfc3339(t).map_err(|_| bad())?;
    let id = id.parse().map_err(|_| bad())?;
    Ok((t.with_timezone(&Utc), id))
}

/// Percent-encodes a query value (everything but unreserved characters).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The execution and byte window of a log read, as a query string brings
/// them (`/api/v1/runs/{id}/log` and the run page's log routes share it).
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogQuery {
    /// The step, counting from 0.
    #[param(required = true, value_type = u32)]
    pub step: Option<String>,
    /// The attempt, counting from 1 (default: the step's latest).
    #[param(value_type = Option<u32>, minimum = 1)]
    pub attempt: Option<String>,
    /// A byte offset in the execution's whole output (both streams; default
    /// 0): the `next` of the previous answer.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub from: Option<String>,
    /// A byte offset to stop before (greater than `from`).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub to: Option<String>,
    /// One stream only (default: `both`).
    #[param(value_type = Option<LogStreamParam>, inline)]
    pub stream: Option<String>,
    /// Pieces per answer (default 200; an answer also stops after about 1 MiB).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// A stream of a module's output, as the log's `stream` filter takes it.
#[derive(utoipa::ToSchema)]
#[schema(as = LogStream, rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum LogStreamParam {
    Stdout,
    Stderr,
    Both,
}

/// A [`LogQuery`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogParams {
    /// 0-based, as everywhere in URLs and the JSON API.
    pub step: u32,
    /// 1-based; `None`: the step's latest.
    pub attempt: Option<u32>,
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// `stdout` or `stderr`; `None`: both.
    pub stream: Option<&'static str>,
    pub limit: Option<usize>,
}

pub(crate) const MAX_LOG_PIECES: usize = 1000;

impl LogQuery {
    pub fn parse(&self) -> Result<LogParams, Problem> {
        let step = match given(&self.step) {
            None => {
                return Err(Problem::bad_request(
                    "step: say which step's log; steps count from 0 (the `step` of an execution in GET /api/v1/runs/{id})",
                ));
            }
            Some(s) => s
                .parse::<u32>()
                .map_err(|_| Problem::bad_request(format!("step: {s:?} is not a step number; steps count from 0")))?,
        };
        let attempt = given(&self.attempt)
            .map(|a| match a.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(Problem::bad_request(format!(
                    "attempt: {a:?} is not an attempt number; attempts count from 1 (leave it out for the latest)"
                ))),
            })
            .transpose()?;
        let offset = |field: &str, v: &str| {
            v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                Problem::bad_request(format!(
                    "{field}: {v:?} is not a byte offset; use a whole number from 0 (the `next` of the previous answer)"
                ))
            })
        };
        let from = given(&self.from).map(|v| offset("from", v)).transpose()?;
        let to = given(&self.to).map(|v| offset("to", v)).transpose()?;
        if let (Some(f), Some(t)) = (from, to)
            && t <= f
        {
            return Err(Problem::bad_request(format!(
                "to ({t}) must be greater than from ({f})"
            )));
        }
        let stream = match given(&self.stream) {
            None | Some("both") => None,
            Some("stdout") => Some("stdout"),
            Some("stderr") => Some("stderr"),
            Some(other) => {
                return Err(Problem::bad_request(format!(
                    "stream: {other:?} is not a stream; use stdout or stderr (or leave it out for both)"
                )));
            }
        };
        let limit = given(&self.limit)
            .map(|l| match l.parse::<usize>() {
                Ok(n) if (1..=MAX_LOG_PIECES).contains(&n) => Ok(n),
                _ => Err(Problem::bad_request(format!(
                    "limit: {l:?} is not a number of pieces; use a whole number from 1 to {MAX_LOG_PIECES}"
                ))),
            })
            .transpose()?;
        Ok(LogParams {
            step,
            attempt,
            from,
            to,
            stream,
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> RunsQuery {
        let mut q = RunsQuery::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "sequence" => q.sequence = v,
                "state" => q.state = v,
                "since" => q.since = v,
                "until" => q.until = v,
                "before" => q.before = v,
                "limit" => q.limit = v,
                _ => unreachable!(),
            }
        }
        q
    }

    #[test]
    fn empty_form_fields_mean_no_filter() {
        let f = q(&[("sequence", ""), ("state", " "), ("limit", "")]).parse().unwrap();
        assert_eq!((f.sequence, f.state, f.limit), (None, None, DEFAULT_PAGE));
    }

    #[test]
    fn bad_filters_say_what_to_fix() {
        for (pairs, needle) in [
            (vec![("state", "done")], "expected one of"),
            (vec![("limit", "0")], "1 to 200"),
            (vec![("limit", "100000")], "1 to 200"),
            (vec![("limit", "ten")], "1 to 200"),
            (vec![("since", "yesterday")], "RFC 3339"),
            (vec![("before", "nope")], "cursor"),
            (vec![("before", "2026-01-01T00:00:00Z_notauuid")], "cursor"),
            (vec![("since", "2026-01-02"), ("until", "2026-01-01")], "earlier"),
        ] {
            let err = q(&pairs).parse().unwrap_err();
            assert_eq!(err.status, 400, "{pairs:?}");
            assert!(err.message.contains(needle), "{pairs:?}: {}", err.message);
        }
    }

    #[test]
    fn a_cursor_round_trips_to_the_microsecond() {
        let t = DateTime::parse_from_rfc3339("2026-03-04T05:06:07.123456Z")
            .unwrap()
            .to_utc();
        let id = Uuid::now_v7();
        let s = format!("{}_{id}", t.to_rfc3339_opts(SecondsFormat::Micros, true));
        assert_eq!(parse_cursor(&s).unwrap(), (t, id));
    }

    #[test]
    fn form_times_are_read_as_utc() {
        let f = q(&[("since", "2026-01-02T03:04"), ("until", "2026-01-03")])
            .parse()
            .unwrap();
        assert_eq!(f.since.unwrap().to_rfc3339(), "2026-01-02T03:04:00+00:00");
        assert_eq!(f.until.unwrap().to_rfc3339(), "2026-01-03T00:00:00+00:00");
    }

    #[test]
    fn query_strings_keep_the_filter_and_encode_values() {
        let s = q(&[("sequence", "a b&c"), ("state", "failed")]).with_before(Some("x_y"));
        assert_eq!(s, "sequence=a%20b%26c&state=failed&before=x_y");
    }

    #[test]
    fn bad_log_windows_say_what_to_fix() {
        let lq = |pairs: &[(&str, &str)]| {
            let mut q = LogQuery::default();
            for (k, v) in pairs {
                let v = Some(v.to_string());
                match *k {
                    "step" => q.step = v,
                    "attempt" => q.attempt = v,
                    "from" => q.from = v,
                    "to" => q.to = v,
                    "stream" => q.stream = v,
                    "limit" => q.limit = v,
                    _ => unreachable!(),
                }
            }
            q.parse()
        };
        let ok = lq(&[("step", "0"), ("from", "10"), ("stream", "stderr")]).unwrap();
        assert_eq!(
            (ok.step, ok.attempt, ok.from, ok.stream),
            (0, None, Some(10), Some("stderr"))
        );
        for (pairs, needle) in [
            (vec![], "count from 0"),
            (vec![("step", "-1")], "steps count from 0"),
            (vec![("step", "0"), ("attempt", "0")], "count from 1"),
            (vec![("step", "0"), ("from", "-5")], "byte offset"),
            (vec![("step", "0"), ("from", "x")], "byte offset"),
            (vec![("step", "0"), ("from", "9"), ("to", "9")], "greater than from"),
            (vec![("step", "0"), ("stream", "stdin")], "stdout or stderr"),
            (vec![("step", "0"), ("limit", "0")], "1 to 1000"),
            (vec![("step", "0"), ("limit", "5000")], "1 to 1000"),
        ] {
            let err = lq(&pairs).unwrap_err();
            assert_eq!(err.status, 400, "{pairs:?}");
            assert!(err.message.contains(needle), "{pairs:?}: {}", err.message);
        }
    }
}
