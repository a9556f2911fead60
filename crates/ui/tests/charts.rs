//! The pictures and the figures: a run's timeline and what each attempt
//! used and wrote (real runs through a real worker).

mod common;

use axum::http::StatusCode;
use common::TestApp;

/// Adds a module (a shell script under `bin/`) to the test's project.
fn add_module(app: &TestApp, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = app.project.join("bin").join(format!("{name}.sh"));
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = app.project.join("modules.json");
    let mut table: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    table[name] = serde_json::json!({"cmd": format!("./bin/{name}.sh")});
    std::fs::write(file, table.to_string()).unwrap();
}

fn add_sequence(app: &TestApp, name: &str, text: &str) {
    std::fs::write(app.project.join("etl_sequences").join(format!("{name}.json")), text).unwrap();
}

#[tokio::test]
async fn a_run_page_draws_a_bar_per_attempt_and_says_what_each_used_and_wrote() {
    let mut app = TestApp::new().await;
    add_module(
        &app,
        "write",
        "#!/bin/sh\nmkdir -p out\nprintf 'id,total\\n1,42\\n' > out/report.csv\n",
    );
    add_sequence(
        &app,
        "report",
        r#"[{"module_name": "ok", "input": "in/missing.csv"}, {"module_name": "write", "output": "out/report.csv"}]"#,
    );
    app.start_worker().await;
    let first = app.start("report").await;
    app.wait_state(first, "succeeded").await;
    let second = app.start("report").await;
    app.wait_state(second, "succeeded").await;

    let page = app.get(&format!("/runs/{second}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let body = &page.body;
    // The run and its two executions, on one axis.
    assert_eq!(body.matches("<g class=\"tl-row\">").count(), 3, "{body}");
    assert_eq!(body.matches("class=\"tl-run s-succeeded\"").count(), 3);
    for needle in [
        "class=\"tl-chart\"",
        ">2 write</text>",
        "href=\"#step-2\"",
        "id=\"step-2\"",
        "from the run&#39;s creation to its end: steps ran",
        // What the kernel accounted.
        "<span class=\"acct mono\" title=\"peak resident memory",
        ">peak ",
        ">CPU ",
        // What the step wrote, compared with the previous success.
        "out/report.csv</span> · 14 B",
        "unchanged since the previous successful run (same SHA-256)",
        "input in/missing.csv did not exist when the step started",
        "href=\"/sequences/report\"",
    ] {
        assert!(body.contains(needle), "the run page lacks {needle:?}:\n{body}");
    }
    let before = app.get(&format!("/runs/{first}")).await;
    assert!(
        before
            .body
            .contains("no previous successful run recorded it to compare with")
    );

    // A run waiting an hour for its retry: the failed attempt, then the
    // delay hatched up to now.
    let retrying = app.start("retrying").await;
    app.wait_for(retrying, "a queued retry", |d| {
        d.executions.iter().any(|e| e.attempt == 2 && e.state == "queued")
    })
    .await;
    let page = app.get(&format!("/runs/{retrying}")).await;
    for needle in [
        "class=\"tl-run s-failed\"",
        "class=\"tl-delay\"",
        ">1 boom · try 2</text>",
        "class=\"tl-now\"",
    ] {
        assert!(
            page.body.contains(needle),
            "the retrying run lacks {needle:?}:\n{}",
            page.body
        );
    }

    // A step its stall watch marked: a badge on the step and the attempt,
    // hatching on its bar, for as long as the mark stays.
    let slow = app.start("slow").await;
    app.wait_for(slow, "its step running", |d| {
        d.executions.first().is_some_and(|e| e.state == "running")
    })
    .await;
    let key = scheduler_tracker::ExecKey {
        run_id: slow,
        step: 0,
        attempt: 1,
    };
    assert!(app.store.mark_stalled(key, true).await.unwrap());
    let page = app.get(&format!("/runs/{slow}/body")).await;
    for needle in [
        "<span class=\"badge s-stalled\"",
        "<span class=\"badge small s-stalled\">stalled</span>",
        "no output, marked stalled just now",
        "class=\"tl-stall\"",
    ] {
        assert!(
            page.body.contains(needle),
            "the stalled run lacks {needle:?}:\n{}",
            page.body
        );
    }
    assert!(app.store.mark_stalled(key, false).await.unwrap());
    let page = app.get(&format!("/runs/{slow}/body")).await;
    assert!(!page.body.contains("s-stalled"), "the mark is lifted");
    app.post(&format!("/api/v1/runs/{slow}/cancel")).await;
    app.finish().await;
}
