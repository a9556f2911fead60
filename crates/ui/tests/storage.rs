//! How much the record holds, in every page's footer and at
//! `/api/v1/storage`, against a real PostgreSQL with a real worker.

mod common;

use axum::http::StatusCode;
use common::TestApp;

#[tokio::test]
async fn the_footer_and_the_api_say_how_much_is_stored() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let ok = app.start("quick").await;
    let bad = app.start("failing").await;
    app.wait_state(ok, "succeeded").await;
    app.wait_state(bad, "failed").await;

    // Every page's footer loads the figures once it is shown.
    for page in ["/", "/workers", &format!("/runs/{ok}")] {
        let r = app.get(page).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.body.contains(r#"hx-get="/fragments/storage""#),
            "{page} lacks the storage footer"
        );
    }

    let api = app.get("/api/v1/storage").await;
    assert_eq!(api.status, StatusCode::OK);
    let v = api.json();
    // quick: 2 steps; failing: 2 steps, the second fails and the run stops.
    assert_eq!(
        (v["runs"].as_i64(), v["executions"].as_i64()),
        (Some(2), Some(4)),
        "{v}"
    );
    assert_eq!(v["estimated"], false, "small tables are counted exactly");
    assert!(v["log_bytes"].as_i64().unwrap() > 0, "{v}");
    assert!(
        v["database_bytes"].as_i64().unwrap() > v["log_bytes"].as_i64().unwrap(),
        "{v}"
    );

    let footer = app.get("/fragments/storage").await;
    assert_eq!(footer.status, StatusCode::OK);
    assert!(footer.body.contains("2 runs · 4 executions · "), "{}", footer.body);
    assert!(footer.body.contains(" of logs"), "{}", footer.body);
    assert!(!footer.body.contains("about"), "exact counts: {}", footer.body);
    app.finish().await;
}
