//! The schedules page and `/api/v1/schedules`: definitions from the test
//! project's schedules.json, state and slots from a real PostgreSQL.

mod common;

use axum::http::StatusCode;
use chrono::{DateTime, Duration, TimeZone, Utc};
use common::TestApp;

const SCHEDULES: &str = r#"{
  "every_two": {"sequence": "quick", "cron": "*/2 * * * *", "timezone": "Europe/Madrid",
                "catchup": "none", "description": "limits <b>refresh</b>"},
  "off":       {"sequence": "slow", "cron": "@daily", "enabled": false}
}"#;

fn words(cron: &str) -> String {
    scheduler_schedule::parse_cron(cron).unwrap().describe()
}

#[tokio::test]
async fn the_page_shows_each_schedule_with_its_next_fire_times() {
    let app = TestApp::new().await;
    app.write_schedules(SCHEDULES);

    let page = app.get("/schedules").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let every_two = words("*/2 * * * *");
    assert!(!every_two.is_empty());
    for needle in [
        "href=\"/schedules\" class=\"active\"",
        "id=\"schedule-every_two\"",
        "id=\"schedule-off\"",
        "*/2 * * * *",
        &askama_escape(&every_two),
        "Europe/Madrid",
        "none (window 1 d)",
        "href=\"/?sequence=quick\"",
        "limits &#60;b&#62;refresh&#60;/b&#62;",
        "action=\"/schedules/every_two/pause\"",
        "Disabled in schedules.json",
        "No slot recorded yet",
        "badge small s-skipped\">disabled",
    ] {
        assert!(page.body.contains(needle), "schedules page lacks {needle:?}");
    }
    assert!(!page.body.contains("<b>refresh"), "the description is escaped");
    // Five fire times, in the schedule's timezone, two minutes apart.
    let card = &page.body[page.body.find("id=\"schedule-every_two\"").unwrap()..];
    let card = &card[..card.find("</section>").unwrap()];
    let fires = card.matches("<li><span class=\"mono\"").count();
    assert_eq!(fires, 5, "{card}");
    assert!(card.contains(" CET</span>") || card.contains(" CEST</span>"), "{card}");
    assert!(card.contains("<span class=\"muted\">in "), "relative times: {card}");

    let api = app.get("/api/v1/schedules").await;
    assert_eq!(api.status, StatusCode::OK, "{}", api.body);
    let v = api.json();
    assert_eq!(v["error"], serde_json::Value::Null);
    assert_eq!(v["exists"], true);
    let list = v["schedules"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let s = list.iter().find(|s| s["name"] == "every_two").unwrap();
    assert_eq!(s["sequence"], "quick");
    assert_eq!(s["cron"], "*/2 * * * *");
    assert_eq!(s["cron_words"], every_two.as_str());
    assert_eq!(s["timezone"], "Europe/Madrid");
    assert_eq!(s["catchup"], "none");
    assert_eq!(s["catchup_window_secs"], 86400);
    assert_eq!(s["enabled"], true);
    assert_eq!(s["paused"], false);
    assert_eq!(s["recent_slots"].as_array().unwrap().len(), 0);
    let next: Vec<DateTime<chrono::FixedOffset>> = s["next_fire_times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(next.len(), 5);
    for w in next.windows(2) {
        assert_eq!(w[1] - w[0], Duration::minutes(2));
    }
    // Madrid is UTC+1 or +2, and the times are written in it.
    let offset = next[0].offset().local_minus_utc();
    assert!(offset == 3600 || offset == 7200, "{:?}", next[0]);
    assert!(next[0] > Utc::now());
    let off = list.iter().find(|s| s["name"] == "off").unwrap();
    assert_eq!(off["enabled"], false);
    assert_eq!(off["timezone"], "UTC");
    assert_eq!(
        off["next_fire_times"].as_array().unwrap().len(),
        0,
        "a disabled schedule fires nothing"
    );
    app.finish().await;
}

/// askama's escaping of what the tests compare with the page.
fn askama_escape(s: &str) -> String {
    s.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

#[tokio::test]
async fn a_schedule_is_paused_from_the_page_and_resumed_through_the_api() {
    let app = TestApp::new().await;
    app.write_schedules(SCHEDULES);

    let r = app
        .post_form("/schedules/every_two/pause", "note=upstream+%3Cmaintenance%3E")
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.header("location"), "/schedules");

    let page = app.get("/schedules").await;
    let card = &page.body[page.body.find("id=\"schedule-every_two\"").unwrap()..];
    let card = &card[..card.find("</section>").unwrap()];
    assert!(page.body.contains("schedule is-paused\" id=\"schedule-every_two\""));
    for needle in [
        "Paused by <strong>ui</strong>",
        "upstream &#60;maintenance&#62;",
        "action=\"/schedules/every_two/resume\"",
        "badge small s-canceled\">paused",
    ] {
        assert!(card.contains(needle), "paused card lacks {needle:?}: {card}");
    }
    assert!(!card.contains("/pause\""), "no Pause button while paused");

    let v = app.get("/api/v1/schedules").await.json();
    let s = v["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "every_two")
        .unwrap()
        .clone();
    assert_eq!(s["paused"], true);
    assert_eq!(s["state"]["paused_by"], "ui");
    assert_eq!(s["state"]["paused_note"], "upstream <maintenance>");
    assert!(s["state"]["paused_at"].is_string());

    // Pausing it again says it is paused already.
    let again = app
        .request(
            axum::http::Method::POST,
            "/api/v1/schedules/every_two/pause",
            &[("x-requested-by", "test"), ("content-type", "application/json")],
            r#"{"note": "again"}"#,
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    assert!(again.json()["error"].as_str().unwrap().contains("paused already"));

    let r = app.post("/api/v1/schedules/every_two/resume").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json(), serde_json::json!({"name": "every_two", "paused": false}));
    let r = app.post("/api/v1/schedules/every_two/resume").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);

    let page = app.get("/schedules").await;
    assert!(page.body.contains("action=\"/schedules/every_two/pause\""));
    assert!(!page.body.contains("Paused by"));
    let st = app.store.schedule_states().await.unwrap();
    assert!(!st.iter().find(|s| s.name == "every_two").unwrap().paused);

    // A JSON body through the API, and an htmx form from the page.
    let r = app
        .request(
            axum::http::Method::POST,
            "/api/v1/schedules/every_two/pause",
            &[("x-requested-by", "test"), ("content-type", "application/json")],
            r#"{"note": "from a script"}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let st = app.store.schedule_states().await.unwrap();
    let st = st.iter().find(|s| s.name == "every_two").unwrap();
    assert!(st.paused);
    assert_eq!(st.paused_note.as_deref(), Some("from a script"));
    let r = app
        .request(
            axum::http::Method::POST,
            "/schedules/every_two/resume",
            &[("hx-request", "true")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.header("hx-location"), "/schedules");
    assert!(r.body.contains("Resumed every_two."), "{}", r.body);

    // A POST without proof that it comes from the page is refused.
    let r = app
        .request(axum::http::Method::POST, "/schedules/every_two/pause", &[], "note=x")
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    app.finish().await;
}

#[tokio::test]
async fn recorded_slots_are_cells_coloured_by_fate_linking_to_their_runs() {
    let app = TestApp::new().await;
    app.write_schedules(SCHEDULES);
    let run = app.start("quick").await;
    let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap();
    let at = |k: i64| t0 + Duration::minutes(2 * k);
    let s = &app.store;
    assert!(
        s.record_slot("every_two", at(0), "missed", Some("no scheduler ran"))
            .await
            .unwrap()
    );
    assert!(s.record_slot("every_two", at(1), "coalesced", None).await.unwrap());
    assert!(s.record_slot("every_two", at(2), "paused", None).await.unwrap());
    let mut db = app.db().await;
    common::db::query("INSERT INTO schedule_slots (schedule, slot_at, fate, run_id) VALUES ($1, $2, 'started', $3)")
        .bind("every_two")
        .bind(at(3))
        .bind(run)
        .execute(&mut db)
        .await;
    assert!(
        s.record_slot("every_two", at(4), "skipped", Some("held by <another> run"))
            .await
            .unwrap()
    );

    // The started slot's run was late, and it is the schedule's.
    common::db::query("UPDATE schedule_slots SET late_at = $2 WHERE slot_at = $1")
        .bind(at(3))
        .bind(at(3) + Duration::seconds(75))
        .execute(&mut db)
        .await;
    common::db::query("UPDATE runs SET schedule = 'every_two', logical_date = $2 WHERE id = $1")
        .bind(run)
        .bind(at(3))
        .execute(&mut db)
        .await;
    let other = app.start("quick").await;
    let runs = app.get("/?schedule=every_two").await;
    assert!(
        runs.body.contains("⏱ every_two</a>") && runs.body.contains("for 2026-11-27 10:06 UTC"),
        "{}",
        runs.body
    );
    assert!(runs.body.contains(&run.to_string()) && !runs.body.contains(&other.to_string()));
    let api = app.get("/api/v1/runs?schedule=every_two").await.json();
    assert_eq!(api["runs"].as_array().map(Vec::len), Some(1), "{api}");
    assert!(
        app.get("/?schedule=nope")
            .await
            .body
            .contains("No runs match this filter.")
    );

    let page = app.get("/schedules").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("1 of the last 5 slots late"), "{}", page.body);
    assert!(page.body.contains("href=\"/?schedule=every_two\""));
    let body = &page.body[page.body.find("<div class=\"slot-strip\">").expect("a strip of slots")..];
    let pos = |needle: &str| {
        body.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in the page:\n{body}"))
    };
    let missed =
        pos("<span class=\"slot-cell f-missed\" title=\"Fri 2026-11-27 11:00:00 CET · missed · no scheduler ran\"");
    let coalesced = pos("<span class=\"slot-cell f-coalesced\" title=\"Fri 2026-11-27 11:02:00 CET · coalesced\"");
    let paused = pos("<span class=\"slot-cell f-paused\"");
    let started = pos(&format!("<a class=\"slot-cell f-started late\" href=\"/runs/{run}\""));
    let skipped = pos(
        "<span class=\"slot-cell f-skipped\" title=\"Fri 2026-11-27 11:08:00 CET · skipped · held by &#60;another&#62; run\"",
    );
    assert!(
        missed < coalesced && coalesced < paused && paused < started && started < skipped,
        "oldest first"
    );
    assert!(page.body.contains("(last 5, oldest first)"));
    assert!(page.body.contains("last slot Fri 2026-11-27 11:08:00 CET"));

    let v = app.get("/api/v1/schedules").await.json();
    let sched = v["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "every_two")
        .unwrap()
        .clone();
    let slots = sched["recent_slots"].as_array().unwrap();
    let fates: Vec<&str> = slots.iter().map(|s| s["fate"].as_str().unwrap()).collect();
    assert_eq!(
        fates,
        ["skipped", "started", "paused", "coalesced", "missed"],
        "newest first"
    );
    assert_eq!(slots[1]["run_id"], run.to_string());
    // No scheduler registered it (the slots were written by hand): no state yet.
    assert!(sched["state"].is_null(), "{sched}");
    app.store.schedule_cursor("every_two").await.unwrap();
    let v = app.get("/api/v1/schedules").await.json();
    let sched = v["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "every_two")
        .unwrap()
        .clone();
    assert_eq!(sched["state"]["last_fate"], "skipped");
    assert_eq!(sched["state"]["paused"], false);
    app.finish().await;
}

#[tokio::test]
async fn an_unknown_schedule_is_a_404() {
    let app = TestApp::new().await;
    app.write_schedules(SCHEDULES);
    for uri in ["/api/v1/schedules/nope/pause", "/api/v1/schedules/nope/resume"] {
        let r = app.post(uri).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}: {}", r.body);
        assert!(
            r.json()["error"].as_str().unwrap().contains("no schedule \"nope\""),
            "{}",
            r.body
        );
    }
    let r = app.post_form("/schedules/nope/pause", "note=x").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.contains("no schedule"), "{}", r.body);
    assert!(
        app.store.schedule_states().await.unwrap().is_empty(),
        "nothing recorded"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_broken_or_missing_schedules_file_says_so() {
    let app = TestApp::new().await;
    let page = app.get("/schedules").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("No schedules: add <code>schedules.json</code>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("section “Schedules”"));
    let v = app.get("/api/v1/schedules").await.json();
    assert_eq!(v["exists"], false);
    assert_eq!(v["schedules"].as_array().unwrap().len(), 0);

    app.write_schedules(r#"{"bad": {"sequence": "no_such_sequence", "cron": "*/2 * * * *"}, "worse": {"sequence": "quick", "cron": "every <tuesday>"}}"#);
    let page = app.get("/schedules").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("schedules.json does not validate"), "{}", page.body);
    assert!(
        page.body.contains("<pre class=\"reason\">schedules.json: schedule"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<tuesday>"), "escaped");
    let v = app.get("/api/v1/schedules").await.json();
    let err = v["error"].as_str().unwrap();
    assert!(err.starts_with("schedules.json: schedule"), "{err}");
    let r = app.post("/api/v1/schedules/bad/pause").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    app.finish().await;
}
