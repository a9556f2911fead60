//! `/`: every run, newest first, filtered and paginated by keyset; its table
//! is also `/fragments/runs`, which the page re-fetches when `/events` says
//! the runs changed. `POST /runs` starts a run from the page's form.

use super::{Flash, Then, answer, html};
use crate::AppState;
use crate::error::{PageResult, Problem};
use crate::params::{self, RunsQuery};
use crate::view::RunRow;
use askama::Template;
use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, Response};
use chrono::Utc;
use scheduler_core::RunState;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    nav: &'static str,
    q: RunsQuery,
    sequences: Vec<String>,
    /// `(state, selected)` for the state filter.
    states: Vec<(&'static str, bool)>,
    table: RunsTable,
}

#[derive(Template)]
#[template(path = "runs_table.html")]
pub(crate) struct RunsTable {
    rows: Vec<RunRow>,
    /// This filter as a query string (no cursor): the live fragment's URL.
    query: String,
    /// The page's own query string, cursor included.
    this_query: String,
    /// Query string of the next (older) page, if there may be one.
    older: Option<String>,
    /// Whether this is not the first page (offer "newest").
    paged: bool,
    filtered: bool,
}

pub(crate) async fn page(
    State(state): State<AppState>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> PageResult<Html<String>> {
    let q = query(q)?;
    let table = table(&state, &q).await?;
    let sequences = state.project.sequence_names().unwrap_or_default();
    let states = RunState::ALL
        .iter()
        .map(|s| (s.as_str(), q.state.as_deref() == Some(s.as_str())))
        .collect();
    html(&RunsPage {
        nav: "runs",
        q,
        sequences,
        states,
        table,
    })
}

pub(crate) async fn fragment(
    State(state): State<AppState>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> PageResult<Html<String>> {
    let q = query(q)?;
    html(&table(&state, &q).await?)
}

fn query(q: Result<Query<RunsQuery>, QueryRejection>) -> Result<RunsQuery, Problem> {
    q.map(|Query(q)| q)
        .map_err(|e| Problem::bad_request(format!("unreadable query string: {e}")))
}

async fn table(state: &AppState, q: &RunsQuery) -> Result<RunsTable, Problem> {
    let filter = q.parse()?;
    let runs = state.store.list_runs(&filter).await?;
    let now = Utc::now();
    let older = (runs.len() as u32 == filter.limit)
        .then(|| runs.last().map(|r| q.with_before(Some(&params::cursor(r)))))
        .flatten();
    Ok(RunsTable {
        rows: runs.iter().map(|r| RunRow::new(r, now)).collect(),
        query: q.with_before(None),
        this_query: q.with_before(q.before.as_deref()),
        older,
        paged: filter.before.is_some(),
        filtered: filter.sequence.is_some()
            || filter.schedule.is_some()
            || filter.state.is_some()
            || filter.since.is_some()
            || filter.until.is_some(),
    })
}

#[derive(Deserialize)]
pub(crate) struct StartForm {
    sequence: String,
}

/// The runs page's "start" form: the new run shows up in the live table.
pub(crate) async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<StartForm>, FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        let p = Problem::bad_request("send the form field `sequence`: the name of the sequence to start");
        return answer(&headers, Err(p), "/".into());
    };
    let result = crate::actions::start(&state, f.sequence.trim()).await.map(|id| {
        let flash = Flash::ok(
            format!("Started {}:", f.sequence.trim()),
            Some((format!("/runs/{id}"), format!("run {}", crate::view::short_id(&id)))),
        );
        (flash, Then::Trigger("runs-changed"))
    });
    answer(&headers, result, "/".into())
}
