//! `/runs/{id}`: one run as a timeline (a bar per execution on one time
//! axis: `charts::timeline`) and its steps, every attempt of each with its
//! worker, pid, times, exit, peak memory and CPU, the output it wrote (and
//! whether it changed since the previous successful run), warnings, a
//! stall, argv, output tail and log panel (the whole log, live while it
//! runs: `log.rs`); the snapshot it ran; retry and cancel. The body is also
//! `/runs/{id}/body`, re-fetched when `/runs/{id}/events` says the run
//! changed.

use super::{Flash, Then, answer, html};
use crate::AppState;
use crate::charts::timeline::Timeline;
use crate::error::{PageResult, Problem};
use crate::view::{self, Stamp};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, Response};
use chrono::{DateTime, Utc};
use scheduler_core::Snapshot;
use scheduler_tracker::{ExecutionView, RunDetail};
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    nav: &'static str,
    id: String,
    sequence: String,
    body: RunBody,
}

#[derive(Template)]
#[template(path = "run_body.html")]
pub(crate) struct RunBody {
    id: String,
    sequence: String,
    state: String,
    trigger: String,
    queue: String,
    created: Stamp,
    started: Stamp,
    finished: Stamp,
    duration: String,
    progress: String,
    /// The concurrency policy the run was admitted under, if limited.
    policy: Option<String>,
    /// "nightly · slot 2026-11-28 02:30:00 UTC" for a scheduled run.
    schedule: Option<String>,
    /// `(step number, full reason)` of a failed run.
    failure: Option<(i32, String)>,
    /// The module of the failed step, for the error banner.
    failed_module: String,
    /// Why it waits for a slot, was skipped, or was canceled by a newer run.
    note: Vec<view::NotePart>,
    /// `(step number, queue)`: its next step waits on a queue no live
    /// worker serves.
    waiting_on: Option<(i32, String)>,
    can_retry: bool,
    can_cancel: bool,
    /// Every execution on one time axis; `None` before the first is queued.
    timeline: Option<Timeline>,
    steps: Vec<StepView>,
    /// The snapshot, pretty-printed.
    snapshot: String,
}

/// One step of the sequence with every attempt of it.
struct StepView {
    /// 1-based, as people count.
    number: i32,
    module: String,
    /// The latest attempt's state, or `pending`.
    state: String,
    /// The latest attempt is marked stalled.
    stalled: bool,
    /// The step's arguments from the snapshot, for steps not run yet.
    planned_argv: String,
    /// The queue it runs on: the snapshot's, or where its last attempt went.
    queue: String,
    attempts: Vec<AttemptView>,
}

struct AttemptView {
    attempt: i32,
    state: String,
    /// A retry waiting for its delay: when it is due.
    due: Option<Stamp>,
    /// Retries of the step's failures this attempt is (0: none).
    retry: i32,
    /// The queue it was sent to.
    queue: String,
    worker: String,
    pid: String,
    started: Stamp,
    finished: Stamp,
    duration: String,
    /// The wall time to the microsecond, for the duration's tooltip.
    wall: String,
    /// Peak resident memory (`41.3 MiB`), empty before the kernel's
    /// accounting (the module ran to its end).
    peak_memory: String,
    /// User plus system CPU time, and the two apart for its tooltip.
    cpu: String,
    cpu_split: String,
    /// Since when it has written nothing, while the stall watch says so.
    stalled: Option<Stamp>,
    /// Its own worker gave it back unfinished (a shutdown past the drain
    /// bound, no free module slot in time): not a lost worker.
    given_back: bool,
    /// What did not fail the step but should be seen (a missing input).
    warnings: Vec<String>,
    /// Its declared local output as the module left it.
    output: Option<OutputView>,
    /// `exit 0`, `signal 9 (SIGKILL)`, or empty while running.
    exit: String,
    argv: String,
    error: Option<String>,
    stdout: String,
    stdout_note: String,
    stderr: String,
    stderr_note: String,
    /// Show the output unfolded (the attempt that failed the run).
    open: bool,
    /// Its whole log, once its module started.
    log: Option<LogView>,
}

/// A step's output file as its module left it (exit 0 only).
struct OutputView {
    path: String,
    size: String,
    modified: Stamp,
    /// The first 12 hex digits, and all of them for the tooltip.
    sha_short: String,
    sha: String,
    /// Whether it changed since the sequence's previous successful run,
    /// said plainly.
    change: String,
    /// `same`, `changed` or `new`: the CSS variant.
    kind: &'static str,
}

impl OutputView {
    fn new(e: &ExecutionView, now: DateTime<Utc>) -> Option<OutputView> {
        let path = e.output_path.clone()?;
        let (change, kind) = match (&e.output_sha256, &e.previous_output_sha256) {
            (Some(a), Some(b)) if a == b => ("unchanged since the previous successful run (same SHA-256)", "same"),
            (Some(_), Some(_)) => ("changed since the previous successful run", "changed"),
            (Some(_), None) => ("no previous successful run recorded it to compare with", "new"),
            (None, _) => ("too large to hash: its size and time are recorded", "new"),
        };
        let sha = e.output_sha256.clone().unwrap_or_default();
        Some(OutputView {
            path,
            size: e.output_bytes.map(view::bytes).unwrap_or_default(),
            modified: Stamp::opt(e.output_mtime, now),
            sha_short: sha.chars().take(12).collect(),
            sha,
            change: change.into(),
            kind,
        })
    }
}

/// An attempt's log panel. The page's script fills it from
/// `/runs/{id}/log` and follows `/runs/{id}/log/events` (`pages/log.rs`).
struct LogView {
    /// 0-based, as in URLs.
    step: i32,
    /// The panel's element id: htmx keeps the element (`hx-preserve`), and
    /// what it shows, across the live refreshes of the run's body.
    dom_id: String,
    /// The module runs: the panel opens and follows the log as it is written.
    live: bool,
    /// Open it at once: the attempt that failed the run.
    autoload: bool,
    /// "2.1 MiB, 40.0 KiB omitted by the cap" once the log is complete.
    size: String,
}

pub(crate) async fn page(State(state): State<AppState>, Path(id): Path<String>) -> PageResult<Html<String>> {
    let body = body(&state, &id).await?;
    html(&RunPage {
        nav: "runs",
        id: body.id.clone(),
        sequence: body.sequence.clone(),
        body,
    })
}

pub(crate) async fn fragment(State(state): State<AppState>, Path(id): Path<String>) -> PageResult<Html<String>> {
    html(&body(&state, &id).await?)
}

async fn body(state: &AppState, id: &str) -> Result<RunBody, Problem> {
    let run_id = crate::params::run_id(id)?;
    let detail = state
        .store
        .run_detail(run_id)
        .await?
        .ok_or_else(|| Problem::no_run(run_id))?;
    Ok(RunBody::new(detail, Utc::now()))
}

impl RunBody {
    fn new(d: RunDetail, now: DateTime<Utc>) -> RunBody {
        let r = &d.run;
        let snapshot: Option<Snapshot> = serde_json::from_value(d.snapshot.clone()).ok();
        let failure = r
            .failed_step
            .map(|s| (s + 1, r.error.clone().unwrap_or_else(|| "no reason recorded".into())));
        let row = view::RunRow::new(r, now);
        RunBody {
            id: r.id.to_string(),
            sequence: r.sequence.clone(),
            state: r.state.clone(),
            trigger: r.trigger.clone(),
            queue: r.queue.clone(),
            created: Stamp::new(r.created_at, now),
            started: Stamp::opt(r.started_at, now),
            finished: Stamp::opt(r.finished_at, now),
            duration: r.duration_ms.map(view::duration).unwrap_or_default(),
            progress: row.progress,
            policy: snapshot.as_ref().and_then(|s| view::concurrency(&s.concurrency)),
            schedule: r.schedule.as_ref().map(|name| match r.logical_date {
                Some(slot) => format!("{name} · slot {} UTC", slot.format("%Y-%m-%d %H:%M:%S")),
                None => name.clone(),
            }),
            note: row.note,
            waiting_on: row.waiting_on,
            can_retry: r.state == "failed" && r.failed_step.is_some(),
            can_cancel: matches!(r.state.as_str(), "waiting" | "queued" | "running"),
            timeline: (!d.executions.is_empty()).then(|| Timeline::new(&d, now)),
            steps: steps(&d, snapshot.as_ref(), now),
            snapshot: serde_json::to_string_pretty(&d.snapshot).unwrap_or_default(),
            failed_module: r
                .failed_step
                .and_then(|s| d.executions.iter().rev().find(|e| e.step == s))
                .map(|e| e.module.clone())
                .unwrap_or_default(),
            failure,
        }
    }
}

fn steps(d: &RunDetail, snapshot: Option<&Snapshot>, now: DateTime<Utc>) -> Vec<StepView> {
    let mut by_step: BTreeMap<i32, Vec<&ExecutionView>> = BTreeMap::new();
    for e in &d.executions {
        by_step.entry(e.step).or_default().push(e);
    }
    let count = d.run.step_count.max(by_step.keys().last().map_or(0, |s| s + 1));
    (0..count)
        .map(|i| {
            let planned = snapshot.and_then(|s| s.steps.get(i as usize));
            let execs = by_step.remove(&i).unwrap_or_default();
            let last = execs.last();
            StepView {
                number: i + 1,
                module: last
                    .map(|e| e.module.clone())
                    .or_else(|| planned.map(|p| p.module_name.clone()))
                    .unwrap_or_else(|| "?".into()),
                // A step with no attempt waits for its turn, or never runs
                // once the run has ended.
                state: match last {
                    Some(e) => e.state.clone(),
                    None if matches!(d.run.state.as_str(), "waiting" | "queued" | "running") => "pending".into(),
                    None => "skipped".into(),
                },
                stalled: last.is_some_and(|e| e.stalled_at.is_some()),
                planned_argv: planned.map(|p| view::shell_line(&p.argv)).unwrap_or_default(),
                // Runs recorded before routing have no step queue: the run's.
                queue: planned
                    .and_then(|p| p.queue.clone())
                    .or_else(|| last.map(|e| e.queue.clone()))
                    .unwrap_or_else(|| d.run.queue.clone()),
                attempts: execs
                    .iter()
                    .map(|e| {
                        attempt(
                            e,
                            d.run.failed_step == Some(i) && last.is_some_and(|l| l.attempt == e.attempt),
                            now,
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

fn attempt(e: &ExecutionView, open: bool, now: DateTime<Utc>) -> AttemptView {
    let exit = match (e.exit_code, e.signal) {
        (_, Some(sig)) => view::signal_name(sig),
        (Some(code), None) => format!("exit {code}"),
        (None, None) => String::new(),
    };
    let note = |kept: &Option<String>, total: Option<i64>| {
        let kept_len = kept.as_ref().map_or(0, |s| s.len() as i64);
        match total {
            Some(t) if t > kept_len => format!("last {} of {}", view::bytes(kept_len), view::bytes(t)),
            Some(t) => view::bytes(t),
            None => String::new(),
        }
    };
    AttemptView {
        attempt: e.attempt,
        state: e.state.clone(),
        due: e.due_at.filter(|_| e.state == "queued").map(|t| Stamp::new(t, now)),
        retry: e.retry,
        queue: e.queue.clone(),
        worker: e.worker_host.clone().unwrap_or_default(),
        pid: e.pid.map(|p| p.to_string()).unwrap_or_default(),
        started: Stamp::opt(e.started_at, now),
        finished: Stamp::opt(e.finished_at, now),
        duration: if e.started_at.is_some() {
            e.duration_ms.map(view::duration).unwrap_or_default()
        } else {
            String::new()
        },
        wall: e
            .wall_us
            .map(|us| format!("wall time {}.{:06} s", us / 1_000_000, us % 1_000_000))
            .unwrap_or_default(),
        peak_memory: e.peak_rss_kib.map(|k| view::bytes(k * 1024)).unwrap_or_default(),
        cpu: match (e.user_cpu_us, e.sys_cpu_us) {
            (Some(u), Some(s)) => view::duration((u + s) / 1000),
            _ => String::new(),
        },
        cpu_split: match (e.user_cpu_us, e.sys_cpu_us) {
            (Some(u), Some(s)) => format!(
                "user {} · system {} (the module and the children it waited for)",
                view::duration(u / 1000),
                view::duration(s / 1000)
            ),
            _ => String::new(),
        },
        stalled: e.stalled_at.map(|t| Stamp::new(t, now)),
        given_back: e.given_back,
        warnings: e.warnings.clone().unwrap_or_default(),
        output: OutputView::new(e, now),
        exit,
        argv: view::shell_line(&e.argv),
        error: e.error.clone(),
        stdout: e.stdout_tail.clone().unwrap_or_default(),
        stdout_note: note(&e.stdout_tail, e.stdout_bytes),
        stderr: e.stderr_tail.clone().unwrap_or_default(),
        stderr_note: note(&e.stderr_tail, e.stderr_bytes),
        open,
        log: e.started_at.map(|_| LogView {
            step: e.step,
            dom_id: format!("log-{}-{}", e.step, e.attempt),
            live: e.state == "running",
            autoload: open,
            size: match (e.log_bytes, e.log_omitted) {
                (Some(0), _) => "no output".into(),
                (Some(b), Some(o)) if o > 0 => format!("{}, {} omitted by the cap", view::bytes(b), view::bytes(o)),
                (Some(b), _) => view::bytes(b),
                (None, _) if e.state == "running" => "being written".into(),
                (None, _) => String::new(),
            },
        }),
    }
}

pub(crate) async fn retry(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    act(&state, &headers, &id, Action::Retry).await
}

pub(crate) async fn cancel(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    act(&state, &headers, &id, Action::Cancel).await
}

enum Action {
    Retry,
    Cancel,
}

async fn act(state: &AppState, headers: &HeaderMap, id: &str, action: Action) -> Response {
    let fallback = format!("/runs/{id}");
    let result = async {
        let run_id: Uuid = crate::params::run_id(id)?;
        let message = match action {
            Action::Retry => {
                crate::actions::retry(state, run_id).await?;
                "Retrying from the failed step: a new attempt is queued."
            }
            Action::Cancel => {
                crate::actions::cancel(state, run_id).await?;
                "Canceled. A step still running is stopped at its worker's next heartbeat."
            }
        };
        Ok::<_, Problem>((Flash::ok(message, None), Then::Trigger("run-changed")))
    }
    .await;
    answer(headers, result, fallback)
}
