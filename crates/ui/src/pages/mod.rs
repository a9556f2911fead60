//! The HTML pages, one file each. A page is a full document; its live part
//! is also served alone as a fragment that htmx swaps in when the page's
//! event stream says something changed. Actions are POST forms: with htmx
//! they answer a flash message (and an event or a redirect for htmx to
//! follow); without JavaScript they answer a redirect, or an error page.

pub(crate) mod alerts;
pub(crate) mod log;
pub(crate) mod run;
pub(crate) mod runs;
pub(crate) mod schedules;
pub(crate) mod sequence;
pub(crate) mod sequences;
pub(crate) mod workers;

use crate::error::{PageError, Problem};
use askama::Template;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: &'a str,
    status: String,
    message: &'a str,
}

pub(crate) fn error_page(p: &Problem) -> String {
    let page = ErrorPage {
        nav: "",
        status: format!(
            "{} {}",
            p.status.as_u16(),
            p.status.canonical_reason().unwrap_or("Error")
        ),
        message: &p.message,
    };
    // The error page has no fallible parts; if rendering still fails, say
    // the message plainly (escaped by hand, it came from a request).
    page.render().unwrap_or_else(|_| {
        p.message
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    })
}

pub(crate) async fn not_found(uri: axum::http::Uri) -> Response {
    let p = Problem::not_found(format!("there is no page at {}", uri.path()));
    if uri.path().starts_with("/api/") {
        crate::error::ApiError(p).into_response()
    } else {
        PageError(p).into_response()
    }
}

/// A short message at the top of the page, answering an action.
#[derive(Template)]
#[template(path = "flash.html")]
pub(crate) struct Flash {
    /// `ok` or `error`: the CSS variant.
    kind: &'static str,
    message: String,
    /// `(href, text)` to follow up, e.g. the run just started.
    link: Option<(String, String)>,
}

impl Flash {
    pub fn ok(message: impl Into<String>, link: Option<(String, String)>) -> Flash {
        Flash {
            kind: "ok",
            message: message.into(),
            link,
        }
    }
    fn error(message: impl Into<String>) -> Flash {
        Flash {
            kind: "error",
            message: message.into(),
            link: None,
        }
    }
}

pub(crate) fn is_htmx(h: &HeaderMap) -> bool {
    h.contains_key("hx-request")
}

/// What htmx should do after a successful action.
pub(crate) enum Then {
    /// Fire this event on the page (live parts listen for it).
    Trigger(&'static str),
    /// Navigate there.
    Go(String),
}

/// Answers a form action: a flash (htmx) or a redirect/error page (plain
/// form). `fallback` is where a plain form goes after success.
pub(crate) fn answer(h: &HeaderMap, result: Result<(Flash, Then), Problem>, fallback: String) -> Response {
    if !is_htmx(h) {
        return match result {
            Ok((_, Then::Go(to))) => see_other(&to),
            Ok(_) => see_other(&fallback),
            Err(p) => PageError(p).into_response(),
        };
    }
    let (status, flash, then) = match result {
        Ok((flash, then)) => (StatusCode::OK, flash, Some(then)),
        Err(p) => (p.status, Flash::error(p.message), None),
    };
    let html = flash.render().unwrap_or_default();
    let mut res = (status, Html(html)).into_response();
    let (name, value) = match then {
        Some(Then::Trigger(event)) => ("hx-trigger", event.to_string()),
        Some(Then::Go(to)) => ("hx-location", to),
        None => return res,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(name, v);
    }
    res
}

/// A 303 to `to` (never panics on a strange `to`, unlike `Redirect::to`).
fn see_other(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(v) => (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, v)]).into_response(),
        Err(_) => see_other("/"),
    }
}

/// Renders a template into a response, or a 500 page.
pub(crate) fn html(t: &impl Template) -> Result<Html<String>, PageError> {
    Ok(Html(t.render().map_err(Problem::from)?))
}

/// `/fragments/storage`: how much the record holds, for every page's
/// footer (htmx loads it once the page is shown): "about 1.0 M runs ·
/// 9.8 M executions · 312.4 MiB of logs". A few catalog reads, whatever
/// the size (`Store::storage_figures`).
pub(crate) async fn storage(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
) -> Result<Html<String>, PageError> {
    let f = state.store.storage_figures().await.map_err(Problem::from)?;
    let title = format!(
        "{}the database takes {} on disk",
        if f.estimated {
            "counts estimated from PostgreSQL's statistics; "
        } else {
            ""
        },
        crate::view::bytes(f.database_bytes)
    );
    Ok(Html(format!(
        r#"<span class="storage" title="{title}">{}</span>"#,
        storage_line(&f)
    )))
}

/// The figures in words; "about" when a count is an estimate.
fn storage_line(f: &scheduler_tracker::StorageFigures) -> String {
    format!(
        "{}{} runs · {} executions · {} of logs",
        if f.estimated { "about " } else { "" },
        count(f.runs),
        count(f.executions),
        crate::view::bytes(f.log_bytes)
    )
}

/// `987`, `9,876`, `98 k`, `9.8 M`.
fn count(n: i64) -> String {
    match n {
        n if n < 10_000 => {
            let d = n.to_string();
            match d.len() {
                4 => format!("{},{}", &d[..1], &d[1..]),
                _ => d,
            }
        }
        n if n < 1_000_000 => format!("{} k", (n as f64 / 1e3).round()),
        n => format!("{:.1} M", n as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scheduler_tracker::StorageFigures;

    #[test]
    fn storage_figures_read_as_words() {
        let f = StorageFigures {
            runs: 1_012_345,
            executions: 9_830_000,
            log_rows: 5_000_000,
            log_bytes: 312 * 1024 * 1024 + 400 * 1024,
            database_bytes: 1 << 33,
            estimated: true,
        };
        assert_eq!(
            storage_line(&f),
            "about 1.0 M runs · 9.8 M executions · 312.4 MiB of logs"
        );
        let small = StorageFigures {
            runs: 7,
            executions: 9_876,
            log_bytes: 0,
            ..StorageFigures::default()
        };
        assert_eq!(storage_line(&small), "7 runs · 9,876 executions · 0 B of logs");
        assert_eq!(count(98_400), "98 k");
    }
}
