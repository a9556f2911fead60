//! `scheduler validate`: every definition and every command, one line per
//! problem; exit 1 if there is any.

use crate::cli::Global;
use crate::connect;
use scheduler_producer::Project;
use std::process::ExitCode;

pub fn validate(g: &Global) -> anyhow::Result<ExitCode> {
    let project = connect::project(g)?;
    // Programs are checked below, each from its module's own directory.
    let (mut problems, sequences) = project.validate(|_, _| Ok::<(), std::convert::Infallible>(()));
    let (programs, warnings) = check_programs(&project);
    problems.splice(0..0, programs);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let schedules = match scheduler_beat::load(&project) {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("{e:#}"));
            vec![]
        }
    };
    let alerts = match scheduler_alerts::sender::load(project.dir()) {
        Ok(a) => a,
        Err(e) => {
            problems.push(e);
            Default::default()
        }
    };
    // The workers' environment may differ from this shell's: a warning.
    for target in &alerts.targets {
        for name in target.missing_env(|n| std::env::var_os(n).is_some_and(|v| !v.is_empty())) {
            eprintln!(
                "warning: alerts.json: target {:?}: the environment variable {name} is not set here; \
                 set it where the workers run",
                target.name
            );
        }
    }
    if problems.is_empty() {
        println!(
            "ok: modules.json, {sequences} sequence(s) and {} schedule(s) in {} are valid",
            schedules.len(),
            project.dir().display()
        );
        for t in &alerts.targets {
            let events: Vec<&str> = t.events.iter().map(|e| e.as_str()).collect();
            let every = t
                .max_frequency
                .map(|p| format!(", at most one per sequence and event every {} s", p.as_secs()))
                .unwrap_or_default();
            println!(
                "alert target {} ({}): {}{every}",
                t.name,
                t.kind_name(),
                events.join(", ")
            );
        }
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
    // A definition error, like a bad sequence given to `start`.
    Ok(ExitCode::from(2))
}

/// Whether each module's program exists and is executable, resolved the way
/// the worker will: from the module's `cwd` (relative to the project
/// directory) or the project directory. A `cwd` missing on this host is a
/// warning, not a problem: it may exist on the workers' hosts (an imported
/// crontab names the directories of the host it came from); a relative
/// program inside it cannot be checked then.
fn check_programs(project: &Project) -> (Vec<String>, Vec<String>) {
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    let Ok(modules) = project.modules() else {
        // `Project::validate` reported why.
        return (problems, warnings);
    };
    for (name, module) in modules.iter() {
        let dir = match &module.cwd {
            Some(cwd) => project.dir().join(cwd),
            None => project.dir().to_path_buf(),
        };
        let program = &module.cmd[0];
        if module.cwd.is_some() && !dir.is_dir() {
            warnings.push(format!(
                "modules.json: module {name:?}: its cwd {} does not exist here (or is not a directory); \
                 the module cannot start on a host without it",
                dir.display()
            ));
            if program.contains('/') && !program.starts_with('/') {
                continue;
            }
        }
        if let Err(e) = scheduler_executor::resolve_program(program, &dir) {
            problems.push(format!("modules.json: module {name:?}: {e}"));
        }
    }
    (problems, warnings)
}
