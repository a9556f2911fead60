//! Email over SMTP with `lettre`: plain, STARTTLS (required, not
//! opportunistic) or TLS from the first byte, with the login read from the
//! environment. One connection per message: alerts are rare.

use super::excerpt;
use crate::config::{Email, Tls};
use crate::throttle::Answer;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

pub(super) async fn send(
    mail: &Email,
    login: Option<(String, String)>,
    subject: &str,
    body: String,
    timeout: Duration,
) -> (Answer, Option<u16>, String) {
    let message = match build(mail, subject, body) {
        Ok(m) => m,
        Err(e) => return (Answer::Permanent, None, excerpt(&e)),
    };
    let builder = match mail.tls {
        Tls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&mail.host)),
        Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&mail.host),
        Tls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&mail.host),
    };
    let mut builder = match builder {
        Ok(b) => b.port(mail.port).timeout(Some(timeout)),
        Err(e) => return (Answer::Permanent, None, excerpt(&e.to_string())),
    };
    if let Some((user, password)) = login {
        builder = builder.credentials(Credentials::new(user, password));
    }
    let transport = builder.build();
    // lettre's timeout bounds each read and write; this bounds the whole.
    match tokio::time::timeout(timeout * 2, transport.send(message)).await {
        Ok(Ok(response)) => {
            let code = response.code().to_string().parse().ok();
            let text = response.message().collect::<Vec<_>>().join(" ");
            (Answer::Delivered, code, excerpt(&text))
        }
        Ok(Err(e)) => {
            let code = e.status().map(|c| c.to_string()).and_then(|c| c.parse().ok());
            let answer = if e.is_permanent() {
                Answer::Permanent
            } else {
                Answer::Transient
            };
            (answer, code, excerpt(&e.to_string()))
        }
        Err(_) => (
            Answer::Transient,
            None,
            format!("no answer from {}:{} within {:?}", mail.host, mail.port, timeout * 2),
        ),
    }
}

fn build(mail: &Email, subject: &str, body: String) -> Result<Message, String> {
    let mut builder = Message::builder()
        .from(mail.from.parse().map_err(|e| format!("\"from\": {e}"))?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &mail.to {
        builder = builder.to(to.parse().map_err(|e| format!("\"to\": {e}"))?);
    }
    builder.body(body).map_err(|e| e.to_string())
}
