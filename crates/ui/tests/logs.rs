//! Module logs in the UI and the JSON API, against real PostgreSQL and
//! RabbitMQ: `/api/v1/runs/{id}/log` pages and resumes with `from`, reports
//! each gap once; the download holds the raw bytes; the page's chunks show
//! markup and terminal escapes as text; the live stream sends what is
//! written and ends with the log; a chunk says whether its attempt runs, so
//! the page says "live" only then.
//!
//! Most tests write log rows themselves (`Store::append_logs`) for the
//! second step of an `unserved` run, which waits on a queue no worker
//! serves: an execution whose log nobody else writes.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use common::TestApp;
use http_body_util::BodyExt;
use scheduler_tracker::{ExecKey, LogPiece};
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;
use uuid::Uuid;

/// A run whose first step ran (a real worker wrote its log) and whose
/// second step (0-based 1, attempt 1) waits with no log yet.
async fn run_with_a_quiet_step(app: &mut TestApp) -> (Uuid, ExecKey) {
    app.start_worker().await;
    let run = app.start("unserved").await;
    app.wait_for(run, "its second step queued", |d| {
        d.executions.iter().any(|e| e.step == 1 && e.state == "queued")
    })
    .await;
    let key = ExecKey {
        run_id: run,
        step: 1,
        attempt: 1,
    };
    (run, key)
}

fn piece(key: ExecKey, pos: i64, stream: &'static str, data: &[u8]) -> LogPiece {
    LogPiece {
        key,
        pos,
        stream,
        at: Utc::now(),
        data: data.to_vec(),
    }
}

/// 0..23 three lines (stderr in the middle), then 977 bytes omitted, then
/// one more line at 1000..1014.
async fn write_gappy_log(app: &TestApp, key: ExecKey) {
    app.store
        .append_logs(&[
            piece(key, 0, "stdout", b"line 1\n"),
            piece(key, 7, "stderr", b"warn <b>\n"),
            piece(key, 16, "stdout", b"line 3\n"),
            piece(key, 1000, "stdout", b"after the gap\n"),
        ])
        .await
        .unwrap();
}

fn texts(v: &Value) -> Vec<(i64, String, String, i64)> {
    v["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pos"].as_i64().unwrap(),
                p["stream"].as_str().unwrap().to_string(),
                p["text"].as_str().unwrap().to_string(),
                p["omitted_before"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn t(pos: i64, stream: &str, text: &str, omitted_before: i64) -> (i64, String, String, i64) {
    (pos, stream.into(), text.into(), omitted_before)
}

#[tokio::test]
async fn the_api_pages_a_log_resumes_from_next_and_reports_each_gap_once() {
    let mut app = TestApp::new().await;
    let (run, key) = run_with_a_quiet_step(&mut app).await;
    let log = |q: &str| format!("/api/v1/runs/{run}/log?step=1&{q}");

    let empty = app.get(&log("")).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    let v = empty.json();
    assert_eq!((v["from"].as_i64(), v["next"].as_i64()), (Some(0), Some(0)));
    assert_eq!(v["complete"], false);
    assert_eq!(v["attempt"], 1, "the step's latest attempt");

    write_gappy_log(&app, key).await;
    let first = app.get(&log("limit=2")).await.json();
    assert_eq!(
        texts(&first),
        [t(0, "stdout", "line 1\n", 0), t(7, "stderr", "warn <b>\n", 0)]
    );
    assert_eq!(first["next"], 16);
    let next = first["next"].as_i64().unwrap();
    let second = app.get(&log(&format!("limit=2&from={next}"))).await.json();
    assert_eq!(
        texts(&second),
        [
            t(16, "stdout", "line 3\n", 0),
            t(1000, "stdout", "after the gap\n", 977)
        ]
    );
    assert_eq!(
        (second["next"].as_i64(), second["omitted_after"].as_i64()),
        (Some(1014), Some(0))
    );
    assert_eq!(second["complete"], false, "the module may write more");

    // Resuming mid-row, and stopping before `to`.
    let mid = app.get(&log("from=3&to=10")).await.json();
    assert_eq!(texts(&mid), [t(3, "stdout", "e 1\n", 0), t(7, "stderr", "war", 0)]);
    assert_eq!(mid["next"], 10);

    // One stream: the other's bytes are skipped, the gap still reported.
    let errs = app.get(&log("stream=stderr")).await.json();
    assert_eq!(texts(&errs), [t(7, "stderr", "warn <b>\n", 0)]);
    assert_eq!(
        (errs["next"].as_i64(), errs["omitted_after"].as_i64()),
        (Some(1014), Some(977))
    );

    // The worker ends the log: 50 more bytes written but lost (the database
    // was away); they are omitted at the end and the log is complete.
    app.store.finish_log(key, 1064).await.unwrap();
    let last = app.get(&log("from=1014")).await.json();
    assert_eq!(texts(&last), []);
    assert_eq!(
        (last["next"].as_i64(), last["omitted_after"].as_i64()),
        (Some(1064), Some(50))
    );
    assert_eq!(last["complete"], true);
    assert_eq!(
        (last["log_bytes"].as_i64(), last["log_omitted"].as_i64()),
        (Some(1064), Some(1027))
    );
    app.finish().await;
}

#[tokio::test]
async fn a_real_modules_log_is_served_complete() {
    let mut app = TestApp::new().await;
    let (run, _) = run_with_a_quiet_step(&mut app).await;
    // The worker writes the log's total just after the step's result.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = app
            .get(&format!("/api/v1/runs/{run}/log?step=0&attempt=1"))
            .await
            .json();
        if v["complete"] == true {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "the log never completed: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text: String = texts(&v).into_iter().map(|p| p.2).collect();
    assert_eq!(text, "rows: 42 <script>alert(1)</script>\nargs: \n");
    assert_eq!(v["log_bytes"].as_i64(), Some(text.len() as i64));
    app.finish().await;
}

#[tokio::test]
async fn the_download_is_the_raw_bytes_with_the_omitted_lines() {
    let mut app = TestApp::new().await;
    let (run, key) = run_with_a_quiet_step(&mut app).await;
    write_gappy_log(&app, key).await;
    app.store
        .append_logs(&[piece(key, 1014, "stderr", b"not utf-8: \xff\xfe end")])
        .await
        .unwrap();
    app.store.finish_log(key, 1031 + 5).await.unwrap();
    let res = app
        .router
        .clone()
        .oneshot(
            Request::get(format!("/runs/{run}/log/download?step=1&attempt=1"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/plain");
    assert_eq!(
        res.headers()["content-disposition"],
        format!("attachment; filename=\"{run}-step2-attempt1.log\"").as_str()
    );
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let expected: &[u8] = b"line 1\nwarn <b>\nline 3\n\xe2\x80\xa6 977 bytes omitted \xe2\x80\xa6\nafter the gap\nnot utf-8: \xff\xfe end\n\xe2\x80\xa6 5 bytes omitted \xe2\x80\xa6\n";
    assert_eq!(bytes.as_ref(), expected, "{:?}", String::from_utf8_lossy(&bytes));
    app.finish().await;
}

#[tokio::test]
async fn markup_and_terminal_escapes_in_a_log_are_shown_as_text() {
    let mut app = TestApp::new().await;
    let (run, key) = run_with_a_quiet_step(&mut app).await;
    app.store
        .append_logs(&[
            piece(key, 0, "stdout", b"<script>alert(1)</script>\n"),
            piece(key, 26, "stderr", b"\x1b[31mred\x1b[0m\r\n\xff\n"),
        ])
        .await
        .unwrap();
    let page = app.get(&format!("/runs/{run}")).await;
    assert_eq!(page.status, StatusCode::OK);
    // A panel for each attempt that started; step 2 has not.
    for needle in [
        "id=\"log-0-1\"".to_string(),
        "hx-preserve".to_string(),
        format!("data-src=\"/runs/{run}/log?step=0&amp;attempt=1\""),
        format!("href=\"/runs/{run}/log/download?step=0&amp;attempt=1\""),
    ] {
        assert!(page.body.contains(&needle), "run page lacks {needle:?}");
    }
    assert!(!page.body.contains("id=\"log-1-1\""));
    let chunk = app.get(&format!("/runs/{run}/log?step=1")).await;
    assert_eq!(chunk.status, StatusCode::OK, "{}", chunk.body);
    let html = &chunk.body;
    assert!(
        html.contains("<span class=\"o b\">&#60;script&#62;alert(1)&#60;/script&#62;\n</span>"),
        "{html}"
    );
    assert!(
        html.contains(
            "<span class=\"e b\"><span class=\"ctl\">\\x1b</span>[31mred<span class=\"ctl\">\\x1b</span>[0m\
             <span class=\"ctl\">\\x0d</span>\n</span><span class=\"e b\"><span class=\"ctl\">\\xff</span>\n</span>"
        ),
        "{html}"
    );
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains('\x1b') && !html.contains('\r'), "{html:?}");
    assert!(
        html.starts_with(
            "<span class=\"chunk\" data-from=\"0\" data-next=\"42\" data-complete=\"false\" data-running=\"false\">"
        ),
        "{html}"
    );

    // The first step's real output, as the worker wrote it.
    let real = app.get(&format!("/runs/{run}/log?step=0")).await;
    assert!(
        real.body.contains("rows: 42 &#60;script&#62;alert(1)&#60;/script&#62;"),
        "{}",
        real.body
    );
    app.finish().await;
}

#[tokio::test]
async fn a_page_loads_the_last_256_kib_and_earlier_on_demand() {
    let mut app = TestApp::new().await;
    let (run, key) = run_with_a_quiet_step(&mut app).await;
    // 40 rows of 10 KiB: 400 KiB, still being written (no total).
    let row = |i: i64| {
        let mut line = format!("row {i:02} ").into_bytes();
        line.resize(10 * 1024 - 1, b'.');
        line.push(b'\n');
        piece(key, i * 10 * 1024, "stdout", &line)
    };
    let rows: Vec<_> = (0..40).map(row).collect();
    app.store.append_logs(&rows).await.unwrap();
    let attr = |html: &str, name: &str| -> i64 {
        let at = html.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        html[at..at + html[at..].find('"').unwrap()].parse().unwrap()
    };
    let tail = app.get(&format!("/runs/{run}/log?step=1")).await.body;
    let (from, next) = (attr(&tail, "data-from"), attr(&tail, "data-next"));
    assert_eq!(next, 400 * 1024);
    assert!(
        from % (10 * 1024) == 0 && (256 * 1024..=320 * 1024).contains(&(next - from)),
        "the tail starts at a row within 256..320 KiB of the end: {from}"
    );
    assert!(tail.contains(&format!("row {:02} ", from / 10240)) && !tail.contains("row 00 "));
    let earlier = app.get(&format!("/runs/{run}/log?step=1&to={from}")).await.body;
    assert_eq!((attr(&earlier, "data-from"), attr(&earlier, "data-next")), (0, from));
    assert!(earlier.contains("row 00 ") && !earlier.contains(&format!("row {:02} ", from / 10240)));

    // Complete, the same from the recorded total.
    app.store.finish_log(key, 400 * 1024).await.unwrap();
    let done = app.get(&format!("/runs/{run}/log?step=1")).await.body;
    assert_eq!(attr(&done, "data-from"), from);
    assert!(done.contains("data-complete=\"true\""));
    app.finish().await;
}

/// Reads server-sent events until `until` returns true for one; returns
/// every event's text.
async fn read_events(body: &mut Body, until: impl Fn(&str) -> bool) -> Vec<String> {
    let mut buf = String::new();
    let mut events = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let frame = body.frame().await.expect("stream open").unwrap();
            let Some(data) = frame.data_ref() else { continue };
            buf.push_str(&String::from_utf8_lossy(data));
            while let Some(end) = buf.find("\n\n") {
                let event = buf[..end].to_string();
                buf.drain(..end + 2);
                if event.starts_with(':') {
                    continue;
                }
                let done = until(&event);
                events.push(event);
                if done {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no such event; got {events:#?}"));
    events
}

#[tokio::test]
async fn the_live_stream_sends_what_is_written_and_ends_with_the_log() {
    let mut app = TestApp::new().await;
    let (run, key) = run_with_a_quiet_step(&mut app).await;
    let open = |last: Option<&str>| {
        let mut req = Request::get(format!("/runs/{run}/log/events?step=1&attempt=1&from=0"));
        if let Some(id) = last {
            req = req.header("last-event-id", id);
        }
        app.router.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    let res = open(None).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();

    app.store
        .append_logs(&[piece(key, 0, "stdout", b"first <i>line</i>\n")])
        .await
        .unwrap();
    let got = read_events(&mut body, |e| e.contains("first")).await;
    let event = got.last().unwrap();
    assert!(event.contains("event: log") && event.contains("id: 18"), "{event}");
    assert!(event.contains("first &#60;i&#62;line&#60;/i&#62;"), "{event}");

    app.store
        .append_logs(&[piece(key, 100, "stderr", b"second\n")])
        .await
        .unwrap();
    let got = read_events(&mut body, |e| e.contains("second")).await;
    let event = got.last().unwrap();
    assert!(
        event.contains("… 82 bytes omitted …") && event.contains("id: 107"),
        "{event}"
    );

    // A browser reconnecting says where it got to.
    let mut resumed = open(Some("18")).await.unwrap().into_body();
    let got = read_events(&mut resumed, |e| e.contains("event: log")).await;
    assert!(!got.last().unwrap().contains("first") && got.last().unwrap().contains("second"));

    // A line written in two parts: the second part continues it (no new
    // line-start mark), without the stream reading the first part again.
    app.store
        .append_logs(&[piece(key, 107, "stdout", b"part one")])
        .await
        .unwrap();
    let got = read_events(&mut body, |e| e.contains("part one")).await;
    assert!(
        got.last().unwrap().contains("<span class=\"o b\">part one</span>"),
        "{got:?}"
    );
    app.store
        .append_logs(&[piece(key, 115, "stdout", b", part two\n")])
        .await
        .unwrap();
    let got = read_events(&mut body, |e| e.contains("part two")).await;
    let event = got.last().unwrap();
    assert!(
        event.contains("<span class=\"o\">, part two\n") && !event.contains("part one"),
        "{event}"
    );

    app.store.finish_log(key, 126).await.unwrap();
    let got = read_events(&mut body, |e| e.contains("event: end")).await;
    assert!(got.last().unwrap().contains("data: complete"), "{got:?}");
    let closed = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
    assert!(matches!(closed, Ok(None)), "the stream ends after `end`");
    app.finish().await;
}

#[tokio::test]
async fn only_a_running_attempts_log_is_said_to_be_live_and_an_ended_one_is_told_finished() {
    let mut app = TestApp::new().await;
    let (run, key) = run_with_a_quiet_step(&mut app).await;
    // The first step ran and ended (a real worker wrote its log), complete.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let chunk = app.get(&format!("/runs/{run}/log?step=0&attempt=1")).await.body;
        if chunk.contains("data-complete=\"true\"") {
            assert!(chunk.contains("data-running=\"false\""), "{chunk}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the log never completed: {chunk}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The second step running, its log being written: live.
    let mut db = app.db().await;
    let now = chrono::Utc::now();
    common::db::query(
        "UPDATE executions SET state = 'running', started_at = $2, lease_until = $3
          WHERE run_id = $1 AND step = 1",
    )
    .bind(run)
    .bind(now)
    .bind(now + chrono::Duration::minutes(1))
    .execute(&mut db)
    .await;
    app.store
        .append_logs(&[piece(key, 0, "stdout", b"working\n")])
        .await
        .unwrap();
    let chunk = app.get(&format!("/runs/{run}/log?step=1&attempt=1")).await.body;
    assert!(
        chunk.contains("data-complete=\"false\" data-running=\"true\""),
        "{chunk}"
    );
    let req = Request::get(format!("/runs/{run}/log/events?step=1&attempt=1&from=8"));
    let mut body = app
        .router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
        .into_body();
    app.store
        .append_logs(&[piece(key, 8, "stdout", b"more\n")])
        .await
        .unwrap();
    let got = read_events(&mut body, |e| e.contains("more")).await;
    assert!(got.last().unwrap().contains("data-running=\"true\""), "{got:?}");

    // It ends without its log's total (its worker died): the stream says it
    // ended at once, then that the log is incomplete; a chunk read now is
    // not live either.
    common::db::query("UPDATE executions SET state = 'abandoned', finished_at = $2 WHERE run_id = $1 AND step = 1")
        .bind(run)
        .bind(chrono::Utc::now())
        .execute(&mut db)
        .await;
    let got = read_events(&mut body, |e| e.contains("event: finished")).await;
    assert!(got.last().unwrap().contains("data: abandoned"), "{got:?}");
    let chunk = app.get(&format!("/runs/{run}/log?step=1&attempt=1")).await.body;
    assert!(
        chunk.contains("data-complete=\"false\" data-running=\"false\""),
        "{chunk}"
    );
    let got = read_events(&mut body, |e| e.contains("event: end")).await;
    assert!(got.last().unwrap().contains("data: incomplete"), "{got:?}");
    app.finish().await;
}

#[tokio::test]
async fn unknown_runs_and_executions_are_404_and_bad_windows_400() {
    let mut app = TestApp::new().await;
    let (run, _) = run_with_a_quiet_step(&mut app).await;
    let unknown = Uuid::now_v7();
    for (uri, status, needle) in [
        (format!("/api/v1/runs/{unknown}/log?step=0"), 404, "no run"),
        (format!("/api/v1/runs/{run}/log?step=7"), 404, "no execution of step 7"),
        (
            format!("/api/v1/runs/{run}/log?step=0&attempt=3"),
            404,
            "step 0 attempt 3",
        ),
        ("/api/v1/runs/not-a-run/log?step=0".to_string(), 400, "not a run id"),
        (format!("/api/v1/runs/{run}/log"), 400, "steps count from 0"),
        (format!("/api/v1/runs/{run}/log?step=0&from=-1"), 400, "byte offset"),
        (
            format!("/api/v1/runs/{run}/log?step=0&from=5&to=5"),
            400,
            "greater than from",
        ),
        (
            format!("/api/v1/runs/{run}/log?step=0&stream=stdin"),
            400,
            "stdout or stderr",
        ),
        (format!("/api/v1/runs/{run}/log?step=0&limit=0"), 400, "1 to 1000"),
    ] {
        let r = app.get(&uri).await;
        assert_eq!(r.status.as_u16(), status, "{uri}: {}", r.body);
        let err = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(err.contains(needle), "{uri}: {err}");
    }
    for uri in [
        format!("/runs/{unknown}/log?step=0"),
        format!("/runs/{run}/log/events?step=9"),
        format!("/runs/{run}/log/download?step=0&attempt=2"),
    ] {
        let r = app.get(&uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}: {}", r.body);
    }
    let bad = app.get(&format!("/runs/{run}/log/download?step=one")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("not a step number"), "{}", bad.body);
    app.finish().await;
}
