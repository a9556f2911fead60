//! `/alerts`: the targets of alerts.json (what each wants, how often at
//! most, where it goes, without its secrets) and the recent deliveries with
//! their outcome; `/api/v1/alerts/deliveries` gives the deliveries as JSON.

use super::html;
use crate::AppState;
use crate::error::{ApiResult, PageResult, Problem};
use crate::view::{self, Stamp};
use askama::Template;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::Html;
use chrono::Utc;
use scheduler_alerts::config::{TargetKind, UrlSource};
use scheduler_alerts::{AlertsConfig, Target};
use scheduler_tracker::DeliveryView;
use serde::{Deserialize, Serialize};

/// Deliveries the page lists.
const PAGE_DELIVERIES: i64 = 100;

/// alerts.json as read now: its targets, or why it cannot be read.
pub(crate) fn load_config(state: &AppState) -> (AlertsConfig, Option<String>) {
    match scheduler_alerts::sender::load(state.project.dir()) {
        Ok(config) => (config, None),
        Err(e) => (AlertsConfig::default(), Some(e)),
    }
}

/// Where a target sends, without anything secret: a webhook's scheme and
/// host (its path may carry a token), or the variable naming its URL; an
/// email's recipients and server.
fn destination(target: &Target) -> String {
    match &target.kind {
        TargetKind::Webhook(w) => match &w.url {
            UrlSource::Literal(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
                let host = rest.split(['/', '?', '#']).next().unwrap_or("");
                let host = host.rsplit('@').next().unwrap_or(host);
                format!(
                    "POST {scheme}://{host}/…{}",
                    if w.secret_env.is_some() { ", signed" } else { "" }
                )
            }
            UrlSource::Env(name) => format!("POST the URL in ${name}"),
        },
        TargetKind::Email(e) => format!("{} via {}:{}", e.to.join(", "), e.host, e.port),
    }
}

struct TargetRow {
    name: String,
    kind: &'static str,
    events: String,
    limit: String,
    destination: String,
}

struct DeliveryRow {
    when: Stamp,
    target: String,
    kind: String,
    subject: String,
    state: String,
    badge: &'static str,
    attempts: i32,
    answer: String,
    run: Option<(String, String)>,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    nav: &'static str,
    error: Option<String>,
    targets: Vec<TargetRow>,
    deliveries: Vec<DeliveryRow>,
}

fn badge(state: &str) -> &'static str {
    match state {
        "sent" => "s-succeeded",
        "failed" => "s-failed",
        "held" => "s-waiting",
        "folded" => "s-skipped",
        _ => "s-pending",
    }
}

pub(crate) async fn page(State(state): State<AppState>) -> PageResult<Html<String>> {
    let now = Utc::now();
    let (config, error) = load_config(&state);
    let targets = config
        .targets
        .iter()
        .map(|t| TargetRow {
            name: t.name.clone(),
            kind: t.kind_name(),
            events: t
                .events
                .iter()
                .map(|e| e.as_str())
                .chain(t.on_recovery.then_some("+ run_recovered"))
                .collect::<Vec<_>>()
                .join(", "),
            limit: t
                .max_frequency
                .map(|p| format!("one per sequence and event every {} s", p.as_secs()))
                .unwrap_or_else(|| "every event".into()),
            destination: destination(t),
        })
        .collect();
    let deliveries = state
        .store
        .recent_deliveries(PAGE_DELIVERIES)
        .await?
        .into_iter()
        .map(|d| {
            let answer = match (d.last_status, &d.last_error) {
                (Some(s), Some(e)) => format!("{s} {e}"),
                (Some(s), None) => s.to_string(),
                (None, Some(e)) => e.clone(),
                (None, None) if d.folded > 0 => format!("and {} more counted into it", d.folded),
                (None, None) => String::new(),
            };
            DeliveryRow {
                when: Stamp::new(d.created_at, now),
                badge: badge(&d.state),
                run: d.run_id.map(|r| (r.to_string(), view::short_id(&r))),
                target: d.target,
                kind: d.kind,
                subject: d.subject,
                state: d.state,
                attempts: d.attempts,
                answer,
            }
        })
        .collect();
    html(&AlertsPage {
        nav: "alerts",
        error,
        targets,
        deliveries,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    /// How many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Deliveries {
    /// Newest first.
    deliveries: Vec<DeliveryView>,
}

/// The recent alert deliveries, newest first (`GET /api/v1/alerts/deliveries?limit=`).
#[utoipa::path(
    get,
    path = "/alerts/deliveries",
    tag = "alerts",
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "The recent deliveries: `state` is `pending`, `sent`, `failed`, `held` (by the target's max_frequency) or `folded` (counted into a later alert).", body = Deliveries),
        (status = 400, description = "A limit out of range.", body = crate::openapi::ErrorBody),
        (status = 503, description = "PostgreSQL is unavailable.", body = crate::openapi::ErrorBody),
    )
)]
pub(crate) async fn api_deliveries(
    State(state): State<AppState>,
    q: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Deliveries>> {
    let Query(q) = q.map_err(|e| Problem::bad_request(format!("unreadable query string: {e}")))?;
    let limit = q.limit.unwrap_or(PAGE_DELIVERIES);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request("limit is 1..=1000").into());
    }
    Ok(Json(Deliveries {
        deliveries: state.store.recent_deliveries(limit).await?,
    }))
}
