//! The JSON API under `/api/v1`, over the same loaders and actions as the
//! pages. Each handler carries its `#[utoipa::path]` and is registered with
//! `routes!` in [`routes`], once for the router and the OpenAPI document
//! (`openapi`, served at `/api/v1/openapi.json`); a route added any other
//! way fails `tests/openapi.rs`. Shapes:
//!
//! - `GET  /runs?sequence=&schedule=&state=&since=&until=&before=&limit=` →
//!   `{"runs": [RunSummary], "next": "<cursor>" | null}`; pass `next` back as
//!   `before` for the next (older) page. `limit` is 1..=200 (default 50).
//!   A `RunSummary`'s `state` is one of `waiting` (for a slot of its
//!   sequence's `max_concurrent`), `queued`, `running`, `succeeded`,
//!   `failed`, `canceled`, `skipped` (turned away by that policy); `note`
//!   says why it waits, was skipped or was canceled by a newer run;
//!   `waiting_on` names the queue its next step waits on while no live
//!   worker serves it.
//! - `GET  /runs/{id}` → `RunSummary` fields + `snapshot` + `executions`
//!   (each with the `queue` it was sent to).
//! - `POST /runs/{id}/retry`, `POST /runs/{id}/cancel` → `{"id", "state"}`
//!   (a `waiting` run can be canceled too).
//! - `GET  /runs/{id}/log?step=&attempt=&from=&to=&stream=&limit=` → one
//!   execution's module output, resumable: `{"run_id", "step", "attempt",
//!   "from", "next", "complete", "log_bytes", "log_omitted", "pieces",
//!   "omitted_after"}`. `step` counts from 0 (required), `attempt` from 1
//!   (default: the step's latest); `from` is a byte offset in the
//!   execution's whole output (both streams, default 0), `to` an offset to
//!   stop before; `stream` is `stdout` or `stderr` (default both; the other
//!   stream's bytes are skipped, never counted as omitted); `limit` caps the
//!   pieces (1..=1000, default 200; an answer also stops after about 1 MiB).
//!   A piece is `{"pos", "stream", "at", "text", "omitted_before"}`: a
//!   stretch of one stream as read, `text` its bytes as UTF-8 (invalid
//!   sequences replaced), `omitted_before` the bytes left out by the cap (or
//!   lost while the database was away) between the previous piece (or
//!   `from`) and it; `omitted_after` those between the last piece and
//!   `next`. Pass `next` back as `from` to resume: fewer pieces than `limit`
//!   is no sign of the end, `complete` is (the log's total, `log_bytes`, is
//!   recorded once the module ended, and `next` reached it). A running
//!   step's log has `complete: false`; poll it, about every 200 ms at most.
//!   404 for an unknown run or execution.
//! - `GET  /sequences` → `[{"name", "steps", "error", "queue", "concurrency",
//!   "last_runs"}]`; `queue` is the one the sequence names (`null`: the
//!   starter's), `concurrency` `{"max_concurrent", "on_conflict"}` or `null`.
//! - `POST /sequences/{name}/start` → `{"id"}` (201).
//! - `GET  /schedules` → `{"file", "exists", "error", "schedules":
//!   [{"name", "sequence", "cron", "cron_words", "timezone", "catchup",
//!   "catchup_window_secs", "enabled", "jitter_secs", "description",
//!   "next_fire_times", "paused", "state", "recent_slots"}]}`: the schedules
//!   of `schedules.json` (`error` says why the file does not validate, and
//!   `schedules` is then empty; `exists` is false without a file).
//!   `next_fire_times` are the next five (RFC 3339 in the schedule's
//!   timezone; none while disabled); `state` is the record's
//!   (`{"paused", "paused_by", "paused_note", "paused_at", "first_seen",
//!   "last_slot", "last_fate", "last_run"}`, `null` until a scheduler or an
//!   operator saw it); `recent_slots` the last 30 slots, newest first
//!   (`{"slot_at", "fate", "run_id", "note", "recorded_at", ...}`; a fate is
//!   `started`, `skipped`, `coalesced`, `missed`, `paused` or `backfilled`).
//! - `POST /schedules/{name}/pause` (optional `note`, as JSON
//!   `{"note": "..."}` or a form field) and `POST /schedules/{name}/resume`
//!   → `{"name", "paused"}`. Recorded as paused by `ui`; its slots are
//!   recorded as `paused` until it is resumed. 404 for a schedule
//!   schedules.json does not define, 409 when it is paused already (or
//!   not paused), 422 while schedules.json does not validate.
//! - `GET  /workers` → `[WorkerView + {"alive", "heartbeat_age_secs"}]`.
//! - `GET  /queues` → `[{"name", "messages", "consumers", "error",
//!   "waiting_steps", "waiting_runs", "served_by", "no_worker"}]`: the UI's
//!   queue, every live worker's and every queue work waits on, each followed
//!   by its `.dead` queue. `messages`/`consumers` are RabbitMQ's (`null`
//!   with `error` when it cannot say); `waiting_steps` (due steps) and
//!   `waiting_runs` (runs not started) are the record's; `served_by` the
//!   hosts of the live workers serving it; `no_worker` is true when work
//!   waits on it and nobody serves it (it waits until a worker for it
//!   starts). A `.dead` queue has 0, `[]` and `false` there.
//!
//! - `GET  /storage` → `{"runs", "executions", "log_rows", "log_bytes",
//!   "database_bytes", "estimated"}`: how much the record holds. Counts are
//!   PostgreSQL's estimates (`estimated: true`) past 100,000 rows a table,
//!   exact below; `log_bytes` is what the logs take on disk (table, TOAST,
//!   index), `database_bytes` the whole database. Cheap at any size.
//! - `GET  /alerts/deliveries?limit=` → `{"deliveries": [{"event_id",
//!   "target", "kind", "subject", "state", "attempts", "folded",
//!   "created_at", "sent_at", "next_at", "last_status", "last_error",
//!   "run_id", "message"}]}`, newest first; `state` is `pending`, `sent`,
//!   `failed`, `held` (by the target's max_frequency) or `folded` (counted
//!   into a later alert). `limit` is 1..=1000 (default 100).
//!
//! - `GET  /openapi.json` → this API's OpenAPI 3.1 document.
//!
//! Every error is `{"error": "<what to fix>"}` with a 4xx for bad input (400
//! malformed, 404 unknown, 409 not possible in the run's state) and a 5xx
//! only when PostgreSQL or RabbitMQ is unavailable. POSTs need the
//! cross-site proof described in `auth` (e.g. `X-Requested-By: script`).

use crate::AppState;
use crate::error::{ApiResult, Problem};
use crate::openapi::{ErrorBody, PREFIX};
use crate::pages::{schedules, sequences, workers};
use crate::params::{self, RunsQuery};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use scheduler_tracker::{RunDetail, RunSummary};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// Every route of the API under [`PREFIX`], each registered once for both
/// the router and the OpenAPI document: add a route here with `routes!`,
/// never with `.route(...)`, which would serve it undocumented.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(runs))
        .routes(routes!(run))
        .routes(routes!(retry))
        .routes(routes!(cancel))
        .routes(routes!(run_log))
        .routes(routes!(list_sequences))
        .routes(routes!(start))
        .routes(routes!(list_schedules))
        .routes(routes!(pause_schedule))
        .routes(routes!(resume_schedule))
        .routes(routes!(list_workers))
        .routes(routes!(queues))
        .routes(routes!(storage))
        .routes(routes!(crate::pages::alerts::api_deliveries))
        .routes(routes!(crate::openapi::openapi_json));
    let mut api = OpenApiRouter::with_openapi(<crate::openapi::ApiDoc as utoipa::OpenApi>::openapi()).nest(PREFIX, v1);
    crate::openapi::add_guard_answers(api.get_openapi_mut());
    api
}

/// The API's routes, mounted at [`PREFIX`].
pub(crate) fn router() -> axum::Router<AppState> {
    routes().into()
}

#[derive(Serialize, ToSchema)]
pub(crate) struct RunsPage {
    /// Newest first.
    runs: Vec<RunSummary>,
    /// Cursor of the next (older) page, to pass as `before`; `null` on the
    /// last page.
    next: Option<String>,
}

/// What a retry or a cancel left the run in.
#[derive(Serialize, ToSchema)]
pub(crate) struct RunMoved {
    id: Uuid,
    /// The run's state after the action.
    state: String,
}

/// A run started.
#[derive(Serialize, ToSchema)]
pub(crate) struct Started {
    /// The new run's id.
    id: Uuid,
}

/// A schedule paused or resumed.
#[derive(Serialize, ToSchema)]
pub(crate) struct Paused {
    name: String,
    paused: bool,
}

/// The runs, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/runs",
    tag = "runs",
    params(RunsQuery),
    responses(
        (status = 200, description = "A page of runs.", body = RunsPage),
        (status = 400, description = "A filter that does not parse.", body = ErrorBody),
        (status = 503, description = "PostgreSQL is unavailable.", body = ErrorBody),
    )
)]
async fn runs(State(state): State<AppState>, q: Result<Query<RunsQuery>, QueryRejection>) -> ApiResult<Json<RunsPage>> {
    let Query(q) = q.map_err(|e| Problem::bad_request(format!("unreadable query string: {e}")))?;
    let filter = q.parse()?;
    let runs = state.store.list_runs(&filter).await?;
    let next = (runs.len() as u32 == filter.limit)
        .then(|| runs.last().map(params::cursor))
        .flatten();
    Ok(Json(RunsPage { runs, next }))
}

/// One run, with every attempt of every step and the definitions frozen
/// when it was recorded.
#[utoipa::path(
    get,
    path = "/runs/{id}",
    tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id.")),
    responses(
        (status = 200, description = "The run.", body = RunDetail),
        (status = 400, description = "Not a run id.", body = ErrorBody),
        (status = 404, description = "No such run.", body = ErrorBody),
        (status = 503, description = "PostgreSQL is unavailable.", body = ErrorBody),
    )
)]
async fn run(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RunDetail>> {
    let run_id = params::run_id(&id)?;
    let detail = state
        .store
        .run_detail(run_id)
        .await?
        .ok_or_else(|| Problem::no_run(run_id))?;
    Ok(Json(detail))
}

/// Retries a failed run from its failed step (earlier steps are not run
/// again).
#[utoipa::path(
    post,
    path = "/runs/{id}/retry",
    tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id.")),
    responses(
        (status = 200, description = "The run after the action.", body = RunMoved),
        (status = 400, description = "Not a run id.", body = ErrorBody),
        (status = 404, description = "No such run.", body = ErrorBody),
        (status = 409, description = "Not possible in the run's state.", body = ErrorBody),
        (status = 502, description = "RabbitMQ did not take the message.", body = ErrorBody),
        (status = 503, description = "PostgreSQL or RabbitMQ is unavailable.", body = ErrorBody),
    )
)]
async fn retry(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RunMoved>> {
    let run_id = params::run_id(&id)?;
    crate::actions::retry(&state, run_id).await?;
    after_action(&state, run_id).await
}

/// Cancels a waiting, queued or running run (a running module is stopped at
/// its worker's next heartbeat).
#[utoipa::path(
    post,
    path = "/runs/{id}/cancel",
    tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id.")),
    responses(
        (status = 200, description = "The run after the action.", body = RunMoved),
        (status = 400, description = "Not a run id.", body = ErrorBody),
        (status = 404, description = "No such run.", body = ErrorBody),
        (status = 409, description = "Not possible in the run's state.", body = ErrorBody),
        (status = 502, description = "RabbitMQ did not take the message.", body = ErrorBody),
        (status = 503, description = "PostgreSQL or RabbitMQ is unavailable.", body = ErrorBody),
    )
)]
async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<RunMoved>> {
    let run_id = params::run_id(&id)?;
    crate::actions::cancel(&state, run_id).await?;
    after_action(&state, run_id).await
}

/// Pieces per answer when the request names no `limit`.
const LOG_PIECES: usize = 200;

/// One execution's module output, resumable: pass `next` back as `from`
/// until `complete`.
#[utoipa::path(
    get,
    path = "/runs/{id}/log",
    tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id."), params::LogQuery),
    responses(
        (status = 200, description = "A window of the log.", body = crate::logs::LogPage),
        (status = 400, description = "A parameter that does not parse.", body = ErrorBody),
        (status = 404, description = "No such run or execution.", body = ErrorBody),
        (status = 503, description = "PostgreSQL is unavailable.", body = ErrorBody),
    )
)]
async fn run_log(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<params::LogQuery>, QueryRejection>,
) -> ApiResult<Json<crate::logs::LogPage>> {
    use crate::logs::{self, LogPage, Window};
    let run_id = params::run_id(&id)?;
    let Query(q) = q.map_err(|e| Problem::bad_request(format!("unreadable query string: {e}")))?;
    let p = q.parse()?;
    let (key, ls) = logs::target(&state, run_id, p.step, p.attempt).await?;
    let w = Window {
        from: p.from.unwrap_or(0),
        // Lines are the page's business.
        line_start: Some(true),
        to: p.to,
        stream: p.stream,
        max_pieces: p.limit.unwrap_or(LOG_PIECES),
        max_bytes: 1024 * 1024,
    };
    let chunk = logs::read(&*state.store, key, w, ls.log_bytes).await?;
    Ok(Json(LogPage::new(key, &ls, chunk)))
}

async fn after_action(state: &AppState, run_id: Uuid) -> ApiResult<Json<RunMoved>> {
    let run = state
        .store
        .run_view(run_id)
        .await?
        .ok_or_else(|| Problem::no_run(run_id))?;
    Ok(Json(RunMoved {
        id: run_id,
        state: run.state.to_string(),
    }))
}

/// The project's sequences, with their steps, policies and last runs.
#[utoipa::path(
    get,
    path = "/sequences",
    tag = "sequences",
    responses(
        (status = 200, description = "Every sequence of the project, by name.", body = Vec<sequences::SequenceInfo>),
        (status = 500, description = "The project directory cannot be read.", body = ErrorBody),
        (status = 503, description = "PostgreSQL is unavailable.", body = ErrorBody),
    )
)]
async fn list_sequences(State(state): State<AppState>) -> ApiResult<Json<Vec<sequences::SequenceInfo>>> {
    Ok(Json(sequences::load(&state).await?))
}

/// Starts a run of the sequence (it may wait for a slot, or be skipped, as
/// its `max_concurrent` says).
#[utoipa::path(
    post,
    path = "/sequences/{name}/start",
    tag = "sequences",
    params(("name" = String, Path, description = "The sequence's name.")),
    responses(
        (status = 201, description = "The run is recorded.", body = Started),
        (status = 400, description = "Not a sequence name.", body = ErrorBody),
        (status = 404, description = "No such sequence.", body = ErrorBody),
        (status = 422, description = "The definition does not validate.", body = ErrorBody),
        (status = 502, description = "RabbitMQ did not take the message.", body = ErrorBody),
        (status = 503, description = "PostgreSQL or RabbitMQ is unavailable.", body = ErrorBody),
    )
)]
async fn start(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<(StatusCode, Json<Started>)> {
    let id = crate::actions::start(&state, &name).await?;
    Ok((StatusCode::CREATED, Json(Started { id })))
}

/// The workers the record knows, alive or not.
#[utoipa::path(
    get,
    path = "/workers",
    tag = "workers",
    responses(
        (status = 200, description = "Every registered worker.", body = Vec<workers::WorkerInfo>),
        (status = 503, description = "PostgreSQL is unavailable.", body = ErrorBody),
    )
)]
async fn list_workers(State(state): State<AppState>) -> ApiResult<Json<Vec<workers::WorkerInfo>>> {
    Ok(Json(workers::load_workers(&state, Utc::now()).await?))
}

/// The queues that matter (the UI's, every live worker's, every queue work
/// waits on), each followed by its `.dead` queue.
#[utoipa::path(
    get,
    path = "/queues",
    tag = "workers",
    responses(
        (status = 200, description = "The queues, their depth and who serves them.", body = Vec<workers::QueueInfo>),
        (status = 503, description = "PostgreSQL is unavailable.", body = ErrorBody),
    )
)]
async fn queues(State(state): State<AppState>) -> ApiResult<Json<Vec<workers::QueueInfo>>> {
    let w = workers::load_workers(&state, Utc::now()).await?;
    Ok(Json(workers::load_queues(&state, &w).await?))
}

/// The schedules of schedules.json, what comes next and their recent slots.
#[utoipa::path(
    get,
    path = "/schedules",
    tag = "schedules",
    responses(
        (status = 200, description = "The schedules (empty, with `error`, when the file does not validate).", body = schedules::Schedules),
        (status = 503, description = "PostgreSQL is unavailable.", body = ErrorBody),
    )
)]
async fn list_schedules(State(state): State<AppState>) -> ApiResult<Json<schedules::Schedules>> {
    Ok(Json(schedules::load(&state, Utc::now()).await?))
}

/// The pause note from a JSON body, a form body, or none (an empty body).
async fn note_of(req: axum::extract::Request) -> Result<String, Problem> {
    use axum::extract::FromRequest;
    let json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    let form = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if json {
        let Json(body) = Json::<schedules::NoteForm>::from_request(req, &())
            .await
            .map_err(|e| Problem::bad_request(format!("unreadable JSON body, send {{\"note\": \"...\"}}: {e}")))?;
        return Ok(body.note);
    }
    if form {
        let axum::Form(body) = axum::Form::<schedules::NoteForm>::from_request(req, &())
            .await
            .map_err(|e| Problem::bad_request(format!("unreadable form body, send the field `note`: {e}")))?;
        return Ok(body.note);
    }
    let bytes = axum::body::Bytes::from_request(req, &())
        .await
        .map_err(|e| Problem::bad_request(format!("unreadable body: {e}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(String::new())
    } else {
        Err(Problem::bad_request(
            "send the note as JSON (Content-Type: application/json, {\"note\": \"...\"}) or as a form field `note`",
        ))
    }
}

/// Pauses a schedule: its slots are recorded as `paused` until it is
/// resumed. Recorded as paused by `ui`, with the optional note.
#[utoipa::path(
    post,
    path = "/schedules/{name}/pause",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name.")),
    request_body(
        description = "Optional: why it is paused. An empty body is no note.",
        content(
            (Option<schedules::NoteForm> = "application/json"),
            (Option<schedules::NoteForm> = "application/x-www-form-urlencoded"),
        )
    ),
    responses(
        (status = 200, description = "Paused.", body = Paused),
        (status = 400, description = "An unreadable body.", body = ErrorBody),
        (status = 404, description = "schedules.json does not define it.", body = ErrorBody),
        (status = 409, description = "Paused already (or, to resume, not paused).", body = ErrorBody),
        (status = 422, description = "schedules.json does not validate.", body = ErrorBody),
        (status = 503, description = "PostgreSQL is unavailable.", body = ErrorBody),
    )
)]
async fn pause_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: axum::extract::Request,
) -> ApiResult<Json<Paused>> {
    let note = note_of(req).await?;
    schedules::pause(&state, &name, &note).await?;
    Ok(Json(Paused { name, paused: true }))
}

/// Resumes a paused schedule.
#[utoipa::path(
    post,
    path = "/schedules/{name}/resume",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name.")),
    responses(
        (status = 200, description = "Resumed.", body = Paused),
        (status = 404, description = "schedules.json does not define it.", body = ErrorBody),
        (status = 409, description = "Paused already (or, to resume, not paused).", body = ErrorBody),
        (status = 422, description = "schedules.json does not validate.", body = ErrorBody),
        (status = 503, description = "PostgreSQL is unavailable.", body = ErrorBody),
    )
)]
async fn resume_schedule(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Paused>> {
    schedules::resume(&state, &name).await?;
    Ok(Json(Paused { name, paused: false }))
}

/// How much the record holds (estimates past 100,000 rows a table).
#[utoipa::path(
    get,
    path = "/storage",
    tag = "storage",
    responses(
        (status = 200, description = "The figures.", body = scheduler_tracker::StorageFigures),
        (status = 503, description = "PostgreSQL is unavailable.", body = ErrorBody),
    )
)]
async fn storage(State(state): State<AppState>) -> ApiResult<Json<scheduler_tracker::StorageFigures>> {
    Ok(Json(state.store.storage_figures().await?))
}
