//! Alerts through the real binary, PostgreSQL and RabbitMQ, delivered to
//! receivers on 127.0.0.1 started by the tests: a webhook receiver (a tiny
//! HTTP server on a thread) checks the payload and its signature, a 500
//! retried, exactly one delivery per event and target with two workers
//! running, throttling and healthcheck pings; an SMTP sink (Python's
//! `aiosmtpd`, `pip install aiosmtpd`) receives the email.

mod common;

use common::receiver::{Receiver, Request};
use common::{Env, assert_stays, wait_until};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);
const SECRET: &str = "s3cret-key";

/// An SMTP sink (aiosmtpd) on 127.0.0.1 writing each message to a file.
struct SmtpSink {
    port: u16,
    child: Child,
    file: std::path::PathBuf,
}

impl SmtpSink {
    fn start(dir: &std::path::Path) -> SmtpSink {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let file = dir.join("mail.txt");
        let script = r#"
import sys, time
from aiosmtpd.controller import Controller
class Sink:
    async def handle_DATA(self, server, session, envelope):
        with open(sys.argv[2], "ab") as f:
            f.write(envelope.content + b"\n--END--\n")
        return "250 OK queued"
c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("READY", flush=True)
while True:
    time.sleep(1)
"#;
        let mut child = Command::new("python3")
            .args(["-c", script, &port.to_string(), file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 for the SMTP sink (pip install aiosmtpd)");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(
            ready.trim(),
            "READY",
            "the SMTP sink did not start (pip install aiosmtpd)"
        );
        SmtpSink { port, child, file }
    }

    fn messages(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        text.split("\n--END--\n")
            .filter(|m| !m.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_alerts(env: &Env, alerts: Value) {
    std::fs::write(env.project.join("alerts.json"), alerts.to_string()).unwrap();
}

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Fails (exit 3) until the file `ok` exists in the project.
const FLAKY: &str = "#!/bin/sh\nif [ -f ok ]; then exit 0; fi\necho 'upstream said no' >&2\nexit 3\n";

fn deliveries(env: &Env) -> Vec<Value> {
    let out = env.run(&["alerts", "--json", "--limit", "100"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn failures_are_posted_signed_once_each_retried_after_a_500_and_mailed_with_two_workers() {
    // The first post is answered 500: its delivery is retried.
    let hook = Receiver::start(&[500]);
    let mut env = Env::new(&[("load", FLAKY)], &[("nightly", r#"[{"module_name": "load"}]"#)]);
    let smtp = SmtpSink::start(&env.project);
    write_alerts(
        &env,
        json!({"ui_url": "http://ui.test:8080", "targets": {
            "hook": {"type": "webhook", "url": hook.url("/hook"), "secret_env": "ALERT_KEY",
                     "events": ["run_failed"], "retry_delay_secs": 1},
            "mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port, "tls": "none",
                     "from": "Scheduler <scheduler@example.test>", "to": ["oncall@example.test"],
                     "events": ["run_failed"], "on_recovery": false}}}),
    );
    let key = [("ALERT_KEY", SECRET)];
    env.spawn_worker_with_env(&[], &key);
    env.spawn_worker_with_env(&[], &key);
    let runs: Vec<_> = (0..3).map(|_| env.start("nightly")).collect();
    for run in &runs {
        assert_eq!(env.wait_final(*run, MINUTE)["state"], "failed");
    }
    // Three failures: three deliveries to the hook (one retried after its
    // 500), three emails.
    let ok_posts = wait_until("three failures posted", MINUTE, || {
        let ok: Vec<Request> = hook.posts().into_iter().filter(|r| r.status == 200).collect();
        if ok.len() >= 3 { Ok(ok) } else { Err(hook.summary()) }
    });
    let posts = hook.posts();
    assert_eq!(posts[0].status, 500);
    let retried = posts[0].headers["x-scheduler-delivery"].clone();
    assert!(
        ok_posts.iter().any(|r| r.headers["x-scheduler-delivery"] == retried),
        "the delivery answered 500 was sent again: {}",
        hook.summary()
    );
    for post in &posts {
        assert_eq!(
            post.headers["x-scheduler-signature"],
            signature(&post.body),
            "signed body"
        );
        assert_eq!(post.headers["x-scheduler-event"], "run_failed");
        assert_eq!(post.headers["content-type"], "application/json");
        let body = post.json();
        assert_eq!(
            (body["event"].as_str(), body["sequence"].as_str()),
            (Some("run_failed"), Some("nightly"))
        );
        assert_eq!(body["step"], 1, "counted from 1, as show does");
        assert_eq!(body["detail"]["module"], "load");
        let run = body["run_id"].as_str().unwrap();
        assert!(runs.iter().any(|r| r.to_string() == run), "{body:#}");
        let text = body["text"].as_str().unwrap();
        assert!(text.contains("of nightly failed at step 1 (load)"), "{text}");
        assert!(text.contains(&format!("<http://ui.test:8080/runs/{run}>")), "{text}");
    }
    let mails = wait_until("three emails", MINUTE, || {
        let m = smtp.messages();
        if m.len() >= 3 {
            Ok(m)
        } else {
            Err(format!("{} so far", m.len()))
        }
    });
    assert!(mails[0].contains("Subject: [scheduler] Run "), "{}", mails[0]);
    assert!(mails[0].contains("To: oncall@example.test"), "{}", mails[0]);
    assert!(mails[0].contains("failed at step 1 (load)"), "{}", mails[0]);

    // Whoever of the two workers holds the lease, each event goes to each
    // target once: nothing more arrives.
    assert_stays("no second delivery of any event", Duration::from_secs(4), || {
        let mut per: HashMap<String, usize> = HashMap::new();
        for r in hook.posts().iter().filter(|r| r.status == 200) {
            *per.entry(r.headers["x-scheduler-delivery"].clone()).or_default() += 1;
        }
        match (per.len(), per.values().all(|n| *n == 1), smtp.messages().len()) {
            (3, true, 3) => Ok(()),
            other => Err(format!("{other:?}\n{}", hook.summary())),
        }
    });

    // The sequence is green again: the hook (on_recovery by default) is
    // told, the mail target (on_recovery false) is not.
    std::fs::write(env.project.join("ok"), "").unwrap();
    let green = env.start("nightly");
    assert_eq!(env.wait_final(green, MINUTE)["state"], "succeeded");
    let recovered = wait_until("the recovery posted", MINUTE, || {
        hook.posts()
            .into_iter()
            .find(|r| r.json()["event"] == "run_recovered")
            .ok_or_else(|| hook.summary())
    });
    let text = recovered.json()["text"].as_str().unwrap().to_string();
    assert!(
        text.contains("nightly is green again") && text.contains("after 3 failed runs"),
        "{text}"
    );
    assert_stays("no email of the recovery", Duration::from_secs(2), || {
        match smtp.messages().len() {
            3 => Ok(()),
            n => Err(format!("{n} emails")),
        }
    });

    // Every delivery and attempt is on record.
    let listed = deliveries(&env);
    let sent = |target: &str, kind: &str| {
        listed
            .iter()
            .filter(|d| d["target"] == target && d["kind"] == kind && d["state"] == "sent")
            .count()
    };
    assert_eq!(
        (sent("hook", "run_failed"), sent("mail", "run_failed")),
        (3, 3),
        "{listed:#?}"
    );
    assert_eq!(sent("hook", "run_recovered"), 1);
    let attempts: i64 = listed
        .iter()
        .filter(|d| d["target"] == "hook")
        .map(|d| d["attempts"].as_i64().unwrap())
        .sum();
    assert_eq!(attempts, 5, "3 failures + 1 retry + 1 recovery: {listed:#?}");
    let text = String::from_utf8_lossy(&env.run(&["alerts"]).stdout).to_string();
    assert!(
        text.contains("hook") && text.contains("run_failed") && text.contains("sent"),
        "{text}"
    );
}

#[test]
fn a_throttled_target_gets_one_alert_per_period_with_the_rest_counted_and_healthchecks_are_pinged() {
    let hook = Receiver::start(&[]);
    let sequence = json!({"healthcheck_url": hook.url("/hc/abc"), "steps": [{"module_name": "load"}]});
    let mut env = Env::new(&[("load", FLAKY)], &[("nightly", &sequence.to_string())]);
    write_alerts(
        &env,
        json!({"targets": {"hook": {"type": "webhook", "url": hook.url("/hook"),
                                    "events": ["run_failed"], "max_frequency_secs": 4}}}),
    );
    env.spawn_worker(&[]);
    let runs: Vec<_> = (0..4).map(|_| env.start("nightly")).collect();
    for run in &runs {
        assert_eq!(env.wait_final(*run, MINUTE)["state"], "failed");
    }
    let posts = wait_until("the first alert and the one after the period", MINUTE, || {
        let p = hook.posts();
        if p.len() >= 2 { Ok(p) } else { Err(hook.summary()) }
    });
    let second = posts[1].json();
    let text = second["text"].as_str().unwrap();
    let folded = 4 - 2;
    assert!(
        text.contains(&format!("(and {folded} more failures of nightly since ")),
        "{text}\n{}",
        hook.summary()
    );
    assert_eq!(second["folded"]["count"], folded);
    assert_stays("no third alert", Duration::from_secs(5), || match hook.posts().len() {
        2 => Ok(()),
        _ => Err(hook.summary()),
    });
    let listed = deliveries(&env);
    let folded_rows = listed.iter().filter(|d| d["state"] == "folded").count();
    assert_eq!(folded_rows, folded, "{listed:#?}");

    // Every run pinged its healthcheck at its start and at its failure.
    let pings = wait_until("8 pings", MINUTE, || {
        let p: Vec<String> = hook
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET")
            .map(|r| r.path)
            .collect();
        if p.len() >= 8 { Ok(p) } else { Err(hook.summary()) }
    });
    let count = |path: &str| pings.iter().filter(|p| *p == path).count();
    assert_eq!((count("/hc/abc/start"), count("/hc/abc/fail")), (4, 4), "{pings:?}");
    std::fs::write(env.project.join("ok"), "").unwrap();
    let green = env.start("nightly");
    assert_eq!(env.wait_final(green, MINUTE)["state"], "succeeded");
    wait_until("the success ping", MINUTE, || {
        hook.requests()
            .iter()
            .find(|r| r.method == "GET" && r.path == "/hc/abc")
            .map(|_| ())
            .ok_or_else(|| hook.summary())
    });
}

#[test]
fn alerts_test_reports_the_answer_and_validate_names_a_bad_field() {
    let hook = Receiver::start(&[200, 404]);
    let env = Env::new(&[("load", FLAKY)], &[("nightly", r#"[{"module_name": "load"}]"#)]);
    let smtp = SmtpSink::start(&env.project);
    write_alerts(
        &env,
        json!({"targets": {
            "hook": {"type": "webhook", "url": hook.url("/hook"), "events": ["run_failed"]},
            "mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port, "tls": "none",
                     "from": "scheduler@example.test", "to": "oncall@example.test", "events": ["worker_lost"]}}}),
    );
    let out = env.run(&["alerts", "test", "hook"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        said.contains("target hook (webhook): delivered, answer 200 in "),
        "{said}"
    );
    assert!(said.contains("receiver says 200"), "{said}");
    let test = hook.posts()[0].json();
    assert_eq!(test["event"], "test");
    assert!(
        test["text"]
            .as_str()
            .unwrap()
            .starts_with("Test alert from the scheduler: target hook works")
    );

    // A 404 is not retried: exit 1, and it says so.
    let out = env.run(&["alerts", "test", "hook", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["delivered"].as_bool(), v["status"].as_i64()),
        (Some(false), Some(404))
    );
    assert_eq!(v["body"], "receiver says 404");

    let out = env.run(&["alerts", "test", "mail"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("target mail (email): delivered, answer 250"), "{said}");
    let mails = wait_until("the test email", Duration::from_secs(10), || {
        let m = smtp.messages();
        if m.is_empty() { Err("none yet") } else { Ok(m) }
    });
    assert!(mails[0].contains("Test alert from the scheduler"), "{}", mails[0]);

    let out = env.run(&["alerts", "test", "pager"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no target \"pager\" (targets: hook, mail)"));

    let out = env.run(&["validate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("alert target hook (webhook): run_failed"));
    write_alerts(
        &env,
        json!({"targets": {"hook": {"type": "webhook", "url": hook.url("/hook"), "events": ["run_faild"]}}}),
    );
    let out = env.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "a definition error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("alerts.json: target \"hook\": \"events\": \"run_faild\" is not an event; known: run_failed"),
        "{err}"
    );
    write_alerts(
        &env,
        json!({"targets": {"hook": {"type": "webhook", "url": hook.url("/hook"), "secret": "x", "events": ["run_failed"]}}}),
    );
    let err = String::from_utf8_lossy(&env.run(&["validate"]).stderr).to_string();
    assert!(err.contains("\"secret\": never write a secret in alerts.json"), "{err}");
}
