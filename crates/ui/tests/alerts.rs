//! The Alerts page, `/api/v1/alerts/deliveries` and the alert counter of
//! `/metrics`, over deliveries recorded in a real PostgreSQL.

mod common;

use axum::http::StatusCode;
use common::TestApp;
use scheduler_tracker::{AttemptRecord, NewEvent, Route};
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn the_alerts_page_lists_targets_without_secrets_and_deliveries_with_their_outcome() {
    let app = TestApp::new().await;
    std::fs::write(
        app.project.join("alerts.json"),
        r#"{"targets": {
            "ops": {"type": "webhook", "url": "https://hooks.example/services/T0/B0/SECRETTOKEN",
                    "secret_env": "K", "events": ["run_failed"], "max_frequency_secs": 600},
            "mail": {"type": "email", "host": "smtp.example", "from": "s@example.com", "to": "oncall@example.com",
                     "events": ["worker_lost"]}}}"#,
    )
    .unwrap();
    let s = &*app.store;
    let run = Uuid::now_v7();
    let event = NewEvent {
        kind: "run_failed".into(),
        sequence: Some("nightly".into()),
        run_id: Some(run),
        message: Some("exit code 3".into()),
        ..Default::default()
    };
    let id = s.record_event(&event).await.unwrap();
    let route = Route {
        event_id: id,
        target: "ops".into(),
        kind: "run_failed".into(),
        subject: "nightly".into(),
        held: false,
        url: None,
    };
    s.route_events(&[id], &[route]).await.unwrap();
    let worker = Uuid::now_v7();
    let claimed = s.claim_deliveries(worker, 10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let record = AttemptRecord {
        event_id: id,
        target: "ops",
        worker_id: worker,
        attempt: 1,
        outcome: "failed",
        status: Some(404),
        response: "no_service",
        elapsed: Duration::from_millis(40),
        retry_in: None,
    };
    assert!(s.record_attempt(&record).await.unwrap());

    let page = app.get("/alerts").await;
    assert_eq!(page.status, StatusCode::OK);
    let body = &page.body;
    assert!(body.contains(r#"href="/alerts" class="active""#), "nav entry");
    assert!(
        body.contains("ops") && body.contains("run_failed, + run_recovered"),
        "{body}"
    );
    assert!(body.contains("POST https://hooks.example/…, signed"), "{body}");
    assert!(!body.contains("SECRETTOKEN"), "the hook's path is never shown");
    assert!(body.contains("oncall@example.com via smtp.example:587"), "{body}");
    assert!(body.contains("one per sequence and event every 600 s"), "{body}");
    let row = common::row_of(body, "no_service");
    assert!(row.contains("s-failed") && row.contains("404"), "{row}");
    assert!(row.contains(&format!("/runs/{run}")), "{row}");

    let api = app.get("/api/v1/alerts/deliveries?limit=5").await;
    assert_eq!(api.status, StatusCode::OK);
    let v = api.json();
    assert_eq!(v["deliveries"][0]["state"], "failed");
    assert_eq!(v["deliveries"][0]["last_status"], 404);
    assert_eq!(v["deliveries"][0]["target"], "ops");
    assert_eq!(
        app.get("/api/v1/alerts/deliveries?limit=0").await.status,
        StatusCode::BAD_REQUEST
    );

    let metrics = app.get("/metrics").await.body;
    assert!(
        metrics.contains("# TYPE scheduler_alert_deliveries_total counter"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"scheduler_alert_deliveries_total{target="ops",outcome="failed"} 1"#));
    assert!(metrics.contains(r#"scheduler_alert_deliveries_total{target="mail",outcome="sent"} 0"#));

    // A file that does not validate is said, not hidden.
    std::fs::write(
        app.project.join("alerts.json"),
        r#"{"targets": {"x": {"type": "pager"}}}"#,
    )
    .unwrap();
    let page = app.get("/alerts").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("alerts.json: target &#34;x&#34;")
            || page.body.contains("alerts.json: target &quot;x&quot;"),
        "{}",
        page.body
    );
    app.finish().await;
}
