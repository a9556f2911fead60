//! The pictures and the figures: a run's timeline and what each attempt
//! used and wrote (real runs through a real worker), a sequence's page over
//! its last 50 runs and a run of 1,000 steps (histories written straight
//! into the record).

mod common;
#[path = "support/history.rs"]
mod history;

use axum::http::StatusCode;
use common::TestApp;
use history::insert_run;
use std::time::{Duration, Instant};

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
    // A shell script's peak stays below the worker's own (this test
    // process), which the record leaves empty: give one step a real figure.
    common::db::query("UPDATE executions SET peak_rss_kib = 204800 WHERE run_id = $1 AND step = 1")
        .bind(second)
        .execute(&mut app.db().await)
        .await;

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

#[tokio::test]
async fn a_sequence_page_charts_its_last_50_runs_with_its_figures_schedule_and_definition() {
    let app = TestApp::new().await;
    let mut db = app.db().await;
    // 60 runs of `quick`, an hour apart, oldest first: run i takes i+1 s
    // (step 1 40 %, step 2 60 % of it); every tenth from the fourth fails
    // at step 2.
    let mut ids = vec![];
    for i in 0..60i64 {
        let ms = (i + 1) * 1000;
        let fails = i % 10 == 3;
        let steps: Vec<(&str, &str, i64)> = vec![
            ("ok", "succeeded", ms * 4 / 10),
            ("ok", if fails { "failed" } else { "succeeded" }, ms * 6 / 10),
        ];
        let state = if fails { "failed" } else { "succeeded" };
        ids.push(insert_run(&mut db, "quick", state, ((60 - i) * 3600) as f64, ms, &steps).await);
    }
    app.write_schedules(
        r#"{"quick_nightly": {"sequence": "quick", "cron": "30 2 * * *", "timezone": "Europe/Madrid"}}"#,
    );
    app.store.register_schedules(&["quick_nightly".into()]).await.unwrap();
    let slot = chrono::Utc::now() - chrono::Duration::days(1);
    assert!(
        app.store
            .record_slot("quick_nightly", slot, "missed", None)
            .await
            .unwrap()
    );

    let started = Instant::now();
    let page = app.get("/sequences/quick").await;
    let took = started.elapsed();
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    // The newest 50: i = 10..60, five of them failed (13, 23, ... 53).
    assert_eq!(body.matches("<g class=\"dc-bar\">").count(), 50);
    assert_eq!(body.matches("class=\"dc-x\"").count(), 5);
    assert!(
        !body.contains(&format!("/runs/{}", ids[9])),
        "the 51st newest is not drawn"
    );
    assert!(body.contains(&format!("href=\"/runs/{}\"", ids[59])));
    for needle in [
        "<dd class=\"figure\">90 %</dd>",
        "45 succeeded · 5 failed, of the last 50 runs",
        // Successes took 11..60 s but 14, 24, ... 54: the 23rd of 45 and the 43rd.
        "<dd class=\"figure mono\">36.0 s</dd>",
        "<dd class=\"figure mono\">58.0 s</dd>",
        // The median's value in the legend, not over the chart's left edge.
        "median of the successes: <b class=\"mono\">36.0 s</b>",
        "Last 50 runs",
        // Step 2 over the 45 successes (60 % of the run), its 5 failures.
        "<td class=\"num mono\">21.6 s</td>",
        "5 failed",
        // The schedule, its next fire time and the missed slot.
        ">quick_nightly</a>",
        "<code>30 2 * * *</code>",
        "Europe/Madrid",
        "slot-cell f-missed",
        // Its definition, and the file as written.
        "./bin/ok.sh",
        "in: in/&#60;raw&#62;.csv",
        "The file as written",
        "/sequences/quick/start",
    ] {
        assert!(body.contains(needle), "the sequence page lacks {needle:?}:\n{body}");
    }
    eprintln!("GET /sequences/quick with 60 runs: {took:?}");

    // Linked from the sequences list.
    let list = app.get("/sequences").await;
    assert!(list.body.contains("href=\"/sequences/quick\""));

    // Never run; gone but recorded; neither; not a name.
    let never = app.get("/sequences/slow").await;
    assert_eq!(never.status, StatusCode::OK);
    assert!(never.body.contains("Never run yet.") && !never.body.contains("dc-chart"));
    assert!(
        never
            .body
            .contains("No schedule of <code>schedules.json</code> starts it")
    );
    insert_run(
        &mut db,
        "retired",
        "succeeded",
        100.0,
        5000,
        &[("ok", "succeeded", 5000)],
    )
    .await;
    let gone = app.get("/sequences/retired").await;
    assert_eq!(gone.status, StatusCode::OK);
    assert!(
        gone.body
            .contains("There is no <code>etl_sequences/retired.json</code> any more")
    );
    assert!(!gone.body.contains("▶ Start"));
    for (uri, why) in [
        ("/sequences/nope", "no sequence &#34;nope&#34;"),
        ("/sequences/..%2Fmodules", "no sequence"),
    ] {
        let r = app.get(uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(r.body.contains(why), "{uri}: {}", r.body);
    }
    drop(db);
    app.finish().await;
}

#[tokio::test]
async fn a_run_of_a_thousand_steps_keeps_a_bar_each_and_folds_its_sequence_steps() {
    let app = TestApp::new().await;
    let mut db = app.db().await;
    let steps: Vec<(&str, &str, i64)> = (0..1000).map(|i| ("ok", "succeeded", 20 + (i % 7) * 30)).collect();
    let run = insert_run(&mut db, "quick", "succeeded", 600.0, 200_000, &steps).await;
    let started = Instant::now();
    let page = app.get(&format!("/runs/{run}")).await;
    let took = started.elapsed();
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body.matches("<g class=\"tl-row\">").count(), 1001);
    assert!(page.body.contains("class=\"tl tl-compact\""));
    assert!(page.body.contains(">step 1000</text>"));
    eprintln!(
        "GET /runs/{{id}} of 1,000 steps: {took:?}, {} KiB",
        page.body.len() / 1024
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    let seq = app.get("/sequences/quick").await;
    assert!(seq.body.contains("The 15 slowest"));
    assert!(seq.body.contains("All 1000 steps in order"));
    drop(db);
    app.finish().await;
}
