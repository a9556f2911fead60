//! Webhooks and pings over HTTP(S) with `reqwest` (rustls): no redirects
//! followed (a moved hook is a configuration to fix, and a POST must not
//! turn into a GET), the answer's body read only up to an excerpt.

use super::excerpt;
use crate::event::EventKind;
use crate::payload::SIGNATURE_HEADER;
use crate::throttle::{Answer, classify_http};
use std::sync::LazyLock;
use std::time::Duration;

static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("scheduler/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
});

/// POSTs a webhook body, signed when there is a key.
pub(super) async fn post(
    url: &str,
    body: Vec<u8>,
    key: Option<&str>,
    kind: EventKind,
    delivery: &str,
    timeout: Duration,
) -> (Answer, Option<u16>, String) {
    let mut request = CLIENT
        .post(url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("X-Scheduler-Event", kind.as_str())
        .header("X-Scheduler-Delivery", delivery);
    if let Some(key) = key {
        request = request.header(SIGNATURE_HEADER, crate::payload::signature(key.as_bytes(), &body));
    }
    answer(request.body(body).send().await).await
}

pub(super) async fn get(url: &str, timeout: Duration) -> (Answer, Option<u16>, String) {
    answer(CLIENT.get(url).timeout(timeout).send().await).await
}

async fn answer(sent: reqwest::Result<reqwest::Response>) -> (Answer, Option<u16>, String) {
    match sent {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let mut text = Vec::new();
            // Only an excerpt: a receiver may answer with anything.
            while text.len() < super::EXCERPT_BYTES {
                match response.chunk().await {
                    Ok(Some(chunk)) => text.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            let mut text = excerpt(&String::from_utf8_lossy(&text));
            if (300..400).contains(&status) {
                let to = response
                    .headers()
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("?");
                text = format!("redirected to {to}: put the final address in alerts.json. {text}");
            }
            (classify_http(status), Some(status), text)
        }
        // Timeouts, refused or reset connections, TLS failures: try again later.
        Err(e) => (Answer::Transient, None, excerpt(&error_chain(&e))),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
