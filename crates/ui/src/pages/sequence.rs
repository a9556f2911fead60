//! `/sequences/{name}`: one sequence over its last 50 runs: their durations
//! as a chart with failures marked (`charts::durations`), its success rate,
//! median and 95th percentile duration, each step's median duration (and
//! p95, peak memory, failures), the schedules of `schedules.json` that
//! start it (next fire times, recent slots, pause), and its definition as
//! it would run now, with the file as written. A sequence whose file is
//! gone still shows its recorded runs; a name with neither is a 404.

use super::html;
use crate::AppState;
use crate::charts::durations::{DurationChart, Stats};
use crate::error::{PageResult, Problem};
use crate::view::{self, RunRow};
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Html;
use chrono::{DateTime, Utc};
use scheduler_core::Sequence;
use scheduler_tracker::StepStats;

/// How many recent runs the page charts and counts.
const LAST_RUNS: u32 = 50;
/// Past this many steps, the slowest are listed first and the full table
/// and the definition fold away.
const MANY_STEPS: usize = 40;
const SLOWEST: usize = 15;
/// Fire times ahead and recorded slots shown per schedule.
const NEXT_FIRES: usize = 3;
const RECENT_SLOTS: i64 = 30;

#[derive(Template)]
#[template(path = "sequence.html")]
struct SequencePage {
    nav: &'static str,
    name: String,
    /// `etl_sequences/<name>.json` exists.
    defined: bool,
    /// Why the definition cannot run, in words that say what to fix.
    error: Option<String>,
    /// `queue heavy`, `max_concurrent 1 · on_conflict skip`.
    policy: Vec<String>,
    stats: Stats,
    /// The runs counted neither as successes nor as failures, by state
    /// ("1 running", "2 canceled").
    others: Vec<String>,
    /// "the last 50 runs", "its one run".
    runs_word: String,
    median: String,
    p95: String,
    last: Option<RunRow>,
    chart: Option<DurationChart>,
    /// Every step that ran in those runs, in order.
    steps: Vec<StepRow>,
    /// The slowest steps by median, when there are many.
    slowest: Vec<StepRow>,
    many_steps: bool,
    schedules: Vec<ScheduleLine>,
    /// schedules.json does not validate: why.
    schedules_error: Option<String>,
    definition: Vec<DefinitionStep>,
    /// The file as written, and its path in the project.
    source: String,
    file: String,
}

#[derive(Clone)]
struct StepRow {
    /// 1-based.
    number: i32,
    module: String,
    median: String,
    p95: String,
    peak: String,
    /// "2 failed · 1 retry", or empty.
    trouble: String,
    /// The median against the slowest step's (a bar's width).
    bar: String,
    median_ms: i64,
}

struct ScheduleLine {
    name: String,
    cron: String,
    cron_words: String,
    timezone: String,
    enabled: bool,
    paused: bool,
    /// Who paused it and why, while it is paused.
    pause_note: String,
    /// Local time in its timezone, and how far ahead.
    next: Vec<(String, String)>,
    /// Oldest first: `(fate, tooltip, run id)`.
    slots: Vec<(String, String, Option<String>)>,
}

struct DefinitionStep {
    module: String,
    cmd: String,
    io: String,
    chips: Vec<String>,
}

pub(crate) async fn page(State(state): State<AppState>, Path(name): Path<String>) -> PageResult<Html<String>> {
    let now = Utc::now();
    // A name that is not a sequence's (a path, a dot) never reaches the disk.
    if Sequence::check_name(&name).is_err() {
        return Err(no_sequence(&name).into());
    }
    let history = state.store.sequence_history(&name, LAST_RUNS).await?;
    let path = state.project.sequence_path(&name);
    let source = std::fs::read_to_string(&path).ok();
    if source.is_none() && history.runs.is_empty() {
        return Err(no_sequence(&name).into());
    }
    let (definition, policy, error) = definition(&state, &name, source.is_some());
    let (schedules, schedules_error) = schedules(&state, &name, now).await?;
    let stats = Stats::new(&history.runs);
    let steps = step_rows(&history.steps);
    let many_steps = steps.len() > MANY_STEPS;
    let mut slowest = if many_steps { steps.clone() } else { vec![] };
    slowest.sort_by_key(|s| std::cmp::Reverse(s.median_ms));
    slowest.truncate(SLOWEST);
    html(&SequencePage {
        nav: "sequences",
        others: others(&history.runs),
        runs_word: match stats.shown {
            1 => "its one run".into(),
            n => format!("the last {n} runs"),
        },
        median: stats.median_ms.map(view::duration).unwrap_or_default(),
        p95: stats.p95_ms.map(view::duration).unwrap_or_default(),
        last: history.runs.first().map(|r| RunRow::new(r, now)),
        chart: (!history.runs.is_empty()).then(|| DurationChart::new(&history.runs, stats.median_ms, now)),
        stats,
        steps,
        slowest,
        many_steps,
        schedules,
        schedules_error,
        definition,
        policy,
        error,
        defined: source.is_some(),
        source: source.unwrap_or_default(),
        file: format!("etl_sequences/{name}.json"),
        name,
    })
}

/// "1 running", "2 canceled": the runs neither succeeded nor failed.
fn others(runs: &[scheduler_tracker::RunSummary]) -> Vec<String> {
    let mut by_state: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in runs.iter().filter(|r| r.state != "succeeded" && r.state != "failed") {
        *by_state.entry(r.state.as_str()).or_default() += 1;
    }
    by_state.into_iter().map(|(state, n)| format!("{n} {state}")).collect()
}

fn no_sequence(name: &str) -> Problem {
    Problem::not_found(format!(
        "no sequence {name:?}: no etl_sequences/{name}.json and no run of it recorded; the sequences page lists them"
    ))
}

/// The steps as they would run now, the policy chips, or why it cannot run.
fn definition(state: &AppState, name: &str, defined: bool) -> (Vec<DefinitionStep>, Vec<String>, Option<String>) {
    if !defined {
        return (vec![], vec![], None);
    }
    let loaded = state
        .project
        .modules()
        .and_then(|m| state.project.sequence(name, &m).map(|s| (m, s)));
    let (modules, seq) = match loaded {
        Ok(ok) => ok,
        Err(e) => return (vec![], vec![], Some(e.to_string())),
    };
    let c = seq.concurrency();
    let policy = [
        seq.queue().map(|q| format!("queue {q}")),
        c.is_limited().then(|| view::concurrency(&c)).flatten(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let snapshot = seq.snapshot(&modules, &seq.run_queue(&state.config.queue));
    let steps = snapshot
        .steps
        .iter()
        .map(|s| DefinitionStep {
            module: s.module_name.clone(),
            cmd: view::shell_line(&s.cmd),
            io: [("in", &s.input), ("out", &s.output), ("conf", &s.conf)]
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(" · "),
            chips: [
                s.queue.as_ref().map(|q| format!("queue {q}")),
                s.timeout_secs.map(|t| format!("timeout {t} s")),
                (s.retry.retries > 0).then(|| format!("retries {}", s.retry.retries)),
                s.stall_secs.map(|t| format!("stall_secs {t}")),
            ]
            .into_iter()
            .flatten()
            .collect(),
        })
        .collect();
    (steps, policy, None)
}

fn step_rows(stats: &[StepStats]) -> Vec<StepRow> {
    let slowest = stats.iter().filter_map(|s| s.median_ms).max().unwrap_or(0).max(1);
    stats
        .iter()
        .map(|s| {
            let mut trouble = vec![];
            if s.failed > 0 {
                trouble.push(format!("{} failed", s.failed));
            }
            if s.retries > 0 {
                trouble.push(format!(
                    "{} {}",
                    s.retries,
                    if s.retries == 1 { "retry" } else { "retries" }
                ));
            }
            StepRow {
                number: s.step + 1,
                module: s.module.clone(),
                median: s.median_ms.map(view::duration).unwrap_or_else(|| "—".into()),
                p95: s.p95_ms.map(view::duration).unwrap_or_else(|| "—".into()),
                peak: s
                    .median_peak_rss_kib
                    .map(|k| view::bytes(k * 1024))
                    .unwrap_or_else(|| "—".into()),
                trouble: trouble.join(" · "),
                bar: crate::charts::pct(s.median_ms.unwrap_or(0) as f64 * 100.0 / slowest as f64),
                median_ms: s.median_ms.unwrap_or(0),
            }
        })
        .collect()
}

/// The schedules that start `name`, as the beat reads them, with where
/// each stands in the record.
async fn schedules(
    state: &AppState,
    name: &str,
    now: DateTime<Utc>,
) -> Result<(Vec<ScheduleLine>, Option<String>), Problem> {
    let defined = match scheduler_beat::load(&state.project) {
        Ok(d) => d,
        Err(e) => return Ok((vec![], Some(format!("{e:#}")))),
    };
    let mine: Vec<_> = defined.into_iter().filter(|s| s.sequence == name).collect();
    if mine.is_empty() {
        return Ok((vec![], None));
    }
    let states = state.store.schedule_states().await?;
    let mut lines = Vec::with_capacity(mine.len());
    for s in mine {
        let st = states.iter().find(|st| st.name == s.name);
        let slots = state.store.schedule_slots(&s.name, RECENT_SLOTS).await?;
        let tz = s.timezone;
        let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%a %Y-%m-%d %H:%M %Z").to_string();
        let next = if s.enabled {
            scheduler_schedule::next_fire_times(&s, now, NEXT_FIRES)
                .into_iter()
                .map(|t| (local(t), view::ago(t, now)))
                .collect()
        } else {
            vec![]
        };
        let paused = st.is_some_and(|st| st.paused);
        lines.push(ScheduleLine {
            pause_note: st
                .filter(|st| st.paused)
                .map(|st| {
                    let by = st.paused_by.clone().unwrap_or_default();
                    match st.paused_note.as_deref().filter(|n| !n.is_empty()) {
                        Some(note) => format!("paused by {by}: {note}"),
                        None => format!("paused by {by}"),
                    }
                })
                .unwrap_or_default(),
            slots: slots
                .iter()
                .rev()
                .map(|sl| {
                    let mut title = format!("{} · {}", local(sl.slot_at), sl.fate);
                    if let Some(n) = sl.note.as_deref().filter(|n| !n.is_empty()) {
                        title.push_str(" · ");
                        title.push_str(n);
                    }
                    (sl.fate.clone(), title, sl.run_id.map(|id| id.to_string()))
                })
                .collect(),
            cron_words: s.cron.describe(),
            timezone: tz.name().to_string(),
            name: s.name,
            cron: s.cron_text,
            enabled: s.enabled,
            paused,
            next,
        });
    }
    Ok((lines, None))
}
