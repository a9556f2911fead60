//! The HTML pages, their live fragments and event streams, the form
//! actions, `/metrics` and `/healthz`, against real PostgreSQL and RabbitMQ
//! with a real worker.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::TestApp;
use http_body_util::BodyExt;
use std::time::Duration;
use tower::ServiceExt;

#[tokio::test]
async fn every_page_renders_the_recorded_runs() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let ok = app.start("quick").await;
    let bad = app.start("failing").await;
    app.wait_state(ok, "succeeded").await;
    app.wait_state(bad, "failed").await;

    let runs = app.get("/").await;
    assert_eq!(runs.status, StatusCode::OK);
    assert!(runs.header("content-security-policy").contains("script-src 'self'"));
    for needle in [
        &format!("href=\"/runs/{ok}\"") as &str,
        &format!("href=\"/runs/{bad}\""),
        "badge s-succeeded",
        "badge s-failed",
        "boom: disk &#60;b&#62;full&#60;/b&#62;",
        "sse-connect=\"/events\"",
    ] {
        assert!(runs.body.contains(needle), "runs page lacks {needle:?}");
    }
    assert!(
        runs.body.find(&bad.to_string()) < runs.body.find(&ok.to_string()),
        "newest first"
    );
    let failed_only = app.get("/fragments/runs?state=failed").await;
    assert!(failed_only.body.contains(&bad.to_string()) && !failed_only.body.contains(&ok.to_string()));
    assert!(!failed_only.body.contains("<html"), "a fragment, not a page");

    let failed = app.get(&format!("/runs/{bad}")).await;
    assert_eq!(failed.status, StatusCode::OK);
    for needle in [
        "banner-error",
        "Retry from step 2",
        "exit 3",
        "./bin/boom.sh",
        "boom: disk &#60;b&#62;full&#60;/b&#62;",
        "&#34;sequence&#34;: &#34;failing&#34;",
        &format!("sse-connect=\"/runs/{bad}/events\""),
    ] {
        assert!(failed.body.contains(needle), "failed run page lacks {needle:?}");
    }
    assert!(!failed.body.contains("Cancel run"), "a finished run cannot be canceled");

    let seqs = app.get("/sequences").await;
    assert_eq!(seqs.status, StatusCode::OK);
    for needle in [
        "id=\"seq-quick\"",
        "/sequences/quick/start",
        "./bin/ok.sh",
        "nope",
        "Never run.",
    ] {
        assert!(seqs.body.contains(needle), "sequences page lacks {needle:?}");
    }

    let workers = app.get("/workers").await;
    assert_eq!(workers.status, StatusCode::OK);
    for needle in ["s-w-alive", &app.queue as &str, &format!("{}.dead", app.queue), "0 / 4"] {
        assert!(workers.body.contains(needle), "workers page lacks {needle:?}");
    }
    app.finish().await;
}

#[tokio::test]
async fn module_output_and_arguments_are_escaped() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let run = app.start("quick").await;
    app.wait_state(run, "succeeded").await;
    let page = app.get(&format!("/runs/{run}")).await;
    assert!(
        page.body.contains("rows: 42 &#60;script&#62;alert(1)&#60;/script&#62;"),
        "{}",
        page.body
    );
    assert!(page.body.contains("in/&#60;raw&#62;.csv"));
    assert!(!page.body.contains("<script>alert"));
    assert!(!page.body.contains("<raw>"));
    app.finish().await;
}

#[tokio::test]
async fn bad_page_requests_get_a_clear_error_page() {
    let app = TestApp::new().await;
    let unknown = uuid::Uuid::now_v7();
    for (uri, status, needle) in [
        ("/runs/nope", 400, "not a run id"),
        (&format!("/runs/{unknown}") as &str, 404, "no run"),
        (&format!("/runs/{unknown}/body"), 404, "no run"),
        (&format!("/runs/{unknown}/events"), 404, "no run"),
        ("/?limit=100000", 400, "1 to 200"),
        ("/?state=done", 400, "expected one of"),
        ("/fragments/runs?before=garbage", 400, "cursor"),
        ("/no/such/page", 404, "no page"),
        ("/assets/secret.txt", 404, "no asset"),
    ] {
        let r = app.get(uri).await;
        assert_eq!(r.status.as_u16(), status, "{uri}: {}", r.body);
        assert!(r.body.contains(needle), "{uri}: {}", r.body);
        assert!(r.header("content-type").starts_with("text/html"), "{uri}");
    }
    app.finish().await;
}

#[tokio::test]
async fn form_actions_answer_htmx_with_a_flash_and_plain_forms_with_a_redirect() {
    let app = TestApp::new().await;
    let htmx = [("hx-request", "true")];
    let started = app
        .request(
            Method::POST,
            "/runs",
            &[
                ("hx-request", "true"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "sequence=quick",
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    assert_eq!(started.header("hx-trigger"), "runs-changed");
    assert!(started.body.contains("Started quick"));
    let listed = app.get("/api/v1/runs").await.json();
    let run = listed["runs"][0]["id"].as_str().unwrap().to_string();
    assert!(started.body.contains(&format!("/runs/{run}")));

    // Without a worker the run stays queued: cancel it as a plain form would.
    let canceled = app
        .request(
            Method::POST,
            &format!("/runs/{run}/cancel"),
            &[("sec-fetch-site", "same-origin")],
            "",
        )
        .await;
    assert_eq!(canceled.status, StatusCode::SEE_OTHER);
    assert_eq!(canceled.header("location"), format!("/runs/{run}"));
    let twice = app
        .request(Method::POST, &format!("/runs/{run}/cancel"), &htmx, "")
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert!(twice.body.contains("flash-error") && twice.body.contains("nothing to cancel"));
    let retry = app
        .request(Method::POST, &format!("/runs/{run}/retry"), &htmx, "")
        .await;
    assert_eq!(retry.status, StatusCode::CONFLICT);

    let go = app.request(Method::POST, "/sequences/slow/start", &htmx, "").await;
    assert_eq!(go.status, StatusCode::OK, "{}", go.body);
    assert!(go.header("hx-location").starts_with("/runs/"));
    let missing = app.request(Method::POST, "/sequences/missing/start", &htmx, "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("no sequence named"));
    app.finish().await;
}

#[tokio::test]
async fn the_event_stream_announces_changes_and_ends_on_shutdown() {
    let app = TestApp::new().await;
    let mut db = app.db().await;
    let opened = common::db_clock(&mut db).await;
    let res = app
        .router
        .clone()
        .oneshot(Request::get("/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    // Once the poller has taken its baseline, change something.
    app.wait_for_runs_poller_baseline(&mut db, opened).await;
    drop(db);
    app.start("quick").await;
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let frame = body.frame().await.expect("stream open").unwrap();
            if let Some(data) = frame.data_ref() {
                let text = String::from_utf8_lossy(data).to_string();
                if text.contains("event: change") {
                    return text;
                }
            }
        }
    })
    .await
    .expect("no change event after a run was started");
    assert!(event.contains("data: runs"), "{event}");

    app.shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stream kept a shutting-down server open");
    app.finish().await;
}

#[tokio::test]
async fn a_run_page_stream_announces_its_progress() {
    let mut app = TestApp::new().await;
    let run = app.start("quick").await;
    let res = app
        .router
        .clone()
        .oneshot(Request::get(format!("/runs/{run}/events")).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    app.start_worker().await;
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let frame = body.frame().await.expect("stream open").unwrap();
            if frame
                .data_ref()
                .is_some_and(|d| String::from_utf8_lossy(d).contains("event: change"))
            {
                return;
            }
        }
    })
    .await;
    assert!(got.is_ok(), "no change event while the run progressed");
    app.finish().await;
}

#[tokio::test]
async fn metrics_and_health_read_the_record() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let run = app.start("failing").await;
    app.wait_state(run, "failed").await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");
    let m = app.get("/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(m.header("content-type").starts_with("text/plain; version=0.0.4"));
    for line in [
        "scheduler_runs{state=\"failed\"} 1",
        "scheduler_runs{state=\"succeeded\"} 0",
        "scheduler_executions{state=\"succeeded\"} 1",
        "scheduler_executions{state=\"failed\"} 1",
        "scheduler_workers_alive 1",
        &format!("scheduler_queue_consumers{{queue=\"{}\"}} 1", app.queue),
        "# TYPE scheduler_queue_messages gauge",
    ] {
        assert!(m.body.lines().any(|l| l == line), "metrics lack {line:?}:\n{}", m.body);
    }
    app.finish().await;
}

#[tokio::test]
async fn a_run_waiting_for_its_retry_says_so_and_when() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let run = app.start("retrying").await;
    let d = app
        .wait_for(run, "a queued retry", |d| {
            d.executions.iter().any(|e| e.attempt == 2 && e.state == "queued")
        })
        .await;
    assert_eq!(d.run.state, "running");
    assert!(d.run.retry_at.is_some(), "{d:#?}");
    let runs = app.get("/").await;
    assert!(runs.body.contains("waiting to retry, in 59 min"), "{}", runs.body);
    let page = app.get(&format!("/runs/{run}")).await;
    assert!(page.body.contains("waiting to retry, due in 59 min"), "{}", page.body);
    assert!(page.body.contains("retry 1"));
    let api = app.get(&format!("/api/v1/runs/{run}")).await.json();
    assert_eq!(api["executions"][1]["retry"], 1);
    assert!(api["retry_at"].is_string(), "{api:#}");
    app.finish().await;
}

/// An attempt its own worker gave back (stopped past the drain timeout, or
/// no module slot in time) reads `abandoned` like one lost with its
/// worker, and the run page tells the two apart.
#[tokio::test]
async fn an_attempt_its_worker_gave_back_is_told_apart_from_a_lost_one() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let given = app.start("quick").await;
    let lost = app.start("quick").await;
    app.wait_state(given, "succeeded").await;
    app.wait_state(lost, "succeeded").await;
    let mut db = app.db().await;
    for (run, given_back) in [(given, "TRUE"), (lost, "FALSE")] {
        common::db::query(&format!(
            "UPDATE executions SET state = 'abandoned', given_back = {given_back} WHERE run_id = $1"
        ))
        .bind(run)
        .execute(&mut db)
        .await;
    }
    let page = app.get(&format!("/runs/{given}")).await.body;
    assert!(page.contains("badge small s-abandoned"), "{page}");
    assert!(page.contains("badge small s-given-back"), "{page}");
    let page = app.get(&format!("/runs/{lost}")).await.body;
    assert!(page.contains("badge small s-abandoned"), "{page}");
    assert!(!page.contains("s-given-back"), "{page}");
    let api = app.get(&format!("/api/v1/runs/{given}")).await.json();
    assert_eq!(api["executions"][0]["given_back"], true, "{api:#}");
    app.finish().await;
}
