//! `scheduler schedules`: every schedule of schedules.json with its state
//! in the record; `schedules pause NAME --note TEXT` and `schedules resume
//! NAME`.

use crate::cli::{Global, SchedulesAction};
use crate::connect;
use scheduler_producer::default_trigger;
use serde_json::json;
use std::fmt::Write;
use std::process::ExitCode;

pub async fn schedules(g: &Global, action: Option<SchedulesAction>, json: bool) -> anyhow::Result<ExitCode> {
    let project = connect::project(g)?;
    let defined = scheduler_beat::load(&project)?;
    let store = connect::store(g, 2).await?;
    match action {
        Some(SchedulesAction::Pause { name, note }) => {
            known(&defined, &name)?;
            let by = default_trigger("cli");
            match store.pause_schedule(&name, &by, &note).await? {
                true => println!(
                    "schedule {name} paused: its slots are recorded as paused until `scheduler schedules resume {name}`"
                ),
                false => println!("schedule {name} was already paused"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(SchedulesAction::Resume { name }) => {
            known(&defined, &name)?;
            match store.resume_schedule(&name).await? {
                true => println!("schedule {name} resumed: its next slot fires as usual"),
                false => println!("schedule {name} was not paused"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let states = store.schedule_states().await?;
    let now = chrono::Utc::now();
    let rows: Vec<serde_json::Value> = defined
        .iter()
        .map(|s| {
            let state = states.iter().find(|st| st.name == s.name);
            let next = scheduler_schedule::next_fire_times(s, now, 1).first().copied();
            json!({
                "name": s.name,
                "sequence": s.sequence,
                "cron": s.cron_text,
                "timezone": s.timezone.name(),
                "catchup": s.catchup.as_str(),
                "enabled": s.enabled,
                "description": s.description,
                "next_fire": next,
                "paused": state.is_some_and(|st| st.paused),
                "paused_by": state.and_then(|st| st.paused_by.clone()),
                "paused_note": state.and_then(|st| st.paused_note.clone()),
                "last_slot": state.and_then(|st| st.last_slot),
                "last_fate": state.and_then(|st| st.last_fate.clone()),
                "last_run": state.and_then(|st| st.last_run),
                "last_late": state.and_then(|st| st.last_late).unwrap_or(false),
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no schedules: write schedules.json beside modules.json (see README, Schedules)");
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<20} {:<16} {:<16} {:<25} {:<25} STATE",
        "SCHEDULE", "SEQUENCE", "CRON", "TIMEZONE", "NEXT", "LAST SLOT"
    );
    let time = |v: &serde_json::Value| {
        v.as_str()
            .map(|t| t.chars().take(19).collect::<String>().replace('T', " "))
    };
    for r in &rows {
        let last = match (time(&r["last_slot"]), r["last_fate"].as_str()) {
            (Some(t), Some(f)) if r["last_late"] == true => format!("{t} {f}, late"),
            (Some(t), Some(f)) => format!("{t} {f}"),
            _ => "-".into(),
        };
        let state = match (r["enabled"].as_bool(), r["paused"].as_bool()) {
            (Some(false), _) => "disabled".to_string(),
            (_, Some(true)) => format!(
                "paused by {} ({})",
                r["paused_by"].as_str().unwrap_or("?"),
                r["paused_note"].as_str().unwrap_or("")
            ),
            _ => "active".into(),
        };
        let _ = writeln!(
            out,
            "{:<20} {:<20} {:<16} {:<16} {:<25} {:<25} {state}",
            r["name"].as_str().unwrap_or_default(),
            r["sequence"].as_str().unwrap_or_default(),
            r["cron"].as_str().unwrap_or_default(),
            r["timezone"].as_str().unwrap_or_default(),
            time(&r["next_fire"])
                .map(|t| format!("{t} UTC"))
                .unwrap_or_else(|| "-".into()),
            last,
        );
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn known(defined: &[scheduler_schedule::Schedule], name: &str) -> anyhow::Result<()> {
    if defined.iter().any(|s| s.name == name) {
        return Ok(());
    }
    let names: Vec<&str> = defined.iter().map(|s| s.name.as_str()).collect();
    anyhow::bail!(
        "no schedule named {name:?} in schedules.json (known: {})",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )
}
