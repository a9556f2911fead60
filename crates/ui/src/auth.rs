//! Who may use the UI, and from where a POST may come.
//!
//! - With an access token configured, every request but `/healthz`,
//!   `/login` and the static assets must carry it: `Authorization: Bearer
//!   <token>` (scripts) or the `scheduler_ui_token` cookie that
//!   `/login?token=<token>` sets (browsers). Compared in constant time.
//! - Every POST must prove it is not a cross-site request: a browser only
//!   sends `HX-Request` / `X-Requested-By` from this origin (a custom header
//!   needs a CORS preflight, which this server never grants), and marks its
//!   own requests `Sec-Fetch-Site: same-origin` or with a matching `Origin`.
//!   A bearer token is never attached by a browser on its own, so a request
//!   carrying one is not a forgery either.

use crate::AppState;
use crate::error::{ApiError, PageError, Problem};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

pub(crate) const COOKIE: &str = "scheduler_ui_token";

pub(crate) async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let api = path.starts_with("/api/") || path == "/metrics";
    let open = path == "/healthz" || path == "/login" || path.starts_with("/assets/");
    let refuse = |p: Problem| {
        if api {
            ApiError(p).into_response()
        } else {
            PageError(p).into_response()
        }
    };
    let bearer = bearer(req.headers());
    if let Some(token) = &state.config.token
        && !open
    {
        let presented = bearer.clone().or_else(|| cookie(req.headers(), COOKIE));
        if !presented.is_some_and(|p| same(&p, token)) {
            let mut res = refuse(Problem::new(
                StatusCode::UNAUTHORIZED,
                "this UI requires its access token: open /login?token=<token> once in the browser, \
                 or send `Authorization: Bearer <token>`",
            ));
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return res;
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD && !same_site(req.headers(), bearer.is_some()) {
        return refuse(Problem::new(
            StatusCode::FORBIDDEN,
            "refused a POST that may come from another site: send it from the UI's own pages, \
             or add the header `HX-Request: true` (or `X-Requested-By: <anything>`) when scripting",
        ));
    }
    next.run(req).await
}

/// Whether a state-changing request provably comes from this origin.
fn same_site(h: &HeaderMap, has_bearer: bool) -> bool {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    // A browser says outright when a request crosses sites.
    if matches!(get("sec-fetch-site"), Some("cross-site" | "same-site")) {
        return false;
    }
    if let Some(origin) = get("origin") {
        let host = get("host").unwrap_or("");
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        if origin == "null" || origin_host != host {
            return false;
        }
        return true;
    }
    has_bearer
        || get("hx-request").is_some()
        || get("x-requested-by").is_some()
        || get("sec-fetch-site") == Some("same-origin")
}

fn bearer(h: &HeaderMap) -> Option<String> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Constant time in the token's content (its length may leak, which says
/// nothing useful about it).
fn same(presented: &str, token: &str) -> bool {
    presented.as_bytes().ct_eq(token.as_bytes()).into()
}

#[derive(Deserialize)]
pub(crate) struct Login {
    token: Option<String>,
}

/// `/login?token=...`: checks the token and keeps it in an HttpOnly,
/// same-site cookie so the browser can browse the UI.
pub(crate) async fn login(State(state): State<AppState>, Query(q): Query<Login>) -> Response {
    let Some(token) = &state.config.token else {
        return Redirect::to("/").into_response();
    };
    match q.token {
        Some(t) if same(&t, token) => {
            let mut res = Redirect::to("/").into_response();
            let cookie = format!("{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age=2592000");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            res
        }
        _ => PageError(Problem::new(
            StatusCode::UNAUTHORIZED,
            "wrong or missing token: open /login?token=<the token the UI was started with>",
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_same_origin_posts_pass() {
        let host = ("host", "127.0.0.1:8080");
        for (pairs, bearer, ok) in [
            (vec![host], false, false),
            (vec![host, ("hx-request", "true")], false, true),
            (vec![host, ("x-requested-by", "script")], false, true),
            (vec![host], true, true),
            (vec![host, ("sec-fetch-site", "same-origin")], false, true),
            (
                vec![host, ("sec-fetch-site", "cross-site"), ("hx-request", "true")],
                false,
                false,
            ),
            (vec![host, ("origin", "http://127.0.0.1:8080")], false, true),
            (vec![host, ("origin", "http://evil.example")], false, false),
            (vec![host, ("origin", "null"), ("hx-request", "true")], false, false),
        ] {
            assert_eq!(same_site(&headers(&pairs), bearer), ok, "{pairs:?} bearer={bearer}");
        }
    }

    #[test]
    fn tokens_are_read_from_the_header_or_the_cookie() {
        let h = headers(&[
            ("authorization", "Bearer abc"),
            ("cookie", "a=1; scheduler_ui_token=xyz"),
        ]);
        assert_eq!(bearer(&h).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("xyz"));
        assert!(same("abc", "abc") && !same("abd", "abc") && !same("ab", "abc"));
    }
}
