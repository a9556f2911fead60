//! `/schedules`: every schedule of `schedules.json` (its cron as written and
//! in words, timezone, catch-up policy, next fire times in its timezone),
//! where it stands in the record (paused by whom and why), its recent slots
//! as a strip of cells coloured by fate, and Pause / Resume. A file that
//! does not validate is shown with its error, as the beat would report it.

use super::{Flash, Then, answer, html};
use crate::AppState;
use crate::error::{PageResult, Problem};
use crate::view::{Stamp, ago};
use askama::Template;
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, Response};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use scheduler_schedule::Schedule;
use scheduler_tracker::{ScheduleState, SlotView};
use serde::{Deserialize, Serialize};

/// How many fire times ahead each schedule shows.
const NEXT_FIRES: usize = 5;
/// How many recorded slots each schedule shows.
const RECENT_SLOTS: i64 = 30;
/// The longest pause note kept.
const MAX_NOTE: usize = 500;
/// Who the record says paused a schedule from the UI or its API.
const BY: &str = "ui";

/// One schedule: its definition, what comes next and where it stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct ScheduleInfo {
    pub name: String,
    pub sequence: String,
    /// The cron expression as written.
    pub cron: String,
    /// The cron expression in words (croner's description).
    pub cron_words: String,
    pub timezone: String,
    pub catchup: &'static str,
    pub catchup_window_secs: u64,
    pub enabled: bool,
    pub jitter_secs: u64,
    pub description: String,
    /// The next fire times (RFC 3339, in the schedule's timezone); empty
    /// when the schedule is disabled.
    pub next_fire_times: Vec<String>,
    pub paused: bool,
    /// The record's state (`null` until a scheduler or an operator saw it).
    pub state: Option<ScheduleState>,
    /// The newest recorded slots, newest first.
    pub recent_slots: Vec<SlotView>,
    #[serde(skip)]
    next_utc: Vec<DateTime<Utc>>,
    #[serde(skip)]
    tz: Tz,
}

/// What the page and `GET /api/v1/schedules` show.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct Schedules {
    /// The file read.
    pub file: String,
    /// Whether it exists.
    pub exists: bool,
    /// Why it does not validate (the schedules are then empty).
    pub error: Option<String>,
    pub schedules: Vec<ScheduleInfo>,
}

fn path(state: &AppState) -> std::path::PathBuf {
    state.project.dir().join("schedules.json")
}

/// Reads and validates `schedules.json` as the beat does.
fn definitions(state: &AppState) -> Result<Vec<Schedule>, String> {
    scheduler_beat::load(&state.project).map_err(|e| format!("{e:#}"))
}

/// Every schedule with its state and recent slots.
pub(crate) async fn load(state: &AppState, now: DateTime<Utc>) -> Result<Schedules, Problem> {
    let file = path(state);
    let (defined, error) = match definitions(state) {
        Ok(d) => (d, None),
        Err(e) => (vec![], Some(e)),
    };
    let states = if defined.is_empty() {
        vec![]
    } else {
        state.store.schedule_states().await?
    };
    let mut schedules = Vec::with_capacity(defined.len());
    for s in defined {
        let recent_slots = state.store.schedule_slots(&s.name, RECENT_SLOTS).await?;
        let st = states.iter().find(|st| st.name == s.name).cloned();
        let next_utc = if s.enabled {
            scheduler_schedule::next_fire_times(&s, now, NEXT_FIRES)
        } else {
            vec![]
        };
        schedules.push(ScheduleInfo {
            cron_words: s.cron.describe(),
            timezone: s.timezone.name().to_string(),
            catchup: s.catchup.as_str(),
            catchup_window_secs: s.catchup_window_secs,
            enabled: s.enabled,
            jitter_secs: s.jitter_secs,
            next_fire_times: next_utc
                .iter()
                .map(|t| t.with_timezone(&s.timezone).to_rfc3339())
                .collect(),
            paused: st.as_ref().is_some_and(|st| st.paused),
            state: st,
            recent_slots,
            next_utc,
            tz: s.timezone,
            name: s.name,
            sequence: s.sequence,
            cron: s.cron_text,
            description: s.description,
        });
    }
    Ok(Schedules {
        exists: file.exists(),
        file: file.display().to_string(),
        error,
        schedules,
    })
}

/// The schedule named `name` must be defined (404 otherwise; 422 when the
/// file does not validate).
fn known(state: &AppState, name: &str) -> Result<(), Problem> {
    let defined = definitions(state).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("schedules.json does not validate, fix it first: {e}"),
        )
    })?;
    if defined.iter().any(|s| s.name == name) {
        Ok(())
    } else {
        Err(Problem::not_found(format!(
            "no schedule {name:?} in {}; the schedules page lists them",
            path(state).display()
        )))
    }
}

/// Pauses a defined schedule: its slots are recorded as `paused` until it
/// is resumed. 409 if it is paused already.
pub(crate) async fn pause(state: &AppState, name: &str, note: &str) -> Result<(), Problem> {
    known(state, name)?;
    let note = note.trim();
    if note.chars().count() > MAX_NOTE {
        return Err(Problem::bad_request(format!(
            "the note is too long: at most {MAX_NOTE} characters"
        )));
    }
    if state.store.pause_schedule(name, BY, note).await? {
        Ok(())
    } else {
        Err(Problem::conflict(format!("schedule {name} is paused already")))
    }
}

/// Resumes a paused schedule: its next slot fires as usual. 409 if it was
/// not paused.
pub(crate) async fn resume(state: &AppState, name: &str) -> Result<(), Problem> {
    known(state, name)?;
    if state.store.resume_schedule(name).await? {
        Ok(())
    } else {
        Err(Problem::conflict(format!("schedule {name} is not paused")))
    }
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    nav: &'static str,
    file: String,
    exists: bool,
    error: Option<String>,
    cards: Vec<Card>,
}

struct Card {
    name: String,
    sequence: String,
    cron: String,
    cron_words: String,
    timezone: String,
    catchup: String,
    enabled: bool,
    jitter_secs: u64,
    description: String,
    next: Vec<NextFire>,
    pause: Option<PauseLine>,
    /// Oldest first, left to right.
    slots: Vec<SlotCell>,
    /// How many slots the record holds in all (at most [`RECENT_SLOTS`]).
    slot_count: usize,
    last: Option<String>,
    /// The recent slots whose run had not started a while after they
    /// fired, said in words; `None` when there were none.
    late: Option<String>,
}

struct NextFire {
    local: String,
    relative: String,
    utc: String,
}

struct PauseLine {
    by: String,
    at: Stamp,
    note: String,
}

struct SlotCell {
    fate: String,
    /// The tooltip: slot time, fate, note.
    title: String,
    run: Option<String>,
    late: bool,
}

fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%a %Y-%m-%d %H:%M:%S %Z").to_string()
}

fn card(s: ScheduleInfo, now: DateTime<Utc>) -> Card {
    let tz = s.tz;
    let pause = s.state.as_ref().filter(|st| st.paused).map(|st| PauseLine {
        by: st.paused_by.clone().unwrap_or_default(),
        at: Stamp::opt(st.paused_at, now),
        note: st.paused_note.clone().unwrap_or_default(),
    });
    let last = s.recent_slots.first().map(|sl| {
        format!(
            "last slot {} ({}): {}",
            local(sl.slot_at, tz),
            ago(sl.slot_at, now),
            sl.fate
        )
    });
    let late_slots: Vec<&SlotView> = s.recent_slots.iter().filter(|sl| sl.late_at.is_some()).collect();
    let late = late_slots.first().map(|newest| {
        format!(
            "{} of the last {} slots late: their run had not started a while after the slot fired \
             (every worker busy or down?); the newest, {}, was flagged {}",
            late_slots.len(),
            s.recent_slots.len(),
            local(newest.slot_at, tz),
            newest.late_at.map(|t| ago(t, now)).unwrap_or_default()
        )
    });
    let slots = s
        .recent_slots
        .iter()
        .rev()
        .map(|sl| {
            let mut title = format!("{} · {}", local(sl.slot_at, tz), sl.fate);
            if let Some(note) = sl.note.as_deref().filter(|n| !n.is_empty()) {
                title.push_str(" · ");
                title.push_str(note);
            }
            if let Some(at) = sl.late_at {
                title.push_str(&format!(" · late: its run had not started at {}", local(at, tz)));
            }
            if sl.run_id.is_some() {
                title.push_str(" · open its run");
            }
            SlotCell {
                fate: sl.fate.clone(),
                title,
                run: sl.run_id.map(|id| id.to_string()),
                late: sl.late_at.is_some(),
            }
        })
        .collect();
    Card {
        next: s
            .next_utc
            .iter()
            .map(|t| NextFire {
                local: local(*t, tz),
                relative: ago(*t, now),
                utc: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            })
            .collect(),
        pause,
        slot_count: s.recent_slots.len(),
        slots,
        last,
        late,
        name: s.name,
        sequence: s.sequence,
        cron: s.cron,
        cron_words: s.cron_words,
        timezone: s.timezone,
        catchup: format!("{} (window {})", s.catchup, window(s.catchup_window_secs)),
        enabled: s.enabled,
        jitter_secs: s.jitter_secs,
        description: s.description,
    }
}

fn window(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

pub(crate) async fn page(State(state): State<AppState>) -> PageResult<Html<String>> {
    let now = Utc::now();
    let all = load(&state, now).await?;
    html(&SchedulesPage {
        nav: "schedules",
        file: all.file,
        exists: all.exists,
        error: all.error,
        cards: all.schedules.into_iter().map(|s| card(s, now)).collect(),
    })
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(crate) struct NoteForm {
    /// Why it is paused (at most 500 characters are kept).
    #[serde(default)]
    pub note: String,
}

/// The Pause form: records who (`ui`) and why (the note).
pub(crate) async fn pause_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    form: Result<Form<NoteForm>, FormRejection>,
) -> Response {
    let note = form.map(|Form(f)| f.note).unwrap_or_default();
    let result = pause(&state, &name, &note).await.map(|()| {
        (
            Flash::ok(format!("Paused {name}."), None),
            Then::Go("/schedules".into()),
        )
    });
    answer(&headers, result, "/schedules".into())
}

pub(crate) async fn resume_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let result = resume(&state, &name).await.map(|()| {
        (
            Flash::ok(format!("Resumed {name}."), None),
            Then::Go("/schedules".into()),
        )
    });
    answer(&headers, result, "/schedules".into())
}
