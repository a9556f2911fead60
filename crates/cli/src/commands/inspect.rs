//! `scheduler runs` and `scheduler show`: read the record, print it as a
//! table or as JSON (`--json`, stable field names for scripts).

use crate::cli::Global;
use crate::{connect, output};
use anyhow::Context;
use scheduler_core::RunState;
use scheduler_tracker::RunFilter;
use std::process::ExitCode;
use uuid::Uuid;

pub async fn runs(
    g: &Global,
    limit: u32,
    sequence: Option<String>,
    schedule: Option<String>,
    state: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let state = state
        .map(|s| s.parse::<RunState>())
        .transpose()
        .map_err(|e| anyhow::anyhow!("--state: {e}"))?;
    if !(1..=1000).contains(&limit) {
        anyhow::bail!("--limit must be between 1 and 1000");
    }
    let store = connect::store(g, 1).await?;
    let runs = store
        .list_runs(&RunFilter {
            sequence,
            schedule,
            state,
            limit,
            ..RunFilter::default()
        })
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
    } else {
        print!("{}", output::runs_table(&runs));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show(g: &Global, run_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let id: Uuid = run_id
        .trim()
        .parse()
        .with_context(|| format!("{run_id:?} is not a run id (a UUID, as printed by `scheduler start`)"))?;
    let store = connect::store(g, 1).await?;
    let Some(detail) = store.run_detail(id).await? else {
        eprintln!("error: no run {id} is recorded; `scheduler runs` lists recent runs");
        return Ok(ExitCode::from(1));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&detail)?);
    } else {
        print!("{}", output::run_detail(&detail));
    }
    Ok(ExitCode::SUCCESS)
}
