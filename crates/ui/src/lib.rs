//! The monitoring web UI and JSON API: every run, step and worker as
//! PostgreSQL recorded it, live, with the operator's actions (start, retry,
//! cancel). Server-rendered askama templates compiled into the binary; live
//! updates over server-sent events that htmx turns into fragment reloads.
//!
//! # Layout
//! - [`serve`] / [`router`]: the entry points; [`AppState`] is what every
//!   handler shares.
//! - `pages/`: one file per HTML page (`runs`, `run`, `sequences`, `sequence`,
//!   `schedules`, `workers`, `alerts`), each with its loaders, its fragments and its form actions.
//! - `api`: the JSON API under `/api/v1`, over the same loaders.
//! - `openapi`: its OpenAPI 3.1 document, built from the same registrations
//!   as its router (`/api/v1/openapi.json`).
//! - `logs`: reading a module's recorded log (windows, gaps, the tail) for
//!   the API and the run page's log panels (`pages/log.rs`).
//! - `actions`: start, retry, cancel through the producer
//!   (`scheduler_producer`), its typed errors turned into 404/409/422/502/503;
//!   shared by the pages and the API.
//! - `params`: parsing query strings (filters, cursors, ids) at the edge.
//! - `view`: turning records into display rows (durations, relative times).
//! - `charts`: the geometry of the server-drawn SVG pictures (a run's
//!   timeline, a sequence's recent durations).
//! - `sse`: the `/events` streams that tell open pages to refresh.
//! - `auth`: the access token, and the cross-site check on every POST.
//! - `metrics`: `/metrics` in the Prometheus text format.
//! - `error`: one [`error::Problem`] type, answered as JSON or as a page.
//! - `assets`: the CSS and the vendored htmx, embedded with `include_bytes!`.
//!
//! Architecture invariants: the UI never runs a module and never decides a
//! state change itself: every action asks `scheduler_core::machine` and
//! applies its decision with the same compare-and-set writes the workers
//! use. It touches the broker only to publish what those decisions say (and
//! to read queue depths). It reads the record of truth in PostgreSQL, never
//! an in-memory event stream, so a restart loses nothing. Everything that
//! came from a module or a definition is HTML-escaped by askama. It holds no
//! SQL: reads and writes go through a `dyn Store`. Its dependency tree holds
//! neither the worker nor the executor (checked in `tests/deps.rs`), so it
//! cannot run a module even by mistake.

mod actions;
mod api;
mod assets;
mod auth;
mod charts;
mod error;
mod logs;
mod metrics;
mod openapi;
mod pages;
mod params;
mod sse;
mod view;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use scheduler_broker::Transport;
use scheduler_producer::Project;
use scheduler_tracker::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A worker is shown alive while its last heartbeat is younger than this
/// (three of the workers' 10 s heartbeats).
pub(crate) const ALIVE_WITHIN: Duration = Duration::from_secs(30);

/// How the UI is reached.
#[derive(Clone)]
pub struct UiConfig {
    /// Where it listens; anything but loopback requires `token`.
    pub bind: SocketAddr,
    /// Access token: when set, every request but `/healthz` and the assets
    /// must carry it (`Authorization: Bearer`, or the cookie `/login` sets).
    pub token: Option<String>,
    /// The queue runs started from the UI go to (retries and cancels use the
    /// run's own recorded queue).
    pub queue: String,
}

impl std::fmt::Debug for UiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UiConfig")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("queue", &self.queue)
            .finish()
    }
}

impl UiConfig {
    /// Refuses to expose the UI beyond this machine without a token.
    pub fn check(&self) -> anyhow::Result<()> {
        check_exposure(self.bind, self.token.as_deref())
    }
}

fn check_exposure(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    match token {
        Some(t) if t.trim().is_empty() => anyhow::bail!(
            "the UI access token is empty; pass a non-empty --token (or SCHEDULER_UI_TOKEN), or leave it unset on a loopback bind"
        ),
        None if !addr.ip().is_loopback() => anyhow::bail!(
            "refusing to serve the UI on {addr} without an access token: anyone who can reach that address could \
             start, retry and cancel runs. Bind to 127.0.0.1, or set --token (or SCHEDULER_UI_TOKEN)"
        ),
        _ => Ok(()),
    }
}

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

/// What [`AppState`] holds; opaque outside this crate.
pub struct Shared {
    pub(crate) store: Arc<dyn Store>,
    /// Publishing the actions' messages and reading queue depths only.
    pub(crate) transport: Arc<dyn Transport>,
    /// Where sequence definitions are read (start, the sequences page).
    pub(crate) project: Project,
    pub(crate) config: UiConfig,
    /// Ends the live streams, so a graceful shutdown does not wait on them.
    pub(crate) shutdown: CancellationToken,
    /// The shared poller behind `/events`.
    pub(crate) live: sse::Live,
    /// One permit per live log follower (`/runs/{id}/log/events`).
    pub(crate) log_followers: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        transport: Arc<dyn Transport>,
        project: Project,
        config: UiConfig,
        shutdown: CancellationToken,
    ) -> AppState {
        AppState {
            inner: Arc::new(Shared {
                store,
                transport,
                project,
                config,
                shutdown,
                live: sse::Live::default(),
                log_followers: Arc::new(tokio::sync::Semaphore::new(pages::log::MAX_FOLLOWERS)),
            }),
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.inner
    }
}

/// Serves the UI on `listener` until `shutdown` fires. Refuses a listener
/// reachable from other machines unless `config.token` is set.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    project: Project,
    config: UiConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.check()?;
    let local = listener.local_addr().context("reading the UI listener's address")?;
    // The listener is what is actually exposed, whatever `bind` says.
    check_exposure(local, config.token.as_deref())?;
    tracing::info!(addr = %local, auth = config.token.is_some(), "UI listening");
    let app = router(AppState::new(store, transport, project, config, shutdown.clone()));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("serving the UI")
}

/// Every route, with auth, the cross-site check and security headers.
pub fn router(state: AppState) -> Router {
    use pages::{log, run, runs, schedules, sequences, workers};
    Router::new()
        .route("/", get(runs::page))
        .route("/runs", post(runs::start))
        .route("/fragments/runs", get(runs::fragment))
        .route("/fragments/storage", get(pages::storage))
        .route("/events", get(sse::runs_events))
        .route("/runs/{id}", get(run::page))
        .route("/runs/{id}/body", get(run::fragment))
        .route("/runs/{id}/events", get(sse::run_events))
        .route("/runs/{id}/log", get(log::chunk))
        .route("/runs/{id}/log/events", get(log::events))
        .route("/runs/{id}/log/download", get(log::download))
        .route("/runs/{id}/retry", post(run::retry))
        .route("/runs/{id}/cancel", post(run::cancel))
        .route("/sequences", get(sequences::page))
        .route("/sequences/{name}", get(pages::sequence::page))
        .route("/sequences/{name}/start", post(sequences::start))
        .route("/schedules", get(schedules::page))
        .route("/schedules/{name}/pause", post(schedules::pause_form))
        .route("/schedules/{name}/resume", post(schedules::resume_form))
        .route("/workers", get(workers::page))
        .route("/alerts", get(pages::alerts::page))
        .merge(api::router())
        .route("/metrics", get(metrics::render))
        .route("/healthz", get(healthz))
        .route("/login", get(auth::login))
        .route("/assets/{file}", get(assets::serve))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::guard))
        .layer(axum::middleware::map_response(security_headers))
        .layer(
            // The path only: a query string may hold the access token (`/login`).
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
            }),
        )
        .with_state(state)
}

async fn healthz(axum::extract::State(state): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.store.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => error::ApiError::from(error::Problem::from(e)).into_response(),
    }
}

/// Pages load only their own scripts and styles, never render in a frame,
/// and never submit forms elsewhere.
async fn security_headers(mut res: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    res
}

#[cfg(test)]
mod tests {
    use super::check_exposure;

    #[test]
    fn only_loopback_may_go_without_a_token() {
        assert!(check_exposure("127.0.0.1:8080".parse().unwrap(), None).is_ok());
        assert!(check_exposure("[::1]:8080".parse().unwrap(), None).is_ok());
        let err = check_exposure("0.0.0.0:8080".parse().unwrap(), None).unwrap_err();
        assert!(err.to_string().contains("--token"), "{err}");
        assert!(check_exposure("0.0.0.0:8080".parse().unwrap(), Some("s3cret")).is_ok());
        assert!(check_exposure("127.0.0.1:8080".parse().unwrap(), Some(" ")).is_err());
    }
}
