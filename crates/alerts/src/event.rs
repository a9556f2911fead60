//! What an alert is about: an [`Event`] as the tracker recorded it (in the
//! same statement as the state change that caused it), and its [`EventKind`].

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The kinds of event a target may ask for in `alerts.json`, and the pings
/// of a healthcheck (never listed by a target: a sequence or a schedule
/// names its `healthcheck_url`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A run moved to `failed`.
    RunFailed,
    /// A run succeeded after the sequence's previous finished run failed.
    RunRecovered,
    /// A step failed and its next attempt waits for its retry delay.
    StepRetrying,
    /// A step printed nothing (and its output did not grow) for its `stall_secs`.
    StepStalled,
    /// A schedule's slot passed while no scheduler ran, outside its catch-up.
    SlotMissed,
    /// A schedule's slot started no run: the sequence's concurrency policy skipped it.
    SlotSkipped,
    /// A worker stopped heartbeating (killed, or cut off) without stopping.
    WorkerLost,
    /// `scheduler alerts test`.
    Test,
    /// A run of a sequence with a `healthcheck_url` started (`<url>/start`).
    HealthcheckStart,
    /// ... succeeded (`<url>`).
    HealthcheckSuccess,
    /// ... failed (`<url>/fail`).
    HealthcheckFail,
}

impl EventKind {
    /// The kinds a target may list, in the order the docs give them.
    pub const SUBSCRIBABLE: [EventKind; 7] = [
        EventKind::RunFailed,
        EventKind::RunRecovered,
        EventKind::StepRetrying,
        EventKind::StepStalled,
        EventKind::SlotMissed,
        EventKind::SlotSkipped,
        EventKind::WorkerLost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RunFailed => "run_failed",
            EventKind::RunRecovered => "run_recovered",
            EventKind::StepRetrying => "step_retrying",
            EventKind::StepStalled => "step_stalled",
            EventKind::SlotMissed => "slot_missed",
            EventKind::SlotSkipped => "slot_skipped",
            EventKind::WorkerLost => "worker_lost",
            EventKind::Test => "test",
            EventKind::HealthcheckStart => "healthcheck_start",
            EventKind::HealthcheckSuccess => "healthcheck_success",
            EventKind::HealthcheckFail => "healthcheck_fail",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Some(match s {
            "run_failed" => EventKind::RunFailed,
            "run_recovered" => EventKind::RunRecovered,
            "step_retrying" => EventKind::StepRetrying,
            "step_stalled" => EventKind::StepStalled,
            "slot_missed" => EventKind::SlotMissed,
            "slot_skipped" => EventKind::SlotSkipped,
            "worker_lost" => EventKind::WorkerLost,
            "test" => EventKind::Test,
            "healthcheck_start" => EventKind::HealthcheckStart,
            "healthcheck_success" => EventKind::HealthcheckSuccess,
            "healthcheck_fail" => EventKind::HealthcheckFail,
            _ => return None,
        })
    }

    /// A healthcheck ping: delivered to the URL the event carries, not to
    /// the targets of `alerts.json`.
    pub fn is_ping(self) -> bool {
        matches!(
            self,
            EventKind::HealthcheckStart | EventKind::HealthcheckSuccess | EventKind::HealthcheckFail
        )
    }

    /// The path a healthcheck ping appends to the URL (Healthchecks.io's convention).
    pub fn ping_suffix(self) -> &'static str {
        match self {
            EventKind::HealthcheckStart => "/start",
            EventKind::HealthcheckFail => "/fail",
            _ => "",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded event, as a sender delivers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub kind: EventKind,
    pub at: DateTime<Utc>,
    pub sequence: Option<String>,
    pub run_id: Option<Uuid>,
    /// The step, counted from 0 as recorded (messages show it from 1, as `show` does).
    pub step: Option<u32>,
    pub attempt: Option<u32>,
    pub schedule: Option<String>,
    pub slot_at: Option<DateTime<Utc>>,
    pub worker_id: Option<Uuid>,
    /// The reason, as recorded (a step's error, a slot's note).
    pub message: Option<String>,
    /// What else the statement that recorded it knew (module, retry, URL...).
    pub detail: serde_json::Value,
}

impl Event {
    /// What throttling counts per: the sequence of a run or step event, the
    /// schedule of a slot event, nothing for a worker.
    pub fn subject(&self) -> String {
        match self.kind {
            EventKind::SlotMissed | EventKind::SlotSkipped => self.schedule.clone().unwrap_or_default(),
            EventKind::WorkerLost | EventKind::Test => String::new(),
            _ => self.sequence.clone().unwrap_or_default(),
        }
    }

    /// A string field of `detail`.
    pub fn detail_str(&self, key: &str) -> Option<&str> {
        self.detail.get(key).and_then(|v| v.as_str())
    }

    /// A number field of `detail`.
    pub fn detail_i64(&self, key: &str) -> Option<i64> {
        self.detail.get(key).and_then(|v| v.as_i64())
    }
}

/// Others of the same kind and subject a throttled target was not sent,
/// counted into this delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Folded {
    pub count: u32,
    /// When the oldest of them happened.
    pub since: DateTime<Utc>,
}
