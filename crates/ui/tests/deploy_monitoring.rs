//! The shipped monitoring files, `deploy/grafana/scheduler-dashboard.json`
//! and `deploy/prometheus/alerts.yml`, against the server: every metric
//! they name is one `/metrics` exports (a dashboard panel or an alert over
//! a name that does not exist shows nothing and fires never, silently),
//! the dashboard has the panels and the rules have the alerts the README
//! promises, and, where `promtool` is installed, the rules and every
//! dashboard query parse and the rules' unit tests pass.

mod common;

use common::TestApp;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("reading deploy/{path}: {e}"))
}

/// Every `scheduler_...` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut at = 0;
    while let Some(i) = text[at..].find("scheduler_") {
        let start = at + i;
        let mut end = start + "scheduler_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let inside_a_word = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !inside_a_word {
            names.insert(text[start..end].to_string());
        }
        at = end;
    }
    names
}

/// The dashboard's queries: each target's `expr`, and the template
/// variables' queries.
fn dashboard_queries(d: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = vec![];
    walk(d, &mut out);
    out
}

/// The alert rules' expressions, with the alert each belongs to: a one-line
/// `expr:` or the indented block after `expr: |`.
fn alert_exprs(yaml: &str) -> Vec<(String, String)> {
    let mut out = vec![];
    let mut alert = String::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            alert = name.trim().to_string();
        } else if let Some(rest) = t.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest == "|" || rest == ">" {
                let indent = line.len() - t.len();
                let mut block = String::new();
                while let Some(next) = lines.peek() {
                    let n = next.trim_start();
                    if !n.is_empty() && next.len() - n.len() <= indent {
                        break;
                    }
                    block.push_str(n);
                    block.push('\n');
                    lines.next();
                }
                out.push((alert.clone(), block));
            } else {
                out.push((alert.clone(), rest.to_string()));
            }
        }
    }
    out
}

/// The metric names `/metrics` exports: its `# TYPE` lines, a histogram's
/// series under their suffixes.
fn exported(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alert_rules_use_is_one_the_server_exports() {
    let dashboard: Value =
        serde_json::from_str(&read("grafana/scheduler-dashboard.json")).expect("the dashboard is JSON");
    let rules = read("prometheus/alerts.yml");
    let queries = dashboard_queries(&dashboard);
    let exprs = alert_exprs(&rules);
    assert!(queries.len() >= 20, "{queries:#?}");
    assert_eq!(
        exprs.len(),
        rules.matches("- alert:").count(),
        "one expr per alert: {exprs:#?}"
    );

    let app = TestApp::new().await;
    let m = app.get("/metrics").await;
    assert_eq!(m.status, axum::http::StatusCode::OK);
    let exported = exported(&m.body);
    assert!(exported.contains("scheduler_runs_finished"), "{}", m.body);

    let mut used = BTreeSet::new();
    for q in &queries {
        used.extend(metric_names(q));
    }
    let from_rules: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| metric_names(e)).collect();
    used.extend(from_rules.iter().cloned());
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard or the alert rules use metrics /metrics does not export: {missing:?}\nexported: {exported:?}"
    );
    // Both files are about the scheduler's metrics, not stray examples.
    assert!(used.len() >= 12, "{used:?}");
    assert!(from_rules.len() >= 7, "{from_rules:?}");
    app.finish().await;
}

#[test]
fn the_dashboard_and_the_rules_hold_what_the_readme_promises() {
    let dashboard: Value = serde_json::from_str(&read("grafana/scheduler-dashboard.json")).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<String> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap_or_default().to_lowercase())
        .collect();
    for want in [
        "runs in flight, by state",
        "runs recorded, by state",
        "failure rate by sequence",
        "step duration by module (p50, p95, p99",
        "peak memory by module",
        "queue depth",
        "workers alive",
        "missed and skipped slots",
        "alert deliveries by target and outcome",
        "alert failures",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel {want:?} in {titles:?}"
        );
    }
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "panel ids are unique");
        let g = &p["gridPos"];
        assert!(g["x"].as_i64().unwrap() + g["w"].as_i64().unwrap() <= 24, "{p}");
        if p["type"] != "row" {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "every panel reads the chosen Prometheus"
            );
            assert!(!p["targets"].as_array().unwrap().is_empty(), "{p}");
            assert!(!p["description"].as_str().unwrap_or_default().is_empty(), "{p}");
        }
    }
    let rules = read("prometheus/alerts.yml");
    for alert in [
        "SchedulerNoWorkerAlive",
        "SchedulerQueueGrowingWithoutConsumer",
        "SchedulerFailureRateHigh",
        "SchedulerSlotsMissed",
    ] {
        assert!(rules.contains(&format!("- alert: {alert}\n")), "no alert {alert}");
    }
    for (alert, expr) in alert_exprs(&rules) {
        assert!(!expr.contains("run_id"), "{alert}: no run id label");
    }
}

/// `promtool` (Debian's `prometheus` package) checks what the test above
/// cannot: the rules and every dashboard query parse as PromQL, and each
/// alert fires on the series of `alerts_test.yml` and on no other.
#[test]
fn promtool_accepts_the_rules_their_unit_tests_and_the_dashboard_queries() {
    let Ok(version) = std::process::Command::new("promtool").arg("--version").output() else {
        eprintln!("promtool is not installed (apt-get install prometheus): skipping its checks");
        return;
    };
    assert!(version.status.success());
    let run = |args: &[&str]| {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(deploy("prometheus"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["check", "rules", "alerts.yml"]);
    run(&["test", "rules", "alerts_test.yml"]);

    // Every dashboard query as a recording rule, its variables at "all".
    let dashboard: Value = serde_json::from_str(&read("grafana/scheduler-dashboard.json")).unwrap();
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in dashboard_queries(&dashboard).iter().enumerate() {
        if q.starts_with("label_values(") {
            continue;
        }
        let expr = q.replace("$sequence", ".*").replace("$module", ".*");
        file.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let path = std::env::temp_dir().join(format!("scheduler-dashboard-{}.yml", uuid::Uuid::now_v7().simple()));
    std::fs::write(&path, file).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "a dashboard query does not parse:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metric_names_are_found_whole_and_only_at_a_word_start() {
    let names = metric_names(
        "sum by (le) (scheduler_step_duration_seconds_bucket{module=~\"$m\"}) / my_scheduler_x + scheduler_runs",
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(names, ["scheduler_runs", "scheduler_step_duration_seconds_bucket"]);
    let exprs = alert_exprs("- alert: A\n  expr: up == 0\n- alert: B\n  expr: |\n    x\n    and y\n  for: 1m\n");
    assert_eq!(
        exprs,
        [
            ("A".to_string(), "up == 0".to_string()),
            ("B".to_string(), "x\nand y\n".to_string())
        ]
    );
}
