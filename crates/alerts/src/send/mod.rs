//! The senders: the only I/O of this crate. A webhook is a JSON POST
//! (`http.rs`), an email goes over SMTP with `lettre` (`smtp.rs`), a
//! healthcheck ping is a GET of its URL. Each call is one attempt bounded by
//! the target's timeout; it reports what the other end answered, and
//! [`crate::throttle::next`] decides what follows. Secrets are read from the
//! environment here, at sending time, never from the file.

mod http;
mod smtp;

use crate::config::{AlertsConfig, Target, TargetKind, UrlSource};
use crate::event::{Event, Folded};
use crate::throttle::Answer;
use std::time::{Duration, Instant};

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub answer: Answer,
    /// The HTTP status, or the SMTP reply code.
    pub status: Option<u16>,
    /// The start of the answer's body, or what went wrong.
    pub excerpt: String,
    pub elapsed: Duration,
}

/// The most of an answer kept with a delivery.
pub const EXCERPT_BYTES: usize = 512;

/// Where the senders read the environment (a test passes its own).
pub type Env<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// One attempt to deliver `event` to `target`.
pub async fn send(
    config: &AlertsConfig,
    target: &Target,
    event: &Event,
    folded: Option<Folded>,
    env: Env<'_>,
) -> Attempt {
    let started = Instant::now();
    let ui_url = config.ui_url.as_deref();
    let result = match &target.kind {
        TargetKind::Webhook(hook) => {
            let url = match &hook.url {
                UrlSource::Literal(u) => Some(u.clone()),
                UrlSource::Env(name) => env(name),
            };
            let secret = hook.secret_env.as_ref().map(|name| (name, env(name)));
            match (url, secret) {
                (None, _) => Err(missing(match &hook.url {
                    UrlSource::Env(name) => name,
                    UrlSource::Literal(_) => "url",
                })),
                (_, Some((name, None))) => Err(missing(name)),
                (Some(url), secret) => {
                    let body = crate::payload::webhook_body(event, &target.name, folded, ui_url);
                    let key = secret.and_then(|(_, s)| s);
                    let delivery = format!("{}-{}", event.id, target.name);
                    Ok(http::post(&url, body, key.as_deref(), event.kind, &delivery, target.timeout).await)
                }
            }
        }
        TargetKind::Email(mail) => {
            let login = match &mail.credentials {
                None => Ok(None),
                Some(c) => match (env(&c.username_env), env(&c.password_env)) {
                    (Some(u), Some(p)) => Ok(Some((u, p))),
                    (None, _) => Err(missing(&c.username_env)),
                    (_, None) => Err(missing(&c.password_env)),
                },
            };
            match login {
                Err(e) => Err(e),
                Ok(login) => {
                    let (subject, body) = crate::payload::email(event, folded, ui_url);
                    Ok(smtp::send(mail, login, &subject, body, target.timeout).await)
                }
            }
        }
    };
    let (answer, status, excerpt) = result.unwrap_or_else(|why| (Answer::Permanent, None, why));
    Attempt {
        answer,
        status,
        excerpt,
        elapsed: started.elapsed(),
    }
}

/// A healthcheck ping: a GET of `url` (Healthchecks.io and its clones take
/// GET, HEAD or POST).
pub async fn ping(url: &str, timeout: Duration) -> Attempt {
    let started = Instant::now();
    let (answer, status, excerpt) = http::get(url, timeout).await;
    Attempt {
        answer,
        status,
        excerpt,
        elapsed: started.elapsed(),
    }
}

fn missing(name: &str) -> String {
    format!("the environment variable {name} is not set on this host; set it for the workers (alerts.json names it)")
}

/// The start of `text`, cut at a character boundary.
pub(crate) fn excerpt(text: &str) -> String {
    let mut end = text.len().min(EXCERPT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
