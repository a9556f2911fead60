//! What a target is sent, pure: one line of text that says what happened
//! (Slack shows a webhook body's `text`), the JSON body of a webhook with
//! every field of the event, its HMAC-SHA256 signature, and an email's
//! subject and body.

use crate::event::{Event, EventKind, Folded};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// The header that carries a signed webhook body's signature.
pub const SIGNATURE_HEADER: &str = "X-Scheduler-Signature";

/// `sha256=<hex of HMAC-SHA256(secret, body)>`, GitHub's convention: a
/// receiver recomputes it over the raw body it received.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // An HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn hhmm(at: DateTime<Utc>) -> String {
    at.format("%H:%M UTC").to_string()
}

fn short(id: &uuid::Uuid) -> String {
    id.to_string()[..8].to_string()
}

/// A step as `show` numbers them (from 1), with its module when known.
fn step_name(event: &Event) -> String {
    let n = event.step.map(|s| (s + 1).to_string()).unwrap_or_else(|| "?".into());
    match event.detail_str("module") {
        Some(m) => format!("step {n} ({m})"),
        None => format!("step {n}"),
    }
}

/// The steps a lost worker held (`detail.runs`), a few named:
/// "; it held run 0190abcd (nightly step 2)".
fn held_steps(event: &Event) -> String {
    const NAMED: usize = 3;
    let runs = event
        .detail
        .get("runs")
        .and_then(|r| r.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default();
    if runs.is_empty() {
        return String::new();
    }
    let named: Vec<String> = runs
        .iter()
        .take(NAMED)
        .map(|r| {
            let run = r["run_id"]
                .as_str()
                .map(|id| id.chars().take(8).collect())
                .unwrap_or_else(|| "?".to_string());
            let seq = r["sequence"].as_str().unwrap_or("?");
            let step = r["step"].as_i64().map(|s| s.to_string()).unwrap_or_else(|| "?".into());
            format!("run {run} ({seq} step {step})")
        })
        .collect();
    let more = match runs.len().saturating_sub(NAMED) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!("; it held {}{more}", named.join(", "))
}

/// The run's page, when the UI's address is known.
pub fn run_link(event: &Event, ui_url: Option<&str>) -> Option<String> {
    Some(format!("{}/runs/{}", ui_url?, event.run_id?))
}

/// The one line that says what happened.
pub fn text(event: &Event, folded: Option<Folded>, ui_url: Option<&str>) -> String {
    let seq = event.sequence.as_deref().unwrap_or("?");
    let run = event.run_id.as_ref().map(short).unwrap_or_else(|| "?".into());
    let reason = event.message.as_deref().unwrap_or("no reason recorded");
    let mut line = match event.kind {
        EventKind::RunFailed => format!("Run {run} of {seq} failed at {}: {reason}", step_name(event)),
        EventKind::RunRecovered => {
            let failures = event.detail_i64("failures").unwrap_or(1);
            let since = event
                .detail_str("failing_since")
                .and_then(|s| s.parse::<DateTime<Utc>>().ok())
                .map(|t| format!(" since {}", hhmm(t)))
                .unwrap_or_default();
            let runs = if failures == 1 { "run" } else { "runs" };
            format!("{seq} is green again: run {run} succeeded after {failures} failed {runs}{since}")
        }
        EventKind::StepRetrying => {
            let retry = event.detail_i64("retry").unwrap_or(1);
            let of = event
                .detail_i64("retries")
                .map(|n| format!(" of {n}"))
                .unwrap_or_default();
            let when = event
                .detail_str("due_at")
                .and_then(|s| s.parse::<DateTime<Utc>>().ok())
                .map(|t| format!(" at {}", t.format("%H:%M:%S UTC")))
                .unwrap_or_default();
            format!(
                "{seq} {} failed in run {run} ({reason}); retry {retry}{of}{when}",
                step_name(event)
            )
        }
        EventKind::StepStalled => format!("{seq} {} stalled in run {run}: {reason}", step_name(event)),
        EventKind::SlotMissed | EventKind::SlotSkipped => {
            let schedule = event.schedule.as_deref().unwrap_or("?");
            let slot = event.slot_at.map(hhmm).unwrap_or_else(|| "?".into());
            let what = if event.kind == EventKind::SlotMissed {
                "missed"
            } else {
                "skipped"
            };
            format!("Schedule {schedule} {what} its {slot} slot: {reason}")
        }
        EventKind::WorkerLost => {
            let worker = event.worker_id.as_ref().map(short).unwrap_or_else(|| "?".into());
            let host = event.detail_str("host").unwrap_or("?");
            let pid = event
                .detail_i64("pid")
                .map(|p| format!(", pid {p}"))
                .unwrap_or_default();
            // The recorded reason (its death seen by its keeper, or a lease
            // of silence), else the silence from the last heartbeat.
            let why = match &event.message {
                Some(m) => m.clone(),
                None => {
                    let last = event
                        .detail_str("heartbeat_at")
                        .and_then(|s| s.parse::<DateTime<Utc>>().ok())
                        .map(|t| format!(" since {}", t.format("%H:%M:%S UTC")))
                        .unwrap_or_default();
                    format!("no heartbeat{last}")
                }
            };
            format!(
                "Worker {worker} on {host}{pid} is lost: {why}{}; recovery hands its steps to other workers",
                held_steps(event)
            )
        }
        EventKind::Test => format!("Test alert from the scheduler: {reason}"),
        EventKind::HealthcheckStart | EventKind::HealthcheckSuccess | EventKind::HealthcheckFail => {
            format!("{seq} run {run}: {}", event.kind)
        }
    };
    if let Some(f) = folded.filter(|f| f.count > 0) {
        let noun = match event.kind {
            EventKind::RunFailed => "failures",
            EventKind::StepRetrying => "retries",
            EventKind::StepStalled => "stalls",
            EventKind::SlotMissed => "missed slots",
            EventKind::SlotSkipped => "skipped slots",
            EventKind::WorkerLost => "lost workers",
            _ => "events",
        };
        let of = match event.subject() {
            s if s.is_empty() => String::new(),
            s => format!(" of {s}"),
        };
        line.push_str(&format!(" (and {} more {noun}{of} since {})", f.count, hhmm(f.since)));
    }
    if let Some(link) = run_link(event, ui_url) {
        line.push_str(&format!(" <{link}>"));
    }
    line
}

/// A webhook's JSON body: Slack's `text`, then the event's fields (steps
/// counted from 1, as `show` does).
pub fn webhook_body(event: &Event, target: &str, folded: Option<Folded>, ui_url: Option<&str>) -> Vec<u8> {
    let body = json!({
        "text": text(event, folded, ui_url),
        "event": event.kind.as_str(),
        "id": event.id,
        "target": target,
        "at": event.at,
        "sequence": event.sequence,
        "run_id": event.run_id,
        "step": event.step.map(|s| s + 1),
        "attempt": event.attempt,
        "schedule": event.schedule,
        "slot_at": event.slot_at,
        "worker_id": event.worker_id,
        "message": event.message,
        "detail": event.detail,
        "folded": folded,
        "url": run_link(event, ui_url),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// An email's subject and plain-text body.
pub fn email(event: &Event, folded: Option<Folded>, ui_url: Option<&str>) -> (String, String) {
    let line = text(event, folded, ui_url);
    let full = format!("[scheduler] {line}");
    let subject = match full.chars().count() {
        n if n > 150 => format!("{}…", full.chars().take(149).collect::<String>()),
        _ => full,
    };
    let mut body = format!("{line}\n\n");
    let mut field = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            body.push_str(&format!("{name:<10} {v}\n"));
        }
    };
    field("event", Some(event.kind.to_string()));
    field("at", Some(event.at.to_rfc3339()));
    field("sequence", event.sequence.clone());
    field("run", event.run_id.map(|r| r.to_string()));
    field("step", event.step.map(|s| (s + 1).to_string()));
    field("attempt", event.attempt.map(|a| a.to_string()));
    field("schedule", event.schedule.clone());
    field("slot", event.slot_at.map(|s| s.to_rfc3339()));
    field("worker", event.worker_id.map(|w| w.to_string()));
    field("reason", event.message.clone());
    field("link", run_link(event, ui_url));
    (subject, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn failed() -> Event {
        Event {
            id: 7,
            kind: EventKind::RunFailed,
            at: Utc.with_ymd_and_hms(2026, 11, 28, 10, 2, 0).unwrap(),
            sequence: Some("nightly".into()),
            run_id: Some(uuid::Uuid::nil()),
            step: Some(1),
            attempt: Some(3),
            schedule: None,
            slot_at: None,
            worker_id: None,
            message: Some("exit code 1".into()),
            detail: json!({"module": "load"}),
        }
    }

    #[test]
    fn a_failure_says_which_run_step_and_why_and_links_to_the_run() {
        let t = text(&failed(), None, Some("http://ui:8080"));
        assert_eq!(
            t,
            "Run 00000000 of nightly failed at step 2 (load): exit code 1 \
             <http://ui:8080/runs/00000000-0000-0000-0000-000000000000>"
        );
    }

    #[test]
    fn folded_events_are_counted_into_the_line() {
        let since = Utc.with_ymd_and_hms(2026, 11, 28, 10, 2, 0).unwrap();
        let t = text(&failed(), Some(Folded { count: 14, since }), None);
        assert!(t.ends_with("(and 14 more failures of nightly since 10:02 UTC)"), "{t}");
    }

    #[test]
    fn a_recovery_a_retry_a_slot_and_a_lost_worker_read_plainly() {
        let mut e = failed();
        e.kind = EventKind::RunRecovered;
        e.detail = json!({"failures": 3, "failing_since": "2026-11-28T09:00:00Z"});
        assert_eq!(
            text(&e, None, None),
            "nightly is green again: run 00000000 succeeded after 3 failed runs since 09:00 UTC"
        );
        e.kind = EventKind::StepRetrying;
        e.detail = json!({"module": "load", "retry": 1, "retries": 3, "due_at": "2026-11-28T10:02:30Z"});
        assert_eq!(
            text(&e, None, None),
            "nightly step 2 (load) failed in run 00000000 (exit code 1); retry 1 of 3 at 10:02:30 UTC"
        );
        e.kind = EventKind::SlotMissed;
        e.schedule = Some("hourly".into());
        e.slot_at = Some(Utc.with_ymd_and_hms(2026, 11, 28, 9, 0, 0).unwrap());
        e.message = Some("passed while no scheduler ran".into());
        assert_eq!(
            text(&e, None, None),
            "Schedule hourly missed its 09:00 UTC slot: passed while no scheduler ran"
        );
        e.kind = EventKind::WorkerLost;
        e.worker_id = Some(uuid::Uuid::nil());
        e.message = None;
        e.detail = json!({"host": "etl-3", "pid": 4242, "heartbeat_at": "2026-11-28T10:01:00Z"});
        assert!(
            text(&e, None, None)
                .starts_with("Worker 00000000 on etl-3, pid 4242 is lost: no heartbeat since 10:01:00 UTC")
        );
        e.message = Some("the worker process died; its keeper stopped its modules".into());
        e.detail["runs"] = json!([
            {"run_id": "0190abcd-0000-7000-8000-000000000000", "sequence": "nightly", "step": 2, "attempt": 1},
            {"run_id": "0190ef01-0000-7000-8000-000000000000", "sequence": "hourly", "step": 1, "attempt": 3},
        ]);
        assert_eq!(
            text(&e, None, None),
            "Worker 00000000 on etl-3, pid 4242 is lost: the worker process died; its keeper stopped its modules; \
             it held run 0190abcd (nightly step 2), run 0190ef01 (hourly step 1); \
             recovery hands its steps to other workers"
        );
    }

    #[test]
    fn the_webhook_body_is_slack_compatible_and_carries_the_event() {
        let body: serde_json::Value = serde_json::from_slice(&webhook_body(&failed(), "ops", None, None)).unwrap();
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .starts_with("Run 00000000 of nightly failed")
        );
        assert_eq!(body["event"], "run_failed");
        assert_eq!(body["step"], 2);
        assert_eq!(body["detail"]["module"], "load");
        assert_eq!(body["target"], "ops");
    }

    #[test]
    fn the_signature_is_the_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn an_email_has_a_short_subject_and_every_field_in_its_body() {
        let (subject, body) = email(&failed(), None, None);
        assert!(subject.starts_with("[scheduler] Run 00000000 of nightly failed"));
        assert!(
            body.contains("step       2\n") && body.contains("reason     exit code 1\n"),
            "{body}"
        );
    }
}
