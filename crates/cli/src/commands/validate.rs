//! `scheduler validate`: every definition and every command, one line per
//! problem; exit 1 if there is any.

use crate::cli::Global;
use crate::connect;
use std::process::ExitCode;

pub fn validate(g: &Global) -> anyhow::Result<ExitCode> {
    let project = connect::project(g)?;
    let (mut problems, sequences) =
        project.validate(|program, dir| scheduler_executor::resolve_program(program, dir).map(drop));
    let schedules = match scheduler_beat::load(&project) {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("{e:#}"));
            vec![]
        }
    };
    if problems.is_empty() {
        println!(
            "ok: modules.json, {sequences} sequence(s) and {} schedule(s) in {} are valid",
            schedules.len(),
            project.dir().display()
        );
        let now = chrono::Utc::now();
        for s in &schedules {
            let next: Vec<String> = scheduler_schedule::next_fire_times(s, now, 3)
                .iter()
                .map(|t| t.with_timezone(&s.timezone).format("%Y-%m-%d %H:%M:%S %Z").to_string())
                .collect();
            println!(
                "schedule {}: {} {:?} ({}){}; next: {}",
                s.name,
                s.sequence,
                s.cron_text,
                s.timezone,
                if s.enabled { "" } else { ", disabled" },
                next.join(", ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        eprintln!("error: {p}");
    }
    eprintln!("{} problem(s) found", problems.len());
    Ok(ExitCode::from(1))
}
