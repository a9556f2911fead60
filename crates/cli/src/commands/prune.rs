//! `scheduler prune --older-than 30d [--keep-last N] [--dry-run]`: deletes
//! finished runs older than the bound, with their executions and logs, then
//! the alert events older than the bound whose deliveries are over (sent,
//! given up or folded; never one pending or held), with those deliveries,
//! in small batches (one short statement each, a pause between them) that
//! never lock out running work; never a run that is not final. `--dry-run`
//! counts what would go. The ages it takes (`30d`, `12h`, `90m`, `45s`) are parsed
//! here for the workers' `--prune-older-than` too.

use crate::cli::Global;
use crate::connect;
use clap::Args;
use scheduler_tracker::{PRUNE_BATCH, PRUNE_PAUSE, PruneCounts, Retention};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// Delete the runs that finished longer ago than this: 30d, 12h, 90m or 45s.
    #[arg(long, value_parser = parse_age)]
    pub older_than: Duration,
    /// Keep the N newest runs of each sequence, whatever their age.
    #[arg(long)]
    pub keep_last: Option<u32>,
    /// Count what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Runs per batch (one short transaction each).
    #[arg(long, default_value_t = PRUNE_BATCH, hide = true)]
    pub batch_size: u32,
}

/// An age as people write it: a whole number and a unit, `d`, `h`, `m` or
/// `s` (30d, 12h, 90m, 45s).
pub fn parse_age(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not an age: write a whole number and a unit, d, h, m or s (30d, 12h, 90m, 45s)");
    let unit_at = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = t.split_at(unit_at);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(bad()),
    };
    n.checked_mul(secs)
        .filter(|&s| s <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is more than a hundred years"))
}

pub async fn prune(g: &Global, a: &PruneArgs) -> anyhow::Result<ExitCode> {
    if a.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let retention = Retention {
        older_than: a.older_than,
        keep_last: a.keep_last,
    };
    let store = connect::store(g, 1).await?;
    let started = Instant::now();
    let mut progress_at = started;
    let (mut from, mut total, mut batches) = (None, PruneCounts::default(), 0u64);
    let bound = loop {
        let batch = store.prune_batch(&retention, from, a.batch_size, a.dry_run).await?;
        batches += 1;
        total += batch.counts;
        let Some(next) = batch.next else {
            break batch.bound;
        };
        from = Some(next);
        if progress_at.elapsed() >= Duration::from_secs(10) {
            progress_at = Instant::now();
            let verb = if a.dry_run { "counted" } else { "deleted" };
            eprintln!(
                "  {} runs {verb} so far ({:.0} s)",
                thousands(total.runs),
                started.elapsed().as_secs_f64()
            );
        }
        if !a.dry_run {
            // Room for the workers' writes between two batches.
            tokio::time::sleep(PRUNE_PAUSE).await;
        }
    };
    let runs_took = started.elapsed();
    // Then the alert events of the same age whose deliveries are over.
    // `keep_last` is about runs: it keeps no event.
    let (mut events_from, mut event_batches) = (None, 0u64);
    loop {
        let batch = store
            .prune_events_batch(a.older_than, events_from, a.batch_size, a.dry_run)
            .await?;
        event_batches += 1;
        total += batch.counts;
        let Some(next) = batch.next else { break };
        events_from = Some(next);
        if !a.dry_run {
            tokio::time::sleep(PRUNE_PAUSE).await;
        }
    }
    store.close().await;

    let kept = match a.keep_last.filter(|&n| n > 0) {
        Some(n) => format!(", keeping the {n} newest of each sequence"),
        None => String::new(),
    };
    println!(
        "finished runs that ended before {} (older than {}){kept}:",
        bound.format("%Y-%m-%d %H:%M:%S UTC"),
        age(a.older_than)
    );
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    println!(
        "{verb} {} runs, {} executions, {} log rows ({} of output) in {batches} batch{} ({:.1} s)",
        thousands(total.runs),
        thousands(total.executions),
        thousands(total.log_rows),
        bytes(total.log_bytes),
        if batches == 1 { "" } else { "es" },
        runs_took.as_secs_f64()
    );
    println!(
        "{verb} {} alert events and {} deliveries (sent, given up or folded; none pending or held) in {event_batches} batch{}",
        thousands(total.events),
        thousands(total.deliveries),
        if event_batches == 1 { "" } else { "es" },
    );
    Ok(ExitCode::SUCCESS)
}

/// An age back as it is usually written: `30d`, `12h`, `90m`, `45s`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `1,234,567`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// `312.4 MiB`.
fn bytes(n: i64) -> String {
    let n = n as f64;
    match n {
        n if n < 1024.0 => format!("{n} B"),
        n if n < 1024.0 * 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n if n < 1024.0 * 1024.0 * 1024.0 => format!("{:.1} MiB", n / 1024.0 / 1024.0),
        n => format!("{:.1} GiB", n / 1024.0 / 1024.0 / 1024.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_a_number_and_a_unit() {
        let secs = |t: &str| parse_age(t).map(|d| d.as_secs());
        assert_eq!(secs("30d"), Ok(30 * 86_400));
        assert_eq!(secs("12h"), Ok(12 * 3_600));
        assert_eq!(secs("90m"), Ok(5_400));
        assert_eq!(secs(" 45s "), Ok(45));
        assert_eq!(secs("0s"), Ok(0));
        for bad in ["", "30", "d", "30 d", "30days", "1.5d", "-3d", "30D", "3w", "1h30m"] {
            let e = parse_age(bad).unwrap_err();
            assert!(e.contains("30d, 12h, 90m, 45s"), "{bad:?}: {e}");
        }
        assert!(parse_age("99999999999999d").unwrap_err().contains("hundred years"));
        assert_eq!(age(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(age(Duration::from_secs(5_400)), "90m");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
