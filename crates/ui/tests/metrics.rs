//! `/metrics` against a real PostgreSQL: the last hour's activity by
//! sequence and module (a history written straight into the record), and
//! every metric the shipped Grafana dashboard and Prometheus alert rules
//! use is one the server exports.

mod common;
#[path = "support/history.rs"]
mod history;

use axum::http::StatusCode;
use common::TestApp;
use history::insert_run;

#[tokio::test]
async fn metrics_report_the_last_hour_by_sequence_and_module_and_every_missed_slot() {
    let app = TestApp::new().await;
    let mut db = app.db().await;
    for (state, ms) in [("succeeded", 2000), ("succeeded", 40_000), ("failed", 700)] {
        let last = if state == "failed" { "failed" } else { "succeeded" };
        insert_run(
            &mut db,
            "quick",
            state,
            600.0,
            ms,
            &[("ok", "succeeded", ms / 2), ("ok", last, ms / 2)],
        )
        .await;
    }
    // Two hours ago: outside the window.
    insert_run(&mut db, "quick", "failed", 7200.0, 1000, &[("ok", "failed", 1000)]).await;
    // A retry, and a step running stalled.
    let retried = insert_run(&mut db, "failing", "running", 60.0, 0, &[("boom", "running", 0)]).await;
    common::db::query("UPDATE executions SET retry = 1, stalled_at = $2 WHERE run_id = $1")
        .bind(retried)
        .bind(chrono::Utc::now())
        .execute(&mut db)
        .await;
    app.store.register_schedules(&["nightly".into()]).await.unwrap();
    for h in 1..=3 {
        let at = chrono::Utc::now() - chrono::Duration::hours(h);
        app.store.record_slot("nightly", at, "missed", None).await.unwrap();
    }

    let m = app.get("/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    for line in [
        "# TYPE scheduler_runs_finished gauge",
        "scheduler_runs_finished{sequence=\"quick\",state=\"succeeded\"} 2",
        "scheduler_runs_finished{sequence=\"quick\",state=\"failed\"} 1",
        "scheduler_runs_finished{sequence=\"slow\",state=\"failed\"} 0",
        "scheduler_step_retries{sequence=\"failing\",module=\"boom\"} 1",
        "scheduler_executions_stalled{sequence=\"failing\",module=\"boom\"} 1",
        "# TYPE scheduler_step_stalls gauge",
        "# TYPE scheduler_step_duration_seconds histogram",
        // 1, 1, 20, 20, 0.35, 0.35 s.
        "scheduler_step_duration_seconds_bucket{module=\"ok\",le=\"1\"} 4",
        "scheduler_step_duration_seconds_bucket{module=\"ok\",le=\"15\"} 4",
        "scheduler_step_duration_seconds_bucket{module=\"ok\",le=\"30\"} 6",
        "scheduler_step_duration_seconds_count{module=\"ok\"} 6",
        "scheduler_step_duration_seconds_sum{module=\"ok\"} 42.7",
        "# TYPE scheduler_step_peak_memory_bytes histogram",
        "scheduler_step_peak_memory_bytes_bucket{module=\"ok\",le=\"16777216\"} 4",
        "scheduler_step_peak_memory_bytes_bucket{module=\"ok\",le=\"67108864\"} 6",
        "# TYPE scheduler_slots_missed_total counter",
        "scheduler_slots_missed_total{schedule=\"nightly\"} 3",
        "scheduler_slots_skipped_total{schedule=\"nightly\"} 0",
    ] {
        assert!(m.body.lines().any(|l| l == line), "metrics lack {line:?}:\n{}", m.body);
    }
    assert!(!m.body.contains(&retried.to_string()), "no run id is ever a label");
    drop(db);
    app.finish().await;
}
