//! `scheduler validate`: every definition and every command, one line per
//! problem; exit 1 if there is any.

use crate::cli::Global;
use crate::connect;
use std::process::ExitCode;

pub fn validate(g: &Global) -> anyhow::Result<ExitCode> {
    let project = connect::project(g)?;
    let (problems, sequences) =
        project.validate(|program, dir| scheduler_executor::resolve_program(program, dir).map(drop));
    if problems.is_empty() {
        println!(
            "ok: modules.json and {sequences} sequence(s) in {} are valid",
            project.dir().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        eprintln!("error: {p}");
    }
    eprintln!("{} problem(s) found", problems.len());
    Ok(ExitCode::from(1))
}
