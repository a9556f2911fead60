//! `/sequences`: every definition in the project directory, its steps and
//! the modules they run, its last runs, and a button to start it. A broken
//! definition is shown with its error instead of hiding the others.

use super::{Flash, Then, answer, html};
use crate::AppState;
use crate::error::{PageResult, Problem};
use crate::view::RunRow;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, Response};
use chrono::Utc;
use scheduler_core::{Concurrency, Sequence};
use scheduler_tracker::RunSummary;
use serde::Serialize;

/// How many recent runs each sequence shows.
const LAST_RUNS: u32 = 5;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct SequenceInfo {
    pub name: String,
    /// Empty when the definition does not load (see `error`).
    pub steps: Vec<StepInfo>,
    /// Why the definition cannot run, in words that say what to fix.
    pub error: Option<String>,
    /// The queue the sequence names for its runs (`None`: the queue of
    /// whoever starts it).
    pub queue: Option<String>,
    /// Its concurrency limit (`None`: runs are not limited).
    #[schema(value_type = Option<crate::openapi::ConcurrencySchema>)]
    pub concurrency: Option<Concurrency>,
    pub last_runs: Vec<RunSummary>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct StepInfo {
    pub module_name: String,
    pub input: String,
    pub output: String,
    pub conf: String,
    /// The module's command from modules.json.
    pub cmd: Vec<String>,
    pub timeout_secs: Option<u64>,
    pub queue: Option<String>,
}

/// The project's sequences (with `Err` when the project itself is unreadable).
pub(crate) async fn load(state: &AppState) -> Result<Vec<SequenceInfo>, Problem> {
    let names = state.project.sequence_names().map_err(|e| {
        Problem::internal(format!(
            "cannot list {}: {e}",
            state.project.dir().join("etl_sequences").display()
        ))
    })?;
    let modules = state.project.modules();
    let mut last = state.store.last_runs_by_sequence(&names, LAST_RUNS).await?;
    Ok(names
        .into_iter()
        .map(|name| {
            let runs: Vec<RunSummary> = last.extract_if(.., |r| r.sequence == name).collect();
            let (steps, error, policy) = match &modules {
                Err(e) => (vec![], Some(e.to_string()), (None, None)),
                Ok(modules) => match state.project.sequence(&name, modules) {
                    Err(e) => (vec![], Some(e.to_string()), (None, None)),
                    Ok(seq) => (
                        seq.snapshot(modules, &seq.run_queue(&state.config.queue))
                            .steps
                            .into_iter()
                            .map(|s| StepInfo {
                                module_name: s.module_name,
                                input: s.input,
                                output: s.output,
                                conf: s.conf,
                                cmd: s.cmd,
                                timeout_secs: s.timeout_secs,
                                queue: s.queue,
                            })
                            .collect(),
                        None,
                        policy(&seq),
                    ),
                },
            };
            SequenceInfo {
                name,
                steps,
                error,
                queue: policy.0,
                concurrency: policy.1,
                last_runs: runs,
            }
        })
        .collect())
}

/// The queue the sequence itself names and its concurrency limit, if any.
fn policy(seq: &Sequence) -> (Option<String>, Option<Concurrency>) {
    let queue = seq.queue().map(str::to_string);
    let c = seq.concurrency();
    (queue, c.is_limited().then_some(c))
}

#[derive(Template)]
#[template(path = "sequences.html")]
struct SequencesPage {
    nav: &'static str,
    dir: String,
    cards: Vec<Card>,
}

struct Card {
    name: String,
    error: Option<String>,
    /// `queue heavy`, `max_concurrent 1 · on_conflict skip`: what the
    /// sequence sets beyond its steps.
    policy: Vec<String>,
    steps: Vec<StepLine>,
    runs: Vec<RunRow>,
}

struct StepLine {
    module: String,
    cmd: String,
    io: String,
    timeout: String,
}

pub(crate) async fn page(State(state): State<AppState>) -> PageResult<Html<String>> {
    let now = Utc::now();
    let cards = load(&state)
        .await?
        .into_iter()
        .map(|s| Card {
            policy: [
                s.queue.as_ref().map(|q| format!("queue {q}")),
                s.concurrency.as_ref().and_then(crate::view::concurrency),
            ]
            .into_iter()
            .flatten()
            .collect(),
            runs: s.last_runs.iter().map(|r| RunRow::new(r, now)).collect(),
            steps: s
                .steps
                .iter()
                .map(|st| StepLine {
                    module: st.module_name.clone(),
                    cmd: crate::view::shell_line(&st.cmd),
                    io: [("in", &st.input), ("out", &st.output), ("conf", &st.conf)]
                        .iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join(" · "),
                    // Where it runs and for how long at most.
                    timeout: [
                        st.queue.as_ref().map(|q| format!("queue {q}")),
                        st.timeout_secs.map(|t| format!("timeout {t} s")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" · "),
                })
                .collect(),
            name: s.name,
            error: s.error,
        })
        .collect();
    html(&SequencesPage {
        nav: "sequences",
        dir: state.project.dir().display().to_string(),
        cards,
    })
}

/// Starts a run and takes the browser to it.
pub(crate) async fn start(State(state): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let result = crate::actions::start(&state, &name).await.map(|id| {
        let to = format!("/runs/{id}");
        (Flash::ok(format!("Started {name}."), None), Then::Go(to))
    });
    answer(&headers, result, "/sequences".into())
}
