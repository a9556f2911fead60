//! `scheduler health`: the worker's probe. Reads the report the worker
//! rewrites at every heartbeat (`scheduler worker --health-file`) and prints
//! the verdict (`scheduler_worker::health::verdict`): exit 0 if the worker
//! reached its database and its broker within the budget, 1 if not, or if
//! there is no report (not started yet, or stopped).

use scheduler_worker::health::{Report, unix, verdict};
use std::path::Path;
use std::process::ExitCode;

pub fn health(file: &Path, max_age: Option<u64>) -> anyhow::Result<ExitCode> {
    let report: Report = match std::fs::read(file) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                println!("unhealthy: {} is not a worker's health report: {e}", file.display());
                return Ok(ExitCode::from(1));
            }
        },
        Err(e) => {
            println!(
                "unhealthy: no health report at {} ({e}): the worker has not started yet, has stopped, \
                 or runs without --health-file",
                file.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let now = unix(std::time::SystemTime::now());
    match verdict(&report, now, max_age.map(|s| s as f64)) {
        Ok(line) => {
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Err(line) => {
            println!("{line}");
            Ok(ExitCode::from(1))
        }
    }
}
