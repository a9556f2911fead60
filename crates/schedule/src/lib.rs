//! Schedules, pure: `schedules.json` parsed and validated (`definition`),
//! the slot arithmetic (`slots`): fire times in a schedule's timezone,
//! the jitter offset every instance agrees on, and the fate of the slots a
//! scheduler finds due; and the plan that replaces a crontab (`crontab`).
//! No I/O and no clock: callers pass text and times in, so daylight-saving
//! days are unit-tested with fixed dates.

pub mod crontab;
pub mod definition;
pub mod slots;

pub use definition::{Catchup, Schedule, ScheduleError, parse, parse_cron};
pub use slots::{Fate, catch_up, fire_at, next_fire_times, slots_between};
