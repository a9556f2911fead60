//! `scheduler backfill SCHEDULE --from DAY --to DAY`: one run per slot of
//! the interval, through the producer like any scheduled start, each
//! recorded in the ledger as `backfilled` in the same transaction as its
//! run. A slot that already has a fate (fired, skipped, backfilled...) is
//! left alone: running it twice creates nothing more.

use crate::cli::Global;
use crate::connect;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use scheduler_producer::Slot;
use scheduler_tracker::Admitted;
use std::process::ExitCode;

pub async fn backfill(g: &Global, name: &str, from: &str, to: &str) -> anyhow::Result<ExitCode> {
    let project = connect::project(g)?;
    let schedules = scheduler_beat::load(&project)?;
    let Some(schedule) = schedules.iter().find(|s| s.name == name) else {
        let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
        anyhow::bail!(
            "no schedule named {name:?} in schedules.json (known: {})",
            names.join(", ")
        );
    };
    let start = instant(from, schedule.timezone, false).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let end = instant(to, schedule.timezone, true).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let now = Utc::now();
    if start > end {
        anyhow::bail!("--from {from} is after --to {to}");
    }
    let slots = scheduler_schedule::slots_between(
        schedule,
        start - chrono::Duration::milliseconds(1),
        end.min(now),
        100_000,
    );
    let store = connect::store(g, 2).await?;
    let transport = connect::transport(g, "scheduler backfill").await?;
    let (mut created, mut skipped, mut existed) = (0, 0, 0);
    for at in &slots {
        let slot = Slot {
            schedule: &schedule.name,
            at: *at,
            local: at.with_timezone(&schedule.timezone).fixed_offset(),
            fate: "backfilled",
            // A backfill is not the schedule running on time: its
            // healthcheck is not pinged (its sequence's own still is).
            healthcheck_url: None,
        };
        match scheduler_producer::fire_slot(&project, &*store, &*transport, &schedule.sequence, &g.queue, &slot).await {
            Ok(Some(r)) if matches!(r.admitted, Admitted::Skipped(_)) => skipped += 1,
            Ok(Some(_)) => created += 1,
            Ok(None) => existed += 1,
            Err(scheduler_producer::ProducerError::Publish { run_id, source }) => {
                eprintln!("warning: run {run_id} recorded; its start waits for recovery: {source}");
                created += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    transport.close().await;
    println!(
        "{name}: {} slot(s) from {} to {}: {created} run(s) created, {skipped} skipped by the concurrency policy, \
         {existed} already had a fate",
        slots.len(),
        start.with_timezone(&schedule.timezone),
        end.min(now).with_timezone(&schedule.timezone),
    );
    Ok(ExitCode::SUCCESS)
}

/// A day (its start, or with `end` its last instant) in `tz`, or an RFC
/// 3339 time.
fn instant(text: &str, tz: Tz, end: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is neither a day (2026-11-01) nor an RFC 3339 time"))?;
    let day = if end { day.succ_opt().unwrap_or(day) } else { day };
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    let local = tz
        .from_local_datetime(&midnight)
        .earliest()
        .ok_or_else(|| format!("{text}: midnight does not exist in {tz}"))?;
    let utc = local.with_timezone(&Utc);
    Ok(if end {
        utc - chrono::Duration::milliseconds(1)
    } else {
        utc
    })
}
