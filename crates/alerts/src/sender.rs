//! The sender: delivers the recorded events. Every worker runs [`run`]; a
//! lease in PostgreSQL (`alert_lease`) lets one of them act at a time. One
//! pass, [`send_once`]:
//!
//! 1. routes the new events: one delivery per target of `alerts.json` that
//!    wants the event (a healthcheck ping: one to its URL), held when the
//!    target's `max_frequency_secs` says so ([`crate::throttle::admit`]);
//! 2. sends the held deliveries whose period ended: the newest, with the
//!    others counted into it;
//! 3. claims the due deliveries (`FOR UPDATE SKIP LOCKED`, so even two
//!    senders never attempt one delivery at once), attempts each, all at
//!    once, and records every attempt and its outcome with a
//!    compare-and-set on the claim; a failed attempt is retried after a
//!    doubling delay ([`crate::throttle::next`]).
//!
//! Delivery never touches a step: it runs on its own task, reads and
//! writes only the alert tables, and a slow or dead receiver only delays
//! other alerts (each attempt is bounded by its target's timeout). An
//! attempt whose outcome could not be recorded (the worker died between
//! the answer and the write) is made again once its claim runs out: a
//! delivery is at least once, and exactly once unless that happens
//! (receivers can drop duplicates by the `X-Scheduler-Delivery` header).

use crate::config::{AlertsConfig, HEALTHCHECK_TARGET};
use crate::event::{Event, EventKind, Folded};
use crate::send::{Attempt, Env};
use crate::throttle::{self, Admission, Next};
use chrono::{DateTime, Utc};
use scheduler_tracker::{AttemptRecord, DueDelivery, EventRow, Route, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How a sender runs.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Where `alerts.json` is (read again at every pass).
    pub project_dir: PathBuf,
    /// Between two passes.
    pub every: Duration,
    /// Deliveries attempted at once in one pass, at most.
    pub batch: i64,
}

impl SenderConfig {
    pub fn new(project_dir: impl Into<PathBuf>) -> SenderConfig {
        SenderConfig {
            project_dir: project_dir.into(),
            every: Duration::from_secs(1),
            batch: 20,
        }
    }
}

/// A healthcheck ping's bound, retries and first retry delay.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
const PING_RETRIES: u32 = 3;
const PING_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Reads and validates `<dir>/alerts.json`; no file means no targets.
pub fn load(dir: &Path) -> Result<AlertsConfig, String> {
    let path = dir.join("alerts.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => crate::config::parse("alerts.json", &text).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AlertsConfig::default()),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// The sender loop, until `stop`.
pub async fn run(store: Arc<dyn Store>, worker_id: Uuid, config: SenderConfig, stop: CancellationToken) {
    let mut alerts = AlertsConfig::default();
    let mut last_error: Option<String> = None;
    // Until alerts.json has been read once, nothing is routed: an event
    // routed while the file is broken would reach no target.
    let mut read_once = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(config.every) => {}
        }
        match store.take_alert_lease(worker_id, lease_ttl(&config)).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "could not take the alert lease");
                continue;
            }
        }
        // A file that does not validate keeps the targets read before.
        match load(&config.project_dir) {
            Ok(a) => {
                alerts = a;
                last_error = None;
                read_once = true;
            }
            Err(e) if last_error.as_ref() != Some(&e) => {
                tracing::error!(error = %e, "alerts.json not (re)read; keeping the targets read before");
                last_error = Some(e);
            }
            Err(_) => {}
        }
        if !read_once {
            continue;
        }
        if let Err(e) = send_once(&*store, worker_id, &alerts, config.batch, &crate::send::process_env).await {
            tracing::warn!(error = %e, "alert pass failed; trying again at the next one");
        }
    }
}

fn lease_ttl(config: &SenderConfig) -> Duration {
    (config.every * 5).max(Duration::from_secs(10))
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    pub routed: usize,
    pub flushed: usize,
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
}

/// One pass: route, flush what was held, attempt what is due.
pub async fn send_once(
    store: &dyn Store,
    worker_id: Uuid,
    alerts: &AlertsConfig,
    batch: i64,
    env: Env<'_>,
) -> scheduler_tracker::Result<Pass> {
    let mut pass = Pass::default();
    let now = Utc::now();
    let events = store.unrouted_events(500).await?;
    if !events.is_empty() {
        let keys = throttled_keys(alerts, &events);
        let last = if keys.is_empty() {
            vec![]
        } else {
            store.last_sent(&keys).await?
        };
        let routes = routes(alerts, &events, &last, now);
        let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
        store.route_events(&ids, &routes).await?;
        pass.routed = events.len();
    }
    for group in store.held_groups().await? {
        let period = alerts.target(&group.target).and_then(|t| t.max_frequency);
        if throttle::flush_due(period, group.last_sent, now)
            && store.flush_held(&group.target, &group.kind, &group.subject).await?
        {
            pass.flushed += 1;
        }
    }
    let hold = alerts
        .targets
        .iter()
        .map(|t| t.timeout * 2)
        .chain([PING_TIMEOUT])
        .max()
        .unwrap_or(PING_TIMEOUT)
        + Duration::from_secs(30);
    let due = store.claim_deliveries(worker_id, batch, hold).await?;
    let attempts = due.iter().map(|d| attempt(alerts, d, env));
    let answers = futures_util::future::join_all(attempts).await;
    for (d, (attempt, next)) in due.iter().zip(answers) {
        let (outcome, retry_in) = match next {
            Next::Sent => ("sent", None),
            Next::Retry(after) => ("retry", Some(after)),
            Next::Failed => ("failed", None),
        };
        let record = AttemptRecord {
            event_id: d.event.id,
            target: &d.target,
            worker_id,
            attempt: d.attempt,
            outcome,
            status: attempt.status.map(i32::from),
            response: &attempt.excerpt,
            elapsed: attempt.elapsed,
            retry_in,
        };
        let recorded = store.record_attempt(&record).await?;
        match next {
            Next::Sent => pass.sent += 1,
            Next::Retry(_) => pass.retrying += 1,
            Next::Failed => pass.failed += 1,
        }
        let (event_id, target, status) = (d.event.id, &d.target, attempt.status);
        match next {
            Next::Sent => tracing::info!(event_id, %target, kind = %d.event.kind, ?status, recorded, "alert delivered"),
            _ => {
                tracing::warn!(event_id, %target, kind = %d.event.kind, ?status, outcome, answer = %attempt.excerpt, recorded, "alert not delivered")
            }
        }
    }
    Ok(pass)
}

/// The (target, kind, subject) keys whose last sending decides whether a
/// new event is held.
fn throttled_keys(alerts: &AlertsConfig, events: &[EventRow]) -> Vec<(String, String, String)> {
    let mut keys = Vec::new();
    for row in events {
        let Some(event) = to_event(row) else { continue };
        for target in alerts.targets_for(event.kind).filter(|t| t.max_frequency.is_some()) {
            let key = (target.name.clone(), row.kind.clone(), event.subject());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// The deliveries of new events (pure): each target that wants an event
/// gets one, held when its period since the last one of the same kind and
/// subject has not ended; a healthcheck ping goes to its URL. Events of one
/// batch count against each other: the second failure of a burst is held.
pub fn routes(
    alerts: &AlertsConfig,
    events: &[EventRow],
    last_sent: &[(String, String, String, DateTime<Utc>)],
    now: DateTime<Utc>,
) -> Vec<Route> {
    let mut sent: Vec<(String, String, String, DateTime<Utc>)> = last_sent.to_vec();
    let mut out = Vec::new();
    for row in events {
        let Some(event) = to_event(row) else {
            tracing::warn!(event_id = row.id, kind = %row.kind, "an event of a kind this sender does not know; skipped");
            continue;
        };
        let subject = event.subject();
        if event.kind.is_ping() {
            if let Some(url) = event.detail_str("url") {
                out.push(Route {
                    event_id: row.id,
                    target: HEALTHCHECK_TARGET.into(),
                    kind: row.kind.clone(),
                    subject,
                    held: false,
                    url: Some(format!("{}{}", url.trim_end_matches('/'), event.kind.ping_suffix())),
                });
            }
            continue;
        }
        for target in alerts.targets_for(event.kind) {
            let last = sent
                .iter()
                .find(|(t, k, s, _)| *t == target.name && *k == row.kind && *s == subject)
                .map(|(.., at)| *at);
            let held = throttle::admit(event.kind, target.max_frequency, last, now) == Admission::Hold;
            if !held {
                sent.retain(|(t, k, s, _)| !(*t == target.name && *k == row.kind && *s == subject));
                sent.push((target.name.clone(), row.kind.clone(), subject.clone(), now));
            }
            out.push(Route {
                event_id: row.id,
                target: target.name.clone(),
                kind: row.kind.clone(),
                subject: subject.clone(),
                held,
                url: None,
            });
        }
    }
    out
}

/// A recorded event as the payload builders take it.
pub fn to_event(row: &EventRow) -> Option<Event> {
    Some(Event {
        id: row.id,
        kind: EventKind::parse(&row.kind)?,
        at: row.at,
        sequence: row.sequence.clone(),
        run_id: row.run_id,
        step: row.step.map(|s| s.max(0) as u32),
        attempt: row.attempt.map(|a| a.max(0) as u32),
        schedule: row.schedule.clone(),
        slot_at: row.slot_at,
        worker_id: row.worker_id,
        message: row.message.clone(),
        detail: row.detail.clone(),
    })
}

/// One attempt of a claimed delivery, and what follows it.
async fn attempt(alerts: &AlertsConfig, d: &DueDelivery, env: Env<'_>) -> (Attempt, Next) {
    let failed = |why: String| {
        let attempt = Attempt {
            answer: throttle::Answer::Permanent,
            status: None,
            excerpt: why,
            elapsed: Duration::ZERO,
        };
        (attempt, Next::Failed)
    };
    let Some(event) = to_event(&d.event) else {
        return failed(format!("unknown event kind {:?}", d.event.kind));
    };
    if d.target == HEALTHCHECK_TARGET {
        let Some(url) = &d.url else {
            return failed("a healthcheck ping without a URL".into());
        };
        let attempt = crate::send::ping(url, PING_TIMEOUT).await;
        let next = throttle::next(attempt.answer, d.attempt.max(1) as u32, PING_RETRIES, PING_RETRY_DELAY);
        return (attempt, next);
    }
    let Some(target) = alerts.target(&d.target) else {
        return failed(format!(
            "target {:?} is no longer in alerts.json (targets: {})",
            d.target,
            alerts.names()
        ));
    };
    let folded = d.folded_since.filter(|_| d.folded > 0).map(|since| Folded {
        count: d.folded as u32,
        since,
    });
    let attempt = crate::send::send(alerts, target, &event, folded, env).await;
    let next = throttle::next(
        attempt.answer,
        d.attempt.max(1) as u32,
        target.retries,
        target.retry_delay,
    );
    (attempt, next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(id: i64, kind: &str, sequence: &str) -> EventRow {
        EventRow {
            id,
            kind: kind.into(),
            at: Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap(),
            sequence: Some(sequence.into()),
            run_id: None,
            step: Some(0),
            attempt: Some(1),
            schedule: None,
            slot_at: None,
            worker_id: None,
            message: None,
            detail: serde_json::json!({}),
        }
    }

    fn config() -> AlertsConfig {
        crate::config::parse(
            "alerts.json",
            r#"{"targets": {
                "slow": {"type": "webhook", "url": "http://127.0.0.1:1/", "events": ["run_failed"], "max_frequency_secs": 600},
                "all": {"type": "webhook", "url": "http://127.0.0.1:1/", "events": ["run_failed", "step_retrying"]}}}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_burst_goes_once_to_a_throttled_target_and_whole_to_the_others() {
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 1).unwrap();
        let events = [
            row(1, "run_failed", "nightly"),
            row(2, "run_failed", "nightly"),
            row(3, "run_failed", "hourly"),
        ];
        let r = routes(&config(), &events, &[], now);
        let held: Vec<(i64, &str, bool)> = r.iter().map(|r| (r.event_id, r.target.as_str(), r.held)).collect();
        assert_eq!(
            held,
            [
                (1, "all", false),
                (1, "slow", false),
                (2, "all", false),
                (2, "slow", true),
                (3, "all", false),
                (3, "slow", false)
            ]
        );
    }

    #[test]
    fn a_target_that_sent_within_its_period_holds_and_recoveries_go_to_targets_of_failures() {
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 10, 5, 0).unwrap();
        let before = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
        let last = [(
            "slow".to_string(),
            "run_failed".to_string(),
            "nightly".to_string(),
            before,
        )];
        let events = [row(1, "run_failed", "nightly"), row(2, "run_recovered", "nightly")];
        let r = routes(&config(), &events, &last, now);
        let got: Vec<(i64, &str, bool)> = r.iter().map(|r| (r.event_id, r.target.as_str(), r.held)).collect();
        assert_eq!(
            got,
            [
                (1, "all", false),
                (1, "slow", true),
                (2, "all", false),
                (2, "slow", false)
            ]
        );
    }

    #[test]
    fn a_ping_goes_to_its_url_with_the_healthchecks_suffix() {
        let mut ping = row(1, "healthcheck_fail", "nightly");
        ping.detail = serde_json::json!({"url": "https://hc.example/ping/abc/"});
        let r = routes(&AlertsConfig::default(), &[ping], &[], Utc::now());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].target, HEALTHCHECK_TARGET);
        assert_eq!(r[0].url.as_deref(), Some("https://hc.example/ping/abc/fail"));
    }
}
