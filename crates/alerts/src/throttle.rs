//! The sender's decisions, pure: whether an event goes now or is held to
//! bound a flood (`max_frequency_secs`), when held ones go, and what an
//! attempt's answer means (sent, try again after a backoff, give up). Times
//! are passed in, so every rule is unit-tested with fixed dates.

use crate::event::EventKind;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// What becomes of a new event for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Deliver it (and count into it whatever was held for its kind and subject).
    Send,
    /// One of its kind and subject went to this target less than a period
    /// ago: hold it; it is counted into the next one.
    Hold,
}

/// Whether an event of `kind` for a target throttled to one per `period`
/// goes now, given when the last one of its kind and subject went.
/// Recoveries, tests and healthcheck pings are never held: a recovery ends
/// a flood, and a late ping would trip the dead-man's switch.
pub fn admit(
    kind: EventKind,
    period: Option<Duration>,
    last_sent: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Admission {
    if matches!(kind, EventKind::RunRecovered | EventKind::Test) || kind.is_ping() {
        return Admission::Send;
    }
    match (period, last_sent) {
        (Some(period), Some(last)) if now < last + period => Admission::Hold,
        _ => Admission::Send,
    }
}

/// Whether the events held for a kind and subject go now: the period since
/// the last one that went is over (the newest held one goes, the others
/// counted into it).
pub fn flush_due(period: Option<Duration>, last_sent: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    match (period, last_sent) {
        (Some(period), Some(last)) => now >= last + period,
        _ => true,
    }
}

/// What an attempt's answer says about the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Accepted (2xx; SMTP accepted the message).
    Delivered,
    /// Worth another try: a 5xx, 408, 425, 429, a timeout, a lost
    /// connection, an SMTP 4xx.
    Transient,
    /// Another try would be answered the same (another 4xx, a redirect,
    /// an SMTP 5xx, a missing credential): give up and say why.
    Permanent,
}

/// What an HTTP status means for a delivery.
pub fn classify_http(status: u16) -> Answer {
    match status {
        200..=299 => Answer::Delivered,
        408 | 425 | 429 | 500..=599 => Answer::Transient,
        _ => Answer::Permanent,
    }
}

/// The delivery's next state after attempt number `attempt` (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Sent,
    /// Try again after this long.
    Retry(Duration),
    /// Give up.
    Failed,
}

/// Attempt `attempt` (from 1) got `answer`; the target allows `retries`
/// more attempts after the first, the first after `first_delay`, doubling.
pub fn next(answer: Answer, attempt: u32, retries: u32, first_delay: Duration) -> Next {
    match answer {
        Answer::Delivered => Next::Sent,
        Answer::Transient if attempt <= retries => Next::Retry(backoff(first_delay, attempt)),
        _ => Next::Failed,
    }
}

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// `first * 2^(retry - 1)`, saturating, capped at [`MAX_BACKOFF`].
pub fn backoff(first: Duration, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(min: u32, sec: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 10, min, sec).unwrap()
    }

    const TEN_MIN: Option<Duration> = Some(Duration::from_secs(600));

    #[test]
    fn one_alert_per_period_then_the_next_one_goes() {
        let first = at(2, 0);
        assert_eq!(admit(EventKind::RunFailed, TEN_MIN, None, first), Admission::Send);
        assert_eq!(
            admit(EventKind::RunFailed, TEN_MIN, Some(first), at(3, 0)),
            Admission::Hold
        );
        assert_eq!(
            admit(EventKind::RunFailed, TEN_MIN, Some(first), at(11, 59)),
            Admission::Hold
        );
        assert_eq!(
            admit(EventKind::RunFailed, TEN_MIN, Some(first), at(12, 0)),
            Admission::Send
        );
        assert!(!flush_due(TEN_MIN, Some(first), at(11, 59)));
        assert!(flush_due(TEN_MIN, Some(first), at(12, 0)));
    }

    #[test]
    fn without_a_period_nothing_is_held() {
        assert_eq!(
            admit(EventKind::RunFailed, None, Some(at(2, 0)), at(2, 1)),
            Admission::Send
        );
        assert!(flush_due(None, Some(at(2, 0)), at(2, 1)));
    }

    #[test]
    fn recoveries_tests_and_pings_are_never_held() {
        for kind in [
            EventKind::RunRecovered,
            EventKind::Test,
            EventKind::HealthcheckStart,
            EventKind::HealthcheckFail,
        ] {
            assert_eq!(
                admit(kind, TEN_MIN, Some(at(2, 0)), at(2, 1)),
                Admission::Send,
                "{kind}"
            );
        }
    }

    #[test]
    fn http_answers_are_classified_for_retrying() {
        assert_eq!(classify_http(200), Answer::Delivered);
        assert_eq!(classify_http(204), Answer::Delivered);
        for s in [408, 425, 429, 500, 502, 503] {
            assert_eq!(classify_http(s), Answer::Transient, "{s}");
        }
        for s in [301, 400, 401, 403, 404, 410] {
            assert_eq!(classify_http(s), Answer::Permanent, "{s}");
        }
    }

    #[test]
    fn transient_failures_are_retried_with_doubling_delays_until_the_retries_are_spent() {
        let d = Duration::from_secs(10);
        assert_eq!(next(Answer::Transient, 1, 3, d), Next::Retry(Duration::from_secs(10)));
        assert_eq!(next(Answer::Transient, 2, 3, d), Next::Retry(Duration::from_secs(20)));
        assert_eq!(next(Answer::Transient, 3, 3, d), Next::Retry(Duration::from_secs(40)));
        assert_eq!(next(Answer::Transient, 4, 3, d), Next::Failed);
        assert_eq!(next(Answer::Permanent, 1, 3, d), Next::Failed);
        assert_eq!(next(Answer::Delivered, 4, 3, d), Next::Sent);
        assert_eq!(next(Answer::Transient, 1, 0, d), Next::Failed);
    }

    #[test]
    fn backoff_saturates_and_is_capped() {
        assert_eq!(backoff(Duration::from_secs(10), 0), Duration::from_secs(10));
        assert_eq!(backoff(Duration::from_secs(10), 9), Duration::from_secs(2560));
        assert_eq!(backoff(Duration::from_secs(10), 10), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(3600), 40), MAX_BACKOFF);
    }
}
