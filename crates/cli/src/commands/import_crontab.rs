//! `scheduler import-crontab FILE [--write]`: the modules, one-step
//! sequences and schedules that replace a crontab (planned, purely, by
//! `scheduler_schedule::crontab`), printed as JSON to paste, or written into
//! the project without overwriting any name, followed by a report line for
//! each line of the crontab.
//!
//! Exit code: 0 when at least one line became a schedule (other lines may be
//! skipped: the report says which and why); 1 when none did (nothing is
//! written); 2 when the crontab cannot be read, or a project file it would
//! add to is not a JSON object.

use crate::cli::Global;
use crate::connect;
use anyhow::{Context, bail};
use scheduler_producer::Project;
use scheduler_schedule::crontab::{self, Plan, Zone};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn import_crontab(g: &Global, file: &Path, write: bool, timezone: Option<String>) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading the crontab {}", file.display()))?;
    let zone = zone(timezone)?;
    let project = connect::project(g)?;
    let taken = taken_names(&project)?;
    let plan = crontab::plan(&text, &zone, |name| taken.contains(name));
    if plan.jobs.is_empty() {
        print_report(&plan);
        eprintln!(
            "error: nothing to import from {}: no line became a schedule (the report above says why)",
            file.display()
        );
        return Ok(ExitCode::from(1));
    }
    if write {
        write_plan(&project, &plan)?;
        print_report(&plan);
        println!("\nnext: `scheduler validate`, then `scheduler beat` (or `scheduler worker --beat`) fires them");
    } else {
        print_plan(&plan);
        print_report(&plan);
        println!(
            "\nnothing was written; `scheduler import-crontab {} --write` adds these to {}",
            file.display(),
            project.dir().display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The zone cron ran the jobs in: `--timezone`, else the host's, else UTC.
fn zone(flag: Option<String>) -> anyhow::Result<Zone> {
    let valid = |name: &str| name.parse::<chrono_tz::Tz>().is_ok();
    if let Some(name) = flag {
        if !valid(&name) {
            bail!("--timezone {name:?} is not an IANA time zone name such as Europe/Madrid or UTC");
        }
        return Ok(Zone {
            name,
            source: "from --timezone".into(),
        });
    }
    if let Ok(text) = std::fs::read_to_string("/etc/timezone")
        && valid(text.trim())
    {
        return Ok(Zone {
            name: text.trim().into(),
            source: "the host's zone (/etc/timezone)".into(),
        });
    }
    if let Ok(target) = std::fs::read_link("/etc/localtime")
        && let Some((_, name)) = target.to_string_lossy().split_once("zoneinfo/")
        && valid(name)
    {
        return Ok(Zone {
            name: name.into(),
            source: "the host's zone (/etc/localtime)".into(),
        });
    }
    Ok(Zone {
        name: "UTC".into(),
        source: "as neither /etc/timezone nor /etc/localtime names the host's zone".into(),
    })
}

/// Every name a module, a sequence or a schedule of the project has.
fn taken_names(project: &Project) -> anyhow::Result<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for file in ["modules.json", "schedules.json"] {
        if let Some(text) = read_if_there(&project.dir().join(file))? {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
                .with_context(|| format!("{file} is not a JSON object; fix it before importing"))?;
            names.extend(object.into_iter().map(|(name, _)| name));
        }
    }
    match project.sequence_names() {
        Ok(sequences) => names.extend(sequences),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("listing etl_sequences/"),
    }
    Ok(names)
}

fn read_if_there(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn print_plan(plan: &Plan) {
    println!("# modules.json: entries to add\n{}", plan.modules_json());
    for job in &plan.jobs {
        println!("# etl_sequences/{}.json\n{}", job.name, job.sequence_json());
    }
    println!("# schedules.json: entries to add\n{}", plan.schedules_json());
}

fn print_report(plan: &Plan) {
    println!("# report");
    for line in &plan.report {
        println!("{line}");
    }
}

/// Writes the plan: modules first, then sequences, then schedules, so that
/// whatever stops it midway leaves no schedule without its sequence and no
/// sequence without its module. Existing entries stay as they were.
fn write_plan(project: &Project, plan: &Plan) -> anyhow::Result<()> {
    let dir = project.dir();
    let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
    add_entries(&dir.join("modules.json"), &plan.module_entries())?;
    println!("wrote modules.json: added {}", names.join(", "));
    std::fs::create_dir_all(dir.join("etl_sequences")).context("creating etl_sequences/")?;
    for job in &plan.jobs {
        let path = project.sequence_path(&job.name);
        let mut file = std::fs::File::create_new(&path)
            .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
        std::io::Write::write_all(&mut file, job.sequence_json().as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote etl_sequences/{}.json", job.name);
    }
    add_entries(&dir.join("schedules.json"), &plan.schedule_entries())?;
    println!("wrote schedules.json: added {}", names.join(", "));
    Ok(())
}

/// Appends `entries` to the JSON object in `path` (created if missing),
/// replacing the file at once (a temporary file renamed over it).
fn add_entries(path: &Path, entries: &[(String, String)]) -> anyhow::Result<()> {
    let text = read_if_there(path)?.unwrap_or_else(|| "{}".into());
    let merged = crontab::append_entries(&text, entries).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary: PathBuf = path.with_file_name(format!(".{name}.import-crontab"));
    std::fs::write(&temporary, merged).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))
}
