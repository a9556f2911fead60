//! `alerts.json`: where alerts go and which events each target wants.
//! Parsed from text and validated once, at the edge, with no I/O: secrets
//! and credentials are never in the file, only the names of the environment
//! variables that hold them (read when sending). Every error names the file,
//! the target and the field, and says what to write.
//!
//! ```json
//! {
//!   "ui_url": "http://scheduler.internal:8080",
//!   "targets": {
//!     "ops-slack": {"type": "webhook", "url_env": "SLACK_HOOK_URL",
//!                   "events": ["run_failed", "worker_lost"], "max_frequency_secs": 600},
//!     "oncall": {"type": "email", "host": "smtp.example.com", "tls": "starttls",
//!                "from": "scheduler@example.com", "to": ["oncall@example.com"],
//!                "username_env": "SMTP_USER", "password_env": "SMTP_PASSWORD",
//!                "events": ["run_failed"]}
//!   }
//! }
//! ```

use crate::event::EventKind;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// The target name every healthcheck ping is recorded under.
pub const HEALTHCHECK_TARGET: &str = "healthcheck";

/// A validated `alerts.json`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertsConfig {
    /// The UI's address, for links to runs in messages.
    pub ui_url: Option<String>,
    pub targets: Vec<Target>,
}

impl AlertsConfig {
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// The targets that want an event of `kind`.
    pub fn targets_for(&self, kind: EventKind) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(move |t| t.wants(kind))
    }

    pub fn names(&self) -> String {
        if self.targets.is_empty() {
            return "none".into();
        }
        self.targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One target: where, what for, and how hard to try.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    pub events: BTreeSet<EventKind>,
    /// At most one alert per sequence (or schedule) and event kind per
    /// period; the others are counted into the next one.
    pub max_frequency: Option<Duration>,
    /// Send `run_recovered` when a sequence this target heard fail is green
    /// again (default: on for targets that want `run_failed`).
    pub on_recovery: bool,
    /// Attempts after the first, on a 5xx, a 408/429, a timeout or a lost connection.
    pub retries: u32,
    /// The first retry's delay; it doubles at each retry (capped at an hour).
    pub retry_delay: Duration,
    /// One attempt's bound (connect, send, answer).
    pub timeout: Duration,
}

impl Target {
    /// Whether this target is sent events of `kind`.
    pub fn wants(&self, kind: EventKind) -> bool {
        match kind {
            EventKind::RunRecovered => self.events.contains(&kind) || self.on_recovery,
            EventKind::Test => true,
            k if k.is_ping() => false,
            k => self.events.contains(&k),
        }
    }

    /// The environment variables it reads that `is_set` says are missing.
    pub fn missing_env(&self, is_set: impl Fn(&str) -> bool) -> Vec<String> {
        let names: Vec<&str> = match &self.kind {
            TargetKind::Webhook(w) => {
                let mut v: Vec<&str> = w.secret_env.iter().map(String::as_str).collect();
                if let UrlSource::Env(name) = &w.url {
                    v.push(name);
                }
                v
            }
            TargetKind::Email(e) => e
                .credentials
                .iter()
                .flat_map(|c| [c.username_env.as_str(), c.password_env.as_str()])
                .collect(),
        };
        names.into_iter().filter(|n| !is_set(n)).map(str::to_string).collect()
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            TargetKind::Webhook(_) => "webhook",
            TargetKind::Email(_) => "email",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TargetKind {
    Webhook(Webhook),
    Email(Email),
}

/// A JSON POST (Slack-compatible: the body has a `text` field).
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub url: UrlSource,
    /// The environment variable holding the HMAC-SHA256 key that signs the
    /// body (`X-Scheduler-Signature: sha256=<hex>`).
    pub secret_env: Option<String>,
}

/// A webhook's URL: in the file, or (when it carries a token, as Slack's
/// do) in an environment variable.
#[derive(Debug, Clone, PartialEq)]
pub enum UrlSource {
    Literal(String),
    Env(String),
}

/// Email over SMTP.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub from: String,
    pub to: Vec<String>,
    pub credentials: Option<Credentials>,
}

/// The names of the variables holding the SMTP login.
#[derive(Debug, Clone, PartialEq)]
pub struct Credentials {
    pub username_env: String,
    pub password_env: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plain SMTP (a relay on the same host or network).
    None,
    /// Plain, then STARTTLS (required).
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

impl Tls {
    pub fn default_port(self) -> u16 {
        match self {
            Tls::None => 25,
            Tls::Starttls => 587,
            Tls::Tls => 465,
        }
    }
}

/// What is wrong with `alerts.json`, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{}{message}", target.as_ref().map(|t| format!("target {t:?}: ")).unwrap_or_default(), field.as_ref().map(|f| format!("\"{f}\": ")).unwrap_or_default())]
pub struct AlertsError {
    pub file: String,
    pub target: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

const SHAPE: &str =
    "{\"targets\": {\"ops\": {\"type\": \"webhook\", \"url\": \"https://...\", \"events\": [\"run_failed\"]}}}";
const TOP_FIELDS: &str = "\"targets\" and \"ui_url\"";
const COMMON_FIELDS: &[&str] = &[
    "type",
    "events",
    "max_frequency_secs",
    "on_recovery",
    "retries",
    "retry_delay_secs",
    "timeout_secs",
];
const WEBHOOK_FIELDS: &[&str] = &["url", "url_env", "secret_env"];
const EMAIL_FIELDS: &[&str] = &["host", "port", "tls", "from", "to", "username_env", "password_env"];

/// Parses and validates `alerts.json` (`file` names it in errors).
pub fn parse(file: &str, text: &str) -> Result<AlertsConfig, AlertsError> {
    let err = |target: Option<&str>, field: Option<&str>, message: String| AlertsError {
        file: file.to_string(),
        target: target.map(str::to_string),
        field: field.map(str::to_string),
        message,
    };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        err(
            None,
            None,
            format!(
                "invalid JSON at line {}, column {}: {e}; expected {SHAPE}",
                e.line(),
                e.column()
            ),
        )
    })?;
    let Value::Object(mut top) = value else {
        return Err(err(None, None, format!("expected an object such as {SHAPE}")));
    };
    let ui_url = match top.remove("ui_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => {
            check_http_url(&u).map_err(|m| err(None, Some("ui_url"), m))?;
            Some(u.trim_end_matches('/').to_string())
        }
        Some(other) => {
            return Err(err(None, Some("ui_url"), format!("must be a URL string, not {other}")));
        }
    };
    let targets = match top.remove("targets") {
        Some(Value::Object(t)) => t,
        Some(other) => {
            return Err(err(
                None,
                Some("targets"),
                format!("must be an object of named targets, not {other}; expected {SHAPE}"),
            ));
        }
        None => return Err(err(None, None, format!("\"targets\" is missing; expected {SHAPE}"))),
    };
    if let Some(field) = top.keys().next() {
        return Err(err(
            None,
            None,
            format!("unknown field {field:?}; the file has {TOP_FIELDS}"),
        ));
    }
    let mut out = Vec::with_capacity(targets.len());
    for (name, value) in targets {
        let bad = |field: Option<&str>, message: String| err(Some(&name), field, message);
        check_target_name(&name).map_err(|m| bad(None, m))?;
        let Value::Object(object) = value else {
            return Err(bad(None, format!("a target is an object, such as {SHAPE}")));
        };
        out.push(parse_target(&name, object).map_err(|(field, message)| bad(field, message))?);
    }
    Ok(AlertsConfig { ui_url, targets: out })
}

type FieldError = (Option<&'static str>, String);

fn parse_target(name: &str, mut o: Map<String, Value>) -> Result<Target, FieldError> {
    for secret in ["secret", "password", "username", "token"] {
        if o.contains_key(secret) {
            return Err((
                Some(secret),
                format!(
                    "never write a secret in alerts.json: put it in an environment variable of the workers and \
                     name the variable in \"{secret}_env\""
                ),
            ));
        }
    }
    let kind = match o.remove("type") {
        Some(Value::String(t)) => t,
        Some(other) => return Err((Some("type"), format!("must be \"webhook\" or \"email\", not {other}"))),
        None => return Err((Some("type"), "is missing; write \"webhook\" or \"email\"".into())),
    };
    let events = parse_events(o.remove("events"))?;
    let max_frequency = opt_u64(&mut o, "max_frequency_secs", 1, 7 * 86_400)?.map(Duration::from_secs);
    let on_recovery = match o.remove("on_recovery") {
        None => events.contains(&EventKind::RunFailed),
        Some(Value::Bool(b)) => b,
        Some(other) => return Err((Some("on_recovery"), format!("must be true or false, not {other}"))),
    };
    let retries = opt_u64(&mut o, "retries", 0, 20)?.unwrap_or(5) as u32;
    let retry_delay = Duration::from_secs(opt_u64(&mut o, "retry_delay_secs", 1, 3600)?.unwrap_or(10));
    let timeout = Duration::from_secs(opt_u64(&mut o, "timeout_secs", 1, 300)?.unwrap_or(10));
    let kind = match kind.as_str() {
        "webhook" => TargetKind::Webhook(parse_webhook(&mut o)?),
        "email" => TargetKind::Email(parse_email(&mut o)?),
        other => {
            return Err((
                Some("type"),
                format!("{other:?} is not a target type; write \"webhook\" or \"email\""),
            ));
        }
    };
    let allowed: &[&str] = match kind {
        TargetKind::Webhook(_) => WEBHOOK_FIELDS,
        TargetKind::Email(_) => EMAIL_FIELDS,
    };
    if let Some(field) = o.keys().next() {
        let all: Vec<String> = COMMON_FIELDS
            .iter()
            .chain(allowed)
            .map(|f| format!("\"{f}\""))
            .collect();
        return Err((
            None,
            format!(
                "unknown field {field:?}; a {} target has {}",
                kind_name(&kind),
                all.join(", ")
            ),
        ));
    }
    Ok(Target {
        name: name.to_string(),
        kind,
        events,
        max_frequency,
        on_recovery,
        retries,
        retry_delay,
        timeout,
    })
}

fn kind_name(kind: &TargetKind) -> &'static str {
    match kind {
        TargetKind::Webhook(_) => "webhook",
        TargetKind::Email(_) => "email",
    }
}

fn parse_events(value: Option<Value>) -> Result<BTreeSet<EventKind>, FieldError> {
    let known = || {
        EventKind::SUBSCRIBABLE
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let list = match value {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) | None => {
            return Err((
                Some("events"),
                format!("list the events this target wants, from: {}", known()),
            ));
        }
        Some(other) => return Err((Some("events"), format!("must be a list of event names, not {other}"))),
    };
    let mut events = BTreeSet::new();
    for item in list {
        let kind = item
            .as_str()
            .and_then(EventKind::parse)
            .filter(|k| EventKind::SUBSCRIBABLE.contains(k));
        match kind {
            Some(k) => {
                events.insert(k);
            }
            None => return Err((Some("events"), format!("{item} is not an event; known: {}", known()))),
        }
    }
    Ok(events)
}

fn parse_webhook(o: &mut Map<String, Value>) -> Result<Webhook, FieldError> {
    let url = match (take_string(o, "url")?, take_string(o, "url_env")?) {
        (Some(url), None) => {
            check_http_url(&url).map_err(|m| (Some("url"), m))?;
            UrlSource::Literal(url)
        }
        (None, Some(env)) => {
            check_env_name(&env).map_err(|m| (Some("url_env"), m))?;
            UrlSource::Env(env)
        }
        (Some(_), Some(_)) => {
            return Err((
                Some("url"),
                "give \"url\" or \"url_env\" (a variable holding the URL), not both".into(),
            ));
        }
        (None, None) => {
            return Err((
                Some("url"),
                "is missing; give \"url\": \"https://...\", or \"url_env\" naming a variable that holds it".into(),
            ));
        }
    };
    let secret_env = take_string(o, "secret_env")?;
    if let Some(name) = &secret_env {
        check_env_name(name).map_err(|m| (Some("secret_env"), m))?;
    }
    Ok(Webhook { url, secret_env })
}

fn parse_email(o: &mut Map<String, Value>) -> Result<Email, FieldError> {
    let host = take_string(o, "host")?.unwrap_or_default();
    if host.trim().is_empty() || host.contains(['/', ' ', ':']) {
        return Err((
            Some("host"),
            "give the SMTP server's host name, such as \"smtp.example.com\" (the port goes in \"port\")".into(),
        ));
    }
    let tls = match take_string(o, "tls")?.as_deref() {
        None | Some("starttls") => Tls::Starttls,
        Some("none") => Tls::None,
        Some("tls") => Tls::Tls,
        Some(other) => {
            return Err((
                Some("tls"),
                format!("{other:?} is not a TLS mode; write \"none\", \"starttls\" or \"tls\""),
            ));
        }
    };
    let port = opt_u64(o, "port", 1, 65_535)?.map_or(tls.default_port(), |p| p as u16);
    let from = take_string(o, "from")?.unwrap_or_default();
    check_address(&from).map_err(|m| (Some("from"), m))?;
    let to = match o.remove("to") {
        Some(Value::String(one)) => vec![one],
        Some(Value::Array(list)) if !list.is_empty() => list
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err((Some("to"), format!("{other} is not an address string"))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err((
                Some("to"),
                "give the recipients, such as [\"oncall@example.com\"]".into(),
            ));
        }
    };
    for address in &to {
        check_address(address).map_err(|m| (Some("to"), m))?;
    }
    let credentials = match (take_string(o, "username_env")?, take_string(o, "password_env")?) {
        (None, None) => None,
        (Some(username_env), Some(password_env)) => {
            check_env_name(&username_env).map_err(|m| (Some("username_env"), m))?;
            check_env_name(&password_env).map_err(|m| (Some("password_env"), m))?;
            Some(Credentials {
                username_env,
                password_env,
            })
        }
        (Some(_), None) => {
            return Err((
                Some("password_env"),
                "is missing; with \"username_env\", name the variable holding the password too".into(),
            ));
        }
        (None, Some(_)) => {
            return Err((
                Some("username_env"),
                "is missing; with \"password_env\", name the variable holding the user name too".into(),
            ));
        }
    };
    Ok(Email {
        host,
        port,
        tls,
        from,
        to,
        credentials,
    })
}

fn take_string(o: &mut Map<String, Value>, field: &'static str) -> Result<Option<String>, FieldError> {
    match o.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err((Some(field), format!("must be a string, not {other}"))),
    }
}

fn opt_u64(o: &mut Map<String, Value>, field: &'static str, min: u64, max: u64) -> Result<Option<u64>, FieldError> {
    match o.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err((
                Some(field),
                format!("must be a whole number from {min} to {max}, not {v}"),
            )),
        },
    }
}

fn check_target_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err("a target name uses 1 to 64 letters, digits, '_', '-' and '.'".into());
    }
    if name == HEALTHCHECK_TARGET {
        return Err(format!(
            "{HEALTHCHECK_TARGET:?} is reserved for the healthcheck pings; choose another name"
        ));
    }
    Ok(())
}

fn check_env_name(name: &str) -> Result<(), String> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an environment variable name (letters, digits and '_', not starting with a digit)"
        ))
    }
}

/// An `http://` or `https://` URL with a host and no whitespace.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} is not a URL with a host (and no spaces)"));
    }
    Ok(())
}

fn check_address(address: &str) -> Result<(), String> {
    address
        .parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| format!("{address:?} is not an email address ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse("alerts.json", text).unwrap_err().to_string()
    }

    #[test]
    fn a_webhook_and_an_email_target_parse_with_their_defaults() {
        let cfg = parse(
            "alerts.json",
            r#"{"ui_url": "http://ui:8080/", "targets": {
                "ops": {"type": "webhook", "url": "https://hooks.example/x", "secret_env": "HOOK_KEY",
                        "events": ["run_failed", "worker_lost"], "max_frequency_secs": 600},
                "mail": {"type": "email", "host": "smtp.example.com", "from": "Scheduler <s@example.com>",
                         "to": "oncall@example.com", "username_env": "U", "password_env": "P",
                         "events": ["slot_missed"]}}}"#,
        )
        .unwrap();
        assert_eq!(cfg.ui_url.as_deref(), Some("http://ui:8080"));
        let ops = cfg.target("ops").unwrap();
        assert_eq!(ops.max_frequency, Some(Duration::from_secs(600)));
        assert!(
            ops.on_recovery,
            "a target that hears failures hears recoveries by default"
        );
        assert!(ops.wants(EventKind::RunRecovered) && ops.wants(EventKind::WorkerLost));
        assert!(!ops.wants(EventKind::StepRetrying) && !ops.wants(EventKind::HealthcheckStart));
        assert_eq!(
            (ops.retries, ops.retry_delay, ops.timeout.as_secs()),
            (5, Duration::from_secs(10), 10)
        );
        let mail = cfg.target("mail").unwrap();
        assert!(!mail.wants(EventKind::RunRecovered));
        let TargetKind::Email(e) = &mail.kind else { panic!() };
        assert_eq!((e.port, e.tls, e.to.len()), (587, Tls::Starttls, 1));
        assert_eq!(mail.missing_env(|n| n == "U"), vec!["P".to_string()]);
        assert_eq!(ops.missing_env(|_| false), vec!["HOOK_KEY".to_string()]);
    }

    #[test]
    fn on_recovery_false_opts_out_and_listing_run_recovered_opts_in() {
        let cfg = parse(
            "alerts.json",
            r#"{"targets": {"a": {"type": "webhook", "url": "http://127.0.0.1:1/", "events": ["run_failed"], "on_recovery": false},
                            "b": {"type": "webhook", "url": "http://127.0.0.1:1/", "events": ["run_recovered"]}}}"#,
        )
        .unwrap();
        assert!(!cfg.target("a").unwrap().wants(EventKind::RunRecovered));
        assert!(cfg.target("b").unwrap().wants(EventKind::RunRecovered));
        assert!(!cfg.target("b").unwrap().wants(EventKind::RunFailed));
    }

    #[test]
    fn errors_name_the_file_the_target_the_field_and_what_to_write() {
        let hook = |extra: &str| {
            format!(
                r#"{{"targets": {{"ops": {{"type": "webhook", "url": "https://h/x", "events": ["run_failed"]{extra}}}}}}}"#
            )
        };
        let e = err(&hook(r#", "secret": "hunter2""#));
        assert!(
            e.starts_with("alerts.json: target \"ops\": \"secret\": never write a secret"),
            "{e}"
        );
        assert!(e.contains("\"secret_env\""), "{e}");
        let e = err(r#"{"targets": {"ops": {"type": "webhook", "url": "https://h/x", "events": ["run_faild"]}}}"#);
        assert!(
            e.contains("target \"ops\": \"events\": \"run_faild\" is not an event; known: run_failed"),
            "{e}"
        );
        assert!(
            err(&hook(r#", "max_frequency_secs": 0"#))
                .contains("\"max_frequency_secs\": must be a whole number from 1")
        );
        assert!(err(&hook(r#", "retries": -1"#)).contains("\"retries\": must be a whole number"));
        assert!(
            err(&hook(r#", "secret_env": "MY-KEY""#))
                .contains("\"secret_env\": \"MY-KEY\" is not an environment variable name")
        );
        assert!(err(&hook(r#", "colour": "red""#)).contains("unknown field \"colour\"; a webhook target has"));
        assert!(
            err(r#"{"targets": {"ops": {"type": "webhook", "url": "ftp://h", "events": ["run_failed"]}}}"#)
                .contains("\"url\": \"ftp://h\" is not an http:// or https:// URL")
        );
        assert!(
            err(r#"{"targets": {"ops": {"type": "webhook", "events": ["run_failed"]}}}"#)
                .contains("\"url\": is missing")
        );
        assert!(
            err(r#"{"targets": {"ops": {"type": "pager", "events": ["run_failed"]}}}"#)
                .contains("\"type\": \"pager\" is not a target type")
        );
        assert!(
            err(r#"{"targets": {"ops": {"type": "webhook", "url": "https://h", "events": []}}}"#)
                .contains("\"events\": list the events")
        );
        assert!(err(r#"{"targets": {"a b": {}}}"#).contains("target \"a b\": a target name uses"));
        assert!(err(r#"{"targets": {"healthcheck": {}}}"#).contains("reserved"));
        assert!(err(r#"{"target": {}}"#).contains("\"targets\" is missing"));
        assert!(err("{\n\"targets\": {,}}").starts_with("alerts.json: invalid JSON at line 2"));
    }

    #[test]
    fn email_targets_check_tls_port_addresses_and_credentials() {
        let mail = |extra: &str| {
            format!(
                r#"{{"targets": {{"m": {{"type": "email", "host": "smtp.example.com", "from": "s@example.com",
                    "to": ["a@example.com"], "events": ["run_failed"]{extra}}}}}}}"#
            )
        };
        let cfg = parse("alerts.json", &mail(r#", "tls": "tls""#)).unwrap();
        let TargetKind::Email(e) = &cfg.targets[0].kind else {
            panic!()
        };
        assert_eq!((e.tls, e.port), (Tls::Tls, 465));
        let cfg = parse("alerts.json", &mail(r#", "tls": "none", "port": 2525"#)).unwrap();
        let TargetKind::Email(e) = &cfg.targets[0].kind else {
            panic!()
        };
        assert_eq!((e.tls, e.port), (Tls::None, 2525));
        assert!(
            err(&mail(r#", "tls": "ssl""#))
                .contains("\"tls\": \"ssl\" is not a TLS mode; write \"none\", \"starttls\" or \"tls\"")
        );
        assert!(err(&mail(r#", "port": 70000"#)).contains("\"port\": must be a whole number from 1 to 65535"));
        assert!(err(&mail(r#", "password": "x""#)).contains("\"password\": never write a secret"));
        assert!(err(&mail(r#", "username_env": "U""#)).contains("\"password_env\": is missing"));
        let e = err(&mail("").replace("a@example.com", "not an address"));
        assert!(
            e.contains("target \"m\": \"to\": \"not an address\" is not an email address"),
            "{e}"
        );
        assert!(
            err(&mail("").replace("smtp.example.com", "smtp.example.com:25"))
                .contains("\"host\": give the SMTP server's host name")
        );
    }
}
