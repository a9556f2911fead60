//! The OpenAPI document of `/api/v1` (`/api/v1/openapi.json`) against the
//! real app, PostgreSQL, RabbitMQ and a worker: every route the router
//! serves is in the document and every documented operation is served
//! (method and path); every `$ref` resolves; and real answers (lists,
//! details with executions, logs, actions, errors) validate against the
//! schema the document gives for their path, method and status, strictly:
//! a field the document does not describe fails as much as a missing or
//! mistyped one, and so does a status it does not list.

mod common;

use axum::http::{Method, StatusCode};
use chrono::{TimeZone, Utc};
use common::{Reply, TestApp};
use scheduler_tracker::{AttemptRecord, NewEvent, Route};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

async fn document(app: &TestApp) -> Value {
    let r = app.get("/api/v1/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.header("content-type").starts_with("application/json"),
        "{:?}",
        r.headers
    );
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0", "an OpenAPI 3.1 document");
    doc
}

/// `(METHOD, path)` of every operation the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if METHODS.contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Every path the app's router holds under `/api/v1`, read from its `Debug`
/// output: axum lists the paths it matches there (it has no other way to
/// enumerate them). Guarded below against a format that no longer shows
/// them.
fn router_paths(app: &TestApp) -> BTreeSet<String> {
    let debug = format!("{:?}", app.router);
    let mut out = BTreeSet::new();
    let mut rest = debug.as_str();
    while let Some(at) = rest.find("\"/api/v1") {
        let path = &rest[at + 1..];
        let end = path.find('"').expect("a closed string");
        out.insert(path[..end].to_string());
        rest = &path[end..];
    }
    out
}

/// The methods the app serves on `path`: a request with a method no route
/// takes is answered 405 with the `Allow` header listing the ones it does
/// (HEAD comes with GET and is left out), without running a handler.
async fn served_methods(app: &TestApp, path: &str) -> BTreeSet<String> {
    let mut uri = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                uri.push_str("probe");
            }
            '}' => in_param = false,
            c if !in_param => uri.push(c),
            _ => {}
        }
    }
    let probe = Method::from_bytes(b"PROBE").unwrap();
    let r = app.request(probe, &uri, &[("x-requested-by", "test")], "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{uri}: {}", r.body);
    r.header("allow")
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty() && m != "HEAD")
        .collect()
}

#[tokio::test]
async fn every_route_the_router_serves_is_documented_and_every_documented_one_is_served() {
    let app = TestApp::new().await;
    let doc = document(&app).await;
    let documented = documented(&doc);
    let paths = router_paths(&app);
    assert!(
        paths.contains("/api/v1/runs") && paths.contains("/api/v1/runs/{id}") && paths.len() >= 15,
        "the router's paths could not be read from its Debug output: {paths:?}"
    );
    let mut served = BTreeSet::new();
    for path in &paths {
        for method in served_methods(&app, path).await {
            served.insert((method, path.clone()));
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not documented: {undocumented:?}\ndocumented but not served: {unserved:?}"
    );
    for (method, path) in &documented {
        let op = &doc["paths"][path][method.to_lowercase()];
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}: no answers"
        );
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{method} {path}: no summary"
        );
        // Every path parameter is declared.
        for name in path.split('{').skip(1).map(|s| &s[..s.find('}').unwrap()]) {
            let declared = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true);
            assert!(declared, "{method} {path}: path parameter {name} not declared");
        }
    }
    app.finish().await;
}

/// Every `"$ref"` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_reference_in_the_document_resolves_and_it_is_a_valid_schema_set() {
    let app = TestApp::new().await;
    let doc = document(&app).await;
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20, "{all:?}");
    for r in all {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("a remote $ref: {r}"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    // Each component compiles as a JSON Schema 2020-12 (OpenAPI 3.1's dialect).
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in schemas.keys() {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": {"schemas": schemas},
            "$ref": format!("#/components/schemas/{name}"),
        });
        jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Security: the token, as a bearer or the cookie, or nothing (no token set).
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["cookie"]["in"], "cookie");
    app.finish().await;
}

/// The document's component schemas, closed: every object schema (and every
/// composition of them) gets `unevaluatedProperties: false`, so an answer
/// carrying a field the document does not describe fails. A schema that is
/// a part of a larger one (`allOf`, from `#[serde(flatten)]`) is referenced
/// there as an open copy, its closing left to the whole.
fn closed_schemas(doc: &Value) -> Map<String, Value> {
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let part_of = |s: &Value| -> Vec<String> {
        s["allOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["$ref"].as_str())
            .map(|r| r.trim_start_matches("#/components/schemas/").to_string())
            .collect()
    };
    let parts: BTreeSet<String> = schemas.values().flat_map(part_of).collect();
    let mut out = Map::new();
    for (name, schema) in schemas {
        let mut closed = schema.clone();
        if schema.get("properties").is_some() || schema.get("allOf").is_some() {
            closed["unevaluatedProperties"] = json!(false);
        }
        if let Some(all) = closed.get_mut("allOf").and_then(Value::as_array_mut) {
            for p in all {
                if let Some(r) = p.get("$ref").and_then(Value::as_str) {
                    let open = format!("{r}.open");
                    p["$ref"] = json!(open);
                }
            }
        }
        out.insert(name.clone(), closed);
        if parts.contains(name) {
            out.insert(format!("{name}.open"), schema.clone());
        }
    }
    out
}

struct Checker {
    doc: Value,
    closed: Map<String, Value>,
    /// `(METHOD, path, status)` checked.
    seen: BTreeSet<(String, String, u16)>,
}

impl Checker {
    fn new(doc: Value) -> Checker {
        let closed = closed_schemas(&doc);
        Checker {
            doc,
            closed,
            seen: BTreeSet::new(),
        }
    }

    /// `reply`, an answer to `method` on the documented `path`, validates
    /// against the schema the document gives for its status.
    fn check(&mut self, method: &str, path: &str, reply: &Reply) {
        let errors = self.errors(method, path, reply);
        assert!(
            errors.is_empty(),
            "{method} {path} → {}: the answer does not match the document:\n{}\n{:#}",
            reply.status,
            errors.join("\n"),
            reply.json()
        );
        self.seen
            .insert((method.to_string(), path.to_string(), reply.status.as_u16()));
    }

    /// Where `reply` departs from the document (it must document the
    /// operation, the status and a JSON schema for it).
    fn errors(&self, method: &str, path: &str, reply: &Reply) -> Vec<String> {
        let status = reply.status.as_u16();
        let what = format!("{method} {path} → {status}");
        let op = &self.doc["paths"][path][method.to_lowercase()];
        if !op.is_object() {
            return vec![format!("{what}: no such operation in the document")];
        }
        let answer = &op["responses"][status.to_string()];
        if !answer.is_object() {
            return vec![format!("{what}: status not documented")];
        }
        let schema = &answer["content"]["application/json"]["schema"];
        if !schema.is_object() {
            return vec![format!("{what}: no JSON schema documented")];
        }
        let content_type = reply.header("content-type");
        if !content_type.starts_with("application/json") {
            return vec![format!("{what}: answered {content_type:?}")];
        }
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": {"schemas": self.closed},
            "allOf": [schema],
        });
        let validator = jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{what}: {e}"));
        let instance = reply.json();
        validator
            .iter_errors(&instance)
            .map(|e| format!("at {}: {e}", e.instance_path()))
            .collect()
    }
}

const SCHEDULES: &str = r#"{
  "every_two": {"sequence": "quick", "cron": "*/2 * * * *", "timezone": "Europe/Madrid",
                "catchup": "none", "description": "refresh"},
  "off":       {"sequence": "slow", "cron": "@daily", "enabled": false}
}"#;

#[tokio::test]
async fn real_answers_validate_against_the_document() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    app.write_schedules(SCHEDULES);
    let mut c = Checker::new(document(&app).await);

    // A run that succeeds, one that fails, one still running.
    let ok = app.start("quick").await;
    let failed = app.start("failing").await;
    let slow = app.start("slow").await;
    app.wait_state(ok, "succeeded").await;
    app.wait_state(failed, "failed").await;
    app.wait_for(slow, "its module started", |d| {
        d.executions
            .first()
            .is_some_and(|e| e.state == "running" && e.pid.is_some())
    })
    .await;
    // A slot of the schedule recorded with its run, one missed.
    let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap();
    assert!(
        app.store
            .record_slot("every_two", t0, "missed", Some("no scheduler ran"))
            .await
            .unwrap()
    );
    // An alert delivery, failed once (recorded directly: no receiver needed).
    let s = &*app.store;
    let event = s
        .record_event(&NewEvent {
            kind: "run_failed".into(),
            sequence: Some("failing".into()),
            run_id: Some(failed),
            message: Some("exit code 3".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let route = Route {
        event_id: event,
        target: "ops".into(),
        kind: "run_failed".into(),
        subject: "failing".into(),
        held: false,
        url: None,
    };
    s.route_events(&[event], &[route]).await.unwrap();
    let sender = Uuid::now_v7();
    assert_eq!(
        s.claim_deliveries(sender, 10, Duration::from_secs(60))
            .await
            .unwrap()
            .len(),
        1
    );
    let attempt = AttemptRecord {
        event_id: event,
        target: "ops",
        worker_id: sender,
        attempt: 1,
        outcome: "failed",
        status: Some(500),
        response: "down",
        elapsed: Duration::from_millis(5),
        retry_in: None,
    };
    assert!(s.record_attempt(&attempt).await.unwrap());

    // Lists and details.
    let runs = app.get("/api/v1/runs?limit=2").await;
    assert_eq!(runs.json()["runs"].as_array().unwrap().len(), 2);
    assert!(runs.json()["next"].is_string(), "a next page");
    c.check("GET", "/api/v1/runs", &runs);
    c.check("GET", "/api/v1/runs", &app.get("/api/v1/runs?state=failed").await);
    for run in [ok, failed, slow] {
        let detail = app.get(&format!("/api/v1/runs/{run}")).await;
        assert!(
            !detail.json()["executions"].as_array().unwrap().is_empty(),
            "{}",
            detail.body
        );
        c.check("GET", "/api/v1/runs/{id}", &detail);
    }
    let log = app.get(&format!("/api/v1/runs/{ok}/log?step=0")).await;
    assert!(!log.json()["pieces"].as_array().unwrap().is_empty(), "{}", log.body);
    c.check("GET", "/api/v1/runs/{id}/log", &log);
    let sequences = app.get("/api/v1/sequences").await;
    let with_policy = sequences
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["concurrency"].is_object());
    assert!(with_policy, "a sequence with a concurrency policy: {}", sequences.body);
    c.check("GET", "/api/v1/sequences", &sequences);
    let workers = app.get("/api/v1/workers").await;
    assert_eq!(workers.json()[0]["alive"], true, "{}", workers.body);
    c.check("GET", "/api/v1/workers", &workers);
    let queues = app.get("/api/v1/queues").await;
    assert!(queues.json().as_array().unwrap().len() >= 2, "{}", queues.body);
    c.check("GET", "/api/v1/queues", &queues);
    c.check("GET", "/api/v1/storage", &app.get("/api/v1/storage").await);
    let deliveries = app.get("/api/v1/alerts/deliveries").await;
    assert_eq!(
        deliveries.json()["deliveries"][0]["state"],
        "failed",
        "{}",
        deliveries.body
    );
    c.check("GET", "/api/v1/alerts/deliveries", &deliveries);

    // Actions.
    let started = app.post("/api/v1/sequences/quick/start").await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    c.check("POST", "/api/v1/sequences/{name}/start", &started);
    let canceled = app.post(&format!("/api/v1/runs/{slow}/cancel")).await;
    assert_eq!(canceled.status, StatusCode::OK, "{}", canceled.body);
    c.check("POST", "/api/v1/runs/{id}/cancel", &canceled);
    let retried = app.post(&format!("/api/v1/runs/{failed}/retry")).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    c.check("POST", "/api/v1/runs/{id}/retry", &retried);
    let paused = app
        .request(
            Method::POST,
            "/api/v1/schedules/every_two/pause",
            &[("x-requested-by", "test"), ("content-type", "application/json")],
            r#"{"note": "maintenance"}"#,
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.body);
    c.check("POST", "/api/v1/schedules/{name}/pause", &paused);
    let schedules = app.get("/api/v1/schedules").await;
    let every_two = &schedules.json()["schedules"][0];
    assert!(
        every_two["state"]["paused"] == true && every_two["recent_slots"][0].is_object(),
        "{every_two:#}"
    );
    c.check("GET", "/api/v1/schedules", &schedules);
    c.check(
        "POST",
        "/api/v1/schedules/{name}/pause",
        &app.post("/api/v1/schedules/every_two/pause").await,
    );
    let resumed = app.post("/api/v1/schedules/every_two/resume").await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
    c.check("POST", "/api/v1/schedules/{name}/resume", &resumed);
    c.check("GET", "/api/v1/openapi.json", &app.get("/api/v1/openapi.json").await);

    // Errors: each a documented status with the error shape.
    let unknown = Uuid::now_v7();
    for (uri, status) in [
        ("/api/v1/runs?limit=0".to_string(), 400),
        (format!("/api/v1/runs/{unknown}"), 404),
        ("/api/v1/runs/not-a-uuid".to_string(), 400),
        (format!("/api/v1/runs/{ok}/log?step=9"), 404),
        (format!("/api/v1/runs/{ok}/log"), 400),
        ("/api/v1/alerts/deliveries?limit=0".to_string(), 400),
    ] {
        let r = app.get(&uri).await;
        assert_eq!(r.status.as_u16(), status, "{uri}: {}", r.body);
        let path = uri.split('?').next().unwrap().replace(&unknown.to_string(), "{id}");
        let path = path.replace(&ok.to_string(), "{id}").replace("not-a-uuid", "{id}");
        c.check("GET", &path, &r);
    }
    for (uri, template, status) in [
        (format!("/api/v1/runs/{ok}/retry"), "/api/v1/runs/{id}/retry", 409),
        (
            format!("/api/v1/runs/{unknown}/cancel"),
            "/api/v1/runs/{id}/cancel",
            404,
        ),
        (
            "/api/v1/sequences/broken/start".into(),
            "/api/v1/sequences/{name}/start",
            422,
        ),
        (
            "/api/v1/sequences/missing/start".into(),
            "/api/v1/sequences/{name}/start",
            404,
        ),
        (
            "/api/v1/schedules/nope/resume".into(),
            "/api/v1/schedules/{name}/resume",
            404,
        ),
    ] {
        let r = app.post(&uri).await;
        assert_eq!(r.status.as_u16(), status, "{uri}: {}", r.body);
        c.check("POST", template, &r);
    }
    // A POST without the cross-site proof is refused before any handler.
    let forged = app
        .request(Method::POST, "/api/v1/sequences/quick/start", &[], "")
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    c.check("POST", "/api/v1/sequences/{name}/start", &forged);

    // Every documented operation was answered at least once.
    let answered: BTreeSet<(String, String)> = c.seen.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect();
    let missed: Vec<_> = documented(&c.doc).difference(&answered).cloned().collect();
    assert!(missed.is_empty(), "operations never checked: {missed:?}");
    app.finish().await;
}

/// `reply` with its JSON body changed by `change`.
fn altered(reply: &Reply, change: impl FnOnce(&mut Value)) -> Reply {
    let mut v = reply.json();
    change(&mut v);
    Reply {
        status: reply.status,
        headers: reply.headers.clone(),
        body: v.to_string(),
    }
}

#[tokio::test]
async fn the_check_refuses_an_undescribed_field_a_missing_one_a_wrong_type_and_an_undocumented_status() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let c = Checker::new(document(&app).await);
    let run = app.start("quick").await;
    app.wait_state(run, "succeeded").await;
    let detail = app.get(&format!("/api/v1/runs/{run}")).await;
    let workers = app.get("/api/v1/workers").await;
    assert!(c.errors("GET", "/api/v1/runs/{id}", &detail).is_empty());
    assert!(c.errors("GET", "/api/v1/workers", &workers).is_empty());
    let refused = |method: &str, path: &str, reply: Reply, why: &str| {
        let errors = c.errors(method, path, &reply);
        assert!(!errors.is_empty(), "{why}: accepted {}", reply.body);
    };
    // A field at the top of a flattened (allOf) answer, in a nested object,
    // and in a flattened part of an array's item.
    refused(
        "GET",
        "/api/v1/runs/{id}",
        altered(&detail, |v| v["bogus"] = json!(1)),
        "extra field",
    );
    let nested = altered(&detail, |v| v["executions"][0]["bogus"] = json!(1));
    refused("GET", "/api/v1/runs/{id}", nested, "extra nested field");
    refused(
        "GET",
        "/api/v1/workers",
        altered(&workers, |v| v[0]["bogus"] = json!(1)),
        "extra field in a flattened item",
    );
    let missing = altered(&detail, |v| {
        v.as_object_mut().unwrap().remove("sequence");
    });
    refused("GET", "/api/v1/runs/{id}", missing, "a required field missing");
    refused(
        "GET",
        "/api/v1/runs/{id}",
        altered(&detail, |v| v["step_count"] = json!("2")),
        "a wrong type",
    );
    let teapot = Reply {
        status: StatusCode::IM_A_TEAPOT,
        headers: detail.headers.clone(),
        body: r#"{"error": "no"}"#.into(),
    };
    refused("GET", "/api/v1/runs/{id}", teapot, "an undocumented status");
    app.finish().await;
}

#[tokio::test]
async fn the_document_is_behind_the_token_like_the_rest_of_the_api() {
    let app = TestApp::with_token(Some("s3cret")).await;
    let refused = app.get("/api/v1/openapi.json").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let r = app
        .request(
            Method::GET,
            "/api/v1/openapi.json",
            &[("authorization", "Bearer s3cret")],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut c = Checker::new(r.json());
    c.check("GET", "/api/v1/openapi.json", &refused);
    c.check("GET", "/api/v1/runs", &app.get("/api/v1/runs").await);
    c.check(
        "POST",
        "/api/v1/runs/{id}/retry",
        &app.post(&format!("/api/v1/runs/{}/retry", Uuid::now_v7())).await,
    );
    // The footer of every page links it.
    let page = app
        .request(Method::GET, "/", &[("authorization", "Bearer s3cret")], "")
        .await;
    assert!(page.body.contains(r#"href="/api/v1/openapi.json""#), "{}", page.body);
    app.finish().await;
}
