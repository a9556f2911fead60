//! The benchmark's fill, with tiny numbers, against a database of its own:
//! so the set-based SQL behind `scheduler bench-ui` cannot rot.

use scheduler_bench::BenchDb;
use scheduler_tracker::{RunFilter, Store, Tracker, TrackerConfig};
use sqlx::migrate::MigrateDatabase;
use uuid::Uuid;

#[tokio::test]
async fn the_bench_fill_writes_what_it_promises() {
    let base = std::env::var("TEST_DATABASE_BASE").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let url = format!("{base}/ui_t_{}", Uuid::now_v7().simple());
    let tracker = Tracker::open(&TrackerConfig::new(&url)).await.unwrap();
    let db = BenchDb::connect(&url).await.unwrap();
    let result = check(&tracker, &db).await;
    db.close().await;
    Store::close(&tracker).await;
    let _ = sqlx::Postgres::force_drop_database(&url).await;
    result.unwrap();
}

async fn check(tracker: &dyn Store, db: &BenchDb) -> anyhow::Result<()> {
    scheduler_bench::ui::fill(db, 1_000, 10, false).await?;
    assert_eq!(db.bench_counts().await?, (1_000, 10_000));

    // Newest first, every page full, a realistic mix of states.
    let newest = tracker
        .list_runs(&RunFilter {
            limit: 1000,
            ..RunFilter::default()
        })
        .await?;
    assert_eq!(newest.len(), 1000);
    assert!(newest.windows(2).all(|w| w[0].created_at > w[1].created_at));
    let count = |s: &str| newest.iter().filter(|r| r.state == s).count();
    assert!(count("succeeded") > 850, "{}", count("succeeded"));
    assert!(count("failed") > 20 && count("canceled") > 5 && count("running") >= 2);
    let span = newest[0].created_at - newest[999].created_at;
    assert!(span.num_days() >= 360, "{span}");
    let mut sequences: Vec<_> = newest.iter().map(|r| r.sequence.as_str()).collect();
    sequences.sort();
    sequences.dedup();
    assert!((15..=20).contains(&sequences.len()), "{sequences:?}");

    // A failed run reads like one: the step it failed at, its retries, the
    // traceback; its snapshot is a real one.
    let failed = newest.iter().find(|r| r.state == "failed").unwrap();
    let d = tracker.run_detail(failed.id).await?.unwrap();
    assert_eq!(d.executions.len(), 10);
    let step = d.run.failed_step.unwrap();
    let last = d.executions.last().unwrap();
    assert_eq!((last.step, last.state.as_str()), (step, "failed"));
    assert!(last.stderr_tail.as_deref().unwrap_or("").contains("Traceback"));
    assert!(last.worker_host.is_some() && last.exit_code.is_some());
    assert!(last.argv.iter().any(|a| a == "--input"));
    let snapshot: scheduler_core::Snapshot = serde_json::from_value(d.snapshot)?;
    assert_eq!(snapshot.steps.len(), 10);
    assert_eq!(d.run.current_step, Some(step));
    Ok(())
}
