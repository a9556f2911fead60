//! Routing and concurrency as the UI shows them, against real PostgreSQL
//! and RabbitMQ with a real worker: a run turned away by its sequence's
//! `max_concurrent` (`skipped`) or waiting for a slot (`waiting`), with the
//! note saying why; a step waiting on a queue no live worker serves; on the
//! runs page, the run page, the workers and sequences pages and in the API.

mod common;

use axum::http::{Method, StatusCode};
use common::{TestApp, row_of};
use serde_json::Value;

/// The entry of `/api/v1/queues` named `name`.
fn queue<'a>(queues: &'a Value, name: &str) -> &'a Value {
    queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("no queue {name} in {queues:#}"))
}

#[tokio::test]
async fn a_run_turned_away_by_max_concurrent_shows_as_skipped_with_its_note() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let first = app.start("one_skip").await;
    let second = app.start("one_skip").await;
    let note = format!("skipped: run {first} holds the slot (max_concurrent 1, on_conflict skip)");
    let d = app.detail(second).await;
    assert_eq!(d.run.state, "skipped", "{d:#?}");
    assert_eq!(d.run.note.as_deref(), Some(note.as_str()));

    let runs = app.get("/").await;
    assert!(
        runs.body.contains("<option value=\"skipped\" >skipped</option>"),
        "state filter"
    );
    assert!(
        runs.body.contains("<option value=\"waiting\" >waiting</option>"),
        "state filter"
    );
    let row = row_of(&runs.body, &format!("data-run=\"{second}\""));
    for needle in [
        "badge s-skipped",
        &format!("title=\"{note}\"") as &str,
        // The run holding the slot, linked and shown short.
        &format!("href=\"/runs/{first}\""),
        &format!(">{}</a>", &first.simple().to_string()[24..]),
        " holds the slot (max_concurrent 1, on_conflict skip)",
    ] {
        assert!(row.contains(needle), "runs row lacks {needle:?}: {row}");
    }
    let skipped_only = app.get("/fragments/runs?state=skipped").await;
    assert!(skipped_only.body.contains(&second.to_string()));
    assert!(!skipped_only.body.contains(&format!("data-run=\"{first}\"")));

    let page = app.get(&format!("/runs/{second}")).await;
    assert_eq!(page.status, StatusCode::OK);
    for needle in [
        "badge big s-skipped",
        "<p class=\"run-note\">skipped: run <a",
        &format!("href=\"/runs/{first}\"") as &str,
        "banner-muted",
        "max_concurrent 1 · on_conflict skip",
    ] {
        assert!(page.body.contains(needle), "run page lacks {needle:?}:\n{}", page.body);
    }
    assert!(!page.body.contains("Cancel run"), "a skipped run is final");

    let api = app.get(&format!("/api/v1/runs/{second}")).await.json();
    assert_eq!(api["state"], "skipped");
    assert_eq!(api["note"], note.as_str());
    let listed = app.get("/api/v1/runs?state=skipped").await.json();
    assert_eq!(listed["runs"][0]["id"], second.to_string(), "{listed:#}");
    let cancel = app.post(&format!("/api/v1/runs/{second}/cancel")).await;
    assert_eq!(cancel.status, StatusCode::CONFLICT, "{}", cancel.body);

    let seqs = app.get("/sequences").await;
    let card = &seqs.body[seqs.body.find("id=\"seq-one_skip\"").unwrap()..];
    let card = &card[..card.find("</section>").unwrap()];
    assert!(
        card.contains("<span class=\"chip\">max_concurrent 1 · on_conflict skip</span>"),
        "{card}"
    );
    app.wait_state(first, "succeeded").await;
    app.finish().await;
}

#[tokio::test]
async fn a_run_waiting_for_a_slot_says_why_and_can_be_canceled_from_its_page() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let first = app.start("one_queue").await;
    let second = app.start("one_queue").await;
    let third = app.start("one_queue").await;
    let note = format!("waiting for a slot (max_concurrent 1: run {first} holds the slot)");
    for run in [second, third] {
        let d = app.detail(run).await;
        assert_eq!(d.run.state, "waiting", "{d:#?}");
        assert_eq!(d.run.note.as_deref(), Some(note.as_str()));
    }

    let runs = app.get("/").await;
    let row = row_of(&runs.body, &format!("data-run=\"{second}\""));
    for needle in [
        "row-waiting",
        "badge s-waiting",
        &format!("title=\"{note}\"") as &str,
        "0/1",
    ] {
        assert!(row.contains(needle), "runs row lacks {needle:?}: {row}");
    }
    let waiting_only = app.get("/fragments/runs?state=waiting").await;
    assert!(waiting_only.body.contains(&format!("data-run=\"{second}\"")));
    assert!(waiting_only.body.contains(&format!("data-run=\"{third}\"")));
    assert!(!waiting_only.body.contains(&format!("data-run=\"{first}\"")));

    let page = app.get(&format!("/runs/{second}")).await;
    for needle in [
        "badge big s-waiting",
        "<p class=\"run-note\">waiting for a slot (max_concurrent 1: run <a",
        &format!("href=\"/runs/{first}\"") as &str,
        "Cancel run",
        "badge s-pending",
        ", every 5s",
    ] {
        assert!(page.body.contains(needle), "run page lacks {needle:?}:\n{}", page.body);
    }
    let api = app.get(&format!("/api/v1/runs/{second}")).await.json();
    assert_eq!(api["state"], "waiting");
    assert_eq!(api["note"], note.as_str());

    let seqs = app.get("/sequences").await;
    let card = &seqs.body[seqs.body.find("id=\"seq-one_queue\"").unwrap()..];
    for needle in [
        format!("<span class=\"chip\">queue {}</span>", app.queue),
        "<span class=\"chip\">max_concurrent 1 · on_conflict queue</span>".to_string(),
    ] {
        assert!(card[..card.find("</section>").unwrap()].contains(&needle), "{card}");
    }
    let api = app.get("/api/v1/sequences").await.json();
    assert_eq!(api[2]["name"], "one_queue");
    assert_eq!(api[2]["queue"], app.queue.as_str());

    // Canceled from its page, as htmx posts the button's form.
    let canceled = app
        .request(
            Method::POST,
            &format!("/runs/{second}/cancel"),
            &[("hx-request", "true")],
            "",
        )
        .await;
    assert_eq!(canceled.status, StatusCode::OK, "{}", canceled.body);
    assert!(canceled.body.contains("Canceled."), "{}", canceled.body);
    assert_eq!(canceled.header("hx-trigger"), "run-changed");
    assert_eq!(app.detail(second).await.run.state, "canceled");
    let page = app.get(&format!("/runs/{second}")).await;
    assert!(page.body.contains("badge big s-canceled"));
    assert!(page.body.contains("Canceled by an operator."));
    assert!(
        !page.body.contains("waiting for a slot"),
        "the wait is over:\n{}",
        page.body
    );
    assert!(!page.body.contains("Cancel run"));

    // The slot frees when the first run ends: the third takes it.
    app.wait_state(first, "succeeded").await;
    app.wait_state(third, "succeeded").await;
    let page = app.get(&format!("/runs/{third}")).await;
    assert!(!page.body.contains("run-note"), "no note once admitted:\n{}", page.body);
    app.finish().await;
}

#[tokio::test]
async fn a_step_routed_to_a_queue_no_worker_serves_waits_and_says_so() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let nobody = app.nobody_queue();
    let run = app.start("unserved").await;
    let d = app
        .wait_for(run, "its second step waiting on a queue nobody serves", |d| {
            d.run.waiting_on.is_some()
        })
        .await;
    assert_eq!(d.run.state, "running");
    assert_eq!(d.run.waiting_on.as_deref(), Some(nobody.as_str()));
    assert_eq!(d.executions[0].queue, app.queue);
    assert_eq!(
        (d.executions[1].queue.as_str(), d.executions[1].state.as_str()),
        (nobody.as_str(), "queued")
    );

    let page = app.get(&format!("/runs/{run}")).await;
    for needle in [
        &format!(
            "Step 2 waits on queue <span class=\"mono\">{nobody}</span>: no live worker serves it; \
             it goes on as soon as one starts"
        ) as &str,
        &format!(
            "<span class=\"chip\" title=\"the queue this step is sent to\">queue {}</span>",
            app.queue
        ),
        &format!("<span class=\"chip\" title=\"the queue this step is sent to\">queue {nobody}</span>"),
        &format!("<dt>Queue</dt><dd class=\"mono\">{nobody}</dd>"),
        &format!("&#34;queue&#34;: &#34;{nobody}&#34;"),
        "Cancel run",
    ] {
        assert!(page.body.contains(needle), "run page lacks {needle:?}:\n{}", page.body);
    }
    let runs = app.get("/").await;
    let row = row_of(&runs.body, &format!("data-run=\"{run}\""));
    assert!(row.contains(&format!("no worker: {nobody}")), "{row}");

    let workers = app.get("/workers").await;
    let row = row_of(&workers.body, &format!("data-queue=\"{nobody}\""));
    for needle in [
        "row-no-worker",
        "s-no-worker\"",
        ">no worker</span>",
        ">no live worker</span>",
        ">1</td>",
    ] {
        assert!(row.contains(needle), "workers row lacks {needle:?}: {row}");
    }
    let served = row_of(&workers.body, &format!("data-queue=\"{}\"", app.queue));
    assert!(
        !served.contains("no worker") && !served.contains("no live worker"),
        "{served}"
    );
    row_of(&workers.body, &format!("data-queue=\"{nobody}.dead\""));

    let queues = app.get("/api/v1/queues").await.json();
    let q = queue(&queues, &nobody);
    assert_eq!(q["no_worker"], true, "{queues:#}");
    assert_eq!(
        (q["waiting_steps"].as_i64(), q["waiting_runs"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(q["served_by"], serde_json::json!([]));
    let own = queue(&queues, &app.queue);
    assert_eq!(own["no_worker"], false);
    assert_eq!(own["served_by"].as_array().unwrap().len(), 1, "{queues:#}");
    assert_eq!(queue(&queues, &format!("{nobody}.dead"))["no_worker"], false);

    let seqs = app.get("/api/v1/sequences").await.json();
    let unserved = seqs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "unserved")
        .unwrap();
    assert_eq!(unserved["steps"][0]["queue"], app.queue.as_str());
    assert_eq!(unserved["steps"][1]["queue"], nobody.as_str());

    // It goes on as soon as a worker for that queue starts.
    app.start_worker_on(vec![nobody.clone()]).await;
    let done = app.wait_state(run, "succeeded").await;
    assert_eq!(done.run.waiting_on, None);
    let q = app.get("/api/v1/queues").await.json();
    let q = queue(&q, &nobody);
    assert_eq!(
        (q["no_worker"].as_bool(), q["waiting_steps"].as_i64()),
        (Some(false), Some(0)),
        "{q:#}"
    );
    app.finish().await;
}
