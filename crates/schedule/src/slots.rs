//! Slot arithmetic, pure: the caller passes the time in. A slot is one fire
//! time of a schedule (in UTC, computed in the schedule's timezone by
//! croner, which fires a local time skipped by a spring-forward change at
//! the first valid time after it, and a local time that occurs twice once).

use crate::definition::{Catchup, Schedule};
use chrono::{DateTime, Duration, Utc};

/// The fire times strictly after `after` and at or before `until`, oldest
/// first, at most `limit` of them.
pub fn slots_between(s: &Schedule, after: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = after.with_timezone(&s.timezone);
    while out.len() < limit {
        let Ok(next) = s.cron.find_next_occurrence(&t, false) else {
            break;
        };
        let utc = next.with_timezone(&Utc);
        if utc > until {
            break;
        }
        out.push(utc);
        t = next;
    }
    out
}

/// The next `n` fire times after `now`.
pub fn next_fire_times(s: &Schedule, now: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    slots_between(s, now, DateTime::<Utc>::MAX_UTC, n)
}

/// When a slot fires: its time plus the schedule's jitter offset, derived
/// from the schedule's name and the slot (FNV-1a), so every scheduler
/// instance agrees on it.
pub fn fire_at(s: &Schedule, slot: DateTime<Utc>) -> DateTime<Utc> {
    if s.jitter_secs == 0 {
        return slot;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in s.name.bytes().chain(slot.timestamp().to_le_bytes()) {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    slot + Duration::milliseconds((hash % (s.jitter_secs * 1000)) as i64)
}

/// What becomes of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// A run is started for it.
    Start,
    /// Folded into the catch-up run of a later slot.
    Coalesced,
    /// Outside the catch-up window, or `catchup: none`.
    Missed,
}

impl Fate {
    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Start => "started",
            Fate::Coalesced => "coalesced",
            Fate::Missed => "missed",
        }
    }
}

/// Decides the fate of the slots that are due (oldest first, each at or
/// before `now`). A slot that fires within `on_time` of its fire time is
/// started as usual; the others passed while no scheduler ran, and the
/// schedule's catch-up policy decides: `latest` starts the newest of them
/// (unless an on-time slot follows it) and coalesces the rest, `all` starts
/// each, `none` records them as missed. Slots older than the catch-up
/// window are missed whatever the policy.
pub fn catch_up(
    s: &Schedule,
    due: &[DateTime<Utc>],
    now: DateTime<Utc>,
    on_time: Duration,
) -> Vec<(DateTime<Utc>, Fate)> {
    let window = Duration::seconds(s.catchup_window_secs.min(i64::MAX as u64 / 1000) as i64);
    let late = |slot: &DateTime<Utc>| now - fire_at(s, *slot) > on_time;
    let newest_late = due.iter().rposition(late);
    let any_on_time_after = |i: usize| due[i + 1..].iter().any(|slot| !late(slot));
    due.iter()
        .enumerate()
        .map(|(i, slot)| {
            let fate = if !late(slot) {
                Fate::Start
            } else if now - *slot > window {
                Fate::Missed
            } else {
                match s.catchup {
                    Catchup::All => Fate::Start,
                    Catchup::None => Fate::Missed,
                    Catchup::Latest if Some(i) == newest_late && !any_on_time_after(i) => Fate::Start,
                    Catchup::Latest => Fate::Coalesced,
                }
            };
            (*slot, fate)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::parse;
    use chrono::TimeZone;

    fn schedule(cron: &str, tz: &str, catchup: &str) -> Schedule {
        let text =
            format!(r#"{{"s": {{"sequence": "q", "cron": "{cron}", "timezone": "{tz}", "catchup": "{catchup}"}}}}"#);
        parse("schedules.json", &text, |_| true).unwrap().remove(0)
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn local(s: &Schedule, slots: &[DateTime<Utc>]) -> Vec<String> {
        slots
            .iter()
            .map(|t| t.with_timezone(&s.timezone).format("%m-%d %H:%M %Z").to_string())
            .collect()
    }

    #[test]
    fn a_0230_daily_job_on_the_spring_forward_and_fall_back_days() {
        // Europe/Madrid: 2026-03-29 02:00 -> 03:00; 2026-10-25 03:00 -> 02:00.
        let s = schedule("30 2 * * *", "Europe/Madrid", "latest");
        let spring = slots_between(&s, utc(2026, 3, 27, 12, 0), utc(2026, 3, 30, 12, 0), 10);
        assert_eq!(
            local(&s, &spring),
            ["03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST"]
        );
        let autumn = slots_between(&s, utc(2026, 10, 24, 12, 0), utc(2026, 10, 26, 12, 0), 10);
        assert_eq!(local(&s, &autumn), ["10-25 02:30 CEST", "10-26 02:30 CET"]);
        // America/New_York: 2026-03-08 02:00 -> 03:00; 2026-11-01 02:00 -> 01:00.
        let s = schedule("30 2 * * *", "America/New_York", "latest");
        let spring = slots_between(&s, utc(2026, 3, 7, 12, 0), utc(2026, 3, 9, 12, 0), 10);
        assert_eq!(local(&s, &spring), ["03-08 03:00 EDT", "03-09 02:30 EDT"]);
        let autumn = slots_between(&s, utc(2026, 10, 31, 12, 0), utc(2026, 11, 2, 12, 0), 10);
        assert_eq!(local(&s, &autumn), ["11-01 02:30 EST", "11-02 02:30 EST"]);
    }

    #[test]
    fn an_hourly_job_across_the_changes_fires_once_per_real_hour() {
        let s = schedule("0 * * * *", "Europe/Madrid", "latest");
        // Spring: local 02:00 does not exist; 23 slots that day.
        let spring = slots_between(&s, utc(2026, 3, 28, 22, 59), utc(2026, 3, 29, 21, 59), 100);
        assert_eq!(spring.len(), 23, "{:?}", local(&s, &spring));
        // Autumn: the day has 25 real hours and an hourly job fires in each
        // (02:00 CEST, then 02:00 CET), while a fixed-time daily job fires
        // once (above).
        let autumn = slots_between(&s, utc(2026, 10, 24, 21, 59), utc(2026, 10, 25, 22, 59), 100);
        assert_eq!(autumn.len(), 25, "{:?}", local(&s, &autumn));
        assert_eq!(local(&s, &autumn[2..4]), ["10-25 02:00 CEST", "10-25 02:00 CET"]);
        let mut sorted = autumn.clone();
        sorted.dedup();
        assert_eq!(sorted, autumn, "no slot twice");
    }

    #[test]
    fn catch_up_policies_decide_the_fate_of_each_slot() {
        let now = utc(2026, 11, 28, 12, 0);
        let due: Vec<_> = (0..4).map(|h| utc(2026, 11, 28, 9 + h, 0)).collect(); // 09..12
        let on_time = Duration::seconds(60);
        let fates = |catchup| -> Vec<Fate> {
            let s = schedule("0 * * * *", "UTC", catchup);
            catch_up(&s, &due, now, on_time).into_iter().map(|(_, f)| f).collect()
        };
        use Fate::*;
        // 12:00 is on time and starts; 09..11 passed while no scheduler ran.
        assert_eq!(fates("latest"), [Coalesced, Coalesced, Coalesced, Start]);
        assert_eq!(fates("all"), [Start, Start, Start, Start]);
        assert_eq!(fates("none"), [Missed, Missed, Missed, Start]);
        // Without an on-time slot, `latest` starts the newest late one.
        let s = schedule("0 * * * *", "UTC", "latest");
        let late: Vec<Fate> = catch_up(&s, &due[..3], now, on_time)
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        assert_eq!(late, [Coalesced, Coalesced, Start]);
    }

    #[test]
    fn slots_older_than_the_window_are_missed_whatever_the_policy() {
        let text = r#"{"s": {"sequence": "q", "cron": "0 * * * *", "catchup": "all", "catchup_window_secs": 7200}}"#;
        let s = parse("schedules.json", text, |_| true).unwrap().remove(0);
        let now = utc(2026, 11, 28, 12, 30);
        let due: Vec<_> = (0..4).map(|h| utc(2026, 11, 28, 9 + h, 0)).collect();
        let fates: Vec<Fate> = catch_up(&s, &due, now, Duration::seconds(60))
            .into_iter()
            .map(|(_, f)| f)
            .collect();
        // 09:00 and 10:00 are more than two hours old at 12:30.
        assert_eq!(fates, [Fate::Missed, Fate::Missed, Fate::Start, Fate::Start]);
    }

    #[test]
    fn jitter_is_the_same_everywhere_and_within_bounds() {
        let text = r#"{"s": {"sequence": "q", "cron": "* * * * *", "jitter_secs": 30}}"#;
        let s = parse("schedules.json", text, |_| true).unwrap().remove(0);
        let slot = utc(2026, 11, 28, 12, 0);
        let a = fire_at(&s, slot);
        assert_eq!(a, fire_at(&s, slot));
        assert!(a >= slot && a < slot + Duration::seconds(30));
        let offsets: std::collections::BTreeSet<_> = (0..20)
            .map(|m| fire_at(&s, slot + Duration::minutes(m)) - (slot + Duration::minutes(m)))
            .collect();
        assert!(offsets.len() > 5, "offsets spread: {offsets:?}");
    }

    #[test]
    fn a_seconds_schedule_gives_one_slot_per_second() {
        let s = schedule("* * * * * *", "UTC", "latest");
        let t = utc(2026, 11, 28, 12, 0);
        assert_eq!(slots_between(&s, t, t + Duration::seconds(10), 100).len(), 10);
    }
}
