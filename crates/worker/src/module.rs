//! One module run, as data: the process spec a claimed step becomes (its
//! argv, its `ETL_*` environment, its limits), and the recorded result and
//! state-machine outcome its ending becomes. No I/O here.

use crate::stall::Activity;
use crate::worker::{Ctx, StopReason};
use scheduler_core::ExecState;
use scheduler_core::machine::StepOutcome;
use scheduler_executor::keeper::WORKER_ENV;
use scheduler_executor::{Ending, Outcome, Spec};
use scheduler_tracker::{Claimed, ExecKey, ExecResult};
use std::sync::Arc;
use std::time::Duration;

/// The process spec of a claimed step: it runs in the module's `cwd`
/// (relative to the project directory, which is the default), where a
/// relative program path is also resolved, with the module's `env` added
/// and the `ETL_*` variables over it.
pub fn spec(ctx: &Ctx, key: ExecKey, claimed: &Claimed, activity: Option<Arc<Activity>>) -> Spec {
    let mut etl = vec![
        ("ETL_RUN_ID".into(), key.run_id.to_string()),
        ("ETL_SEQUENCE".into(), claimed.sequence.clone()),
        ("ETL_STEP".into(), key.step.to_string()),
        ("ETL_MODULE".into(), claimed.module.clone()),
        ("ETL_ATTEMPT".into(), key.attempt.to_string()),
        (WORKER_ENV.into(), ctx.worker_id.to_string()),
    ];
    if let Some(date) = &claimed.logical_date {
        etl.push(("ETL_LOGICAL_DATE".into(), date.clone()));
    }
    if let Some(schedule) = &claimed.schedule {
        etl.push(("ETL_SCHEDULE".into(), schedule.clone()));
    }
    // The module's own names are left out rather than overridden: the
    // executor also finds an escaped daemon by every pair of `env`, so each
    // name appears once, with the value the module really gets.
    let mut env: Vec<(String, String)> = claimed
        .env
        .iter()
        .filter(|(name, _)| !etl.iter().any(|(n, _)| n == name))
        .cloned()
        .collect();
    env.extend(etl);
    let cwd = cwd(ctx, claimed);
    Spec {
        argv: claimed.argv.clone(),
        cwd,
        env,
        timeout: claimed
            .timeout_secs
            .map(Duration::from_secs)
            .or(ctx.config.default_timeout),
        kill_grace: ctx.config.kill_grace,
        tail_bytes: ctx.config.tail_bytes,
        log_label: format!("run={} step={} module={}", key.run_id, key.step, claimed.module),
        log: ctx.logs.open(key, activity),
    }
}

/// Where the module runs: its `cwd` (relative to the project directory),
/// or the project directory.
pub fn cwd(ctx: &Ctx, claimed: &Claimed) -> std::path::PathBuf {
    match &claimed.cwd {
        // `join` keeps an absolute cwd as it is.
        Some(dir) => ctx.project.dir().join(dir),
        None => ctx.project.dir().to_path_buf(),
    }
}

/// A module that could not start at all (missing, not executable).
pub fn could_not_start(
    key: ExecKey,
    module: &str,
    error: &dyn std::fmt::Display,
    took: Duration,
) -> (ExecResult, StepOutcome) {
    let reason = format!("step {} ({module}) could not start: {error}", key.step + 1);
    let result = ExecResult {
        duration_ms: took.as_millis() as i64,
        error: Some(reason.clone()),
        ..ExecResult::new(ExecState::Failed)
    };
    (
        result,
        StepOutcome::Failed {
            reason,
            exit_code: None,
        },
    )
}

/// Turns the module's outcome into the recorded result and the state
/// machine's view of it.
pub fn judge(key: ExecKey, module: &str, o: &Outcome, stop: Option<StopReason>) -> (ExecResult, StepOutcome) {
    let (state, outcome) = match (&o.ending, stop) {
        (_, _) if o.succeeded() => (ExecState::Succeeded, StepOutcome::Succeeded),
        (Ending::Canceled, Some(StopReason::Stalled)) => (
            ExecState::Failed,
            StepOutcome::Failed {
                reason: format!(
                    "step {} ({}) stalled: it wrote nothing for its stall_secs and was stopped (on_stall: kill)",
                    key.step + 1,
                    module
                ),
                exit_code: None,
            },
        ),
        (Ending::Canceled, Some(StopReason::RunCanceled)) => (
            ExecState::Canceled,
            StepOutcome::Failed {
                reason: "run canceled".into(),
                exit_code: None,
            },
        ),
        // Shutdown past the drain bound, or the lease could not be renewed:
        // the module did not fail, it was stopped; hand the step back as its
        // next attempt (if recovery has not already: then this write does
        // not apply).
        (Ending::Canceled, _) => (ExecState::Abandoned, StepOutcome::Interrupted),
        _ => {
            let mut reason = format!("step {} ({}) failed: {}", key.step + 1, module, o.describe());
            if let Some(line) = o.stderr_tail.lines().rev().find(|l| !l.trim().is_empty()) {
                let line: String = line.chars().take(300).collect();
                reason.push_str(&format!(" — stderr: {line}"));
            }
            (
                ExecState::Failed,
                StepOutcome::Failed {
                    reason,
                    exit_code: o.exit_code,
                },
            )
        }
    };
    let mut error = match &outcome {
        StepOutcome::Failed { reason, .. } => Some(reason.clone()),
        StepOutcome::Interrupted => Some(match stop {
            Some(StopReason::LeaseLost) => {
                "the worker could not renew its lease (database unreachable); stopped and handed back as a new attempt"
            }
            _ => "worker shut down before the module finished; handed back as a new attempt",
        }
        .into()),
        StepOutcome::Succeeded => None,
    };
    if let Some(leftover) = &o.leftover {
        error = Some(match error {
            Some(e) => format!("{e}; {leftover}"),
            None => leftover.clone(),
        });
    }
    let result = ExecResult {
        state,
        duration_ms: o.duration.as_millis() as i64,
        exit_code: o.exit_code,
        signal: o.signal,
        error,
        stdout_tail: o.stdout_tail.clone(),
        stderr_tail: o.stderr_tail.clone(),
        stdout_bytes: o.stdout_bytes as i64,
        stderr_bytes: o.stderr_bytes as i64,
        wall_us: Some(o.duration.as_micros() as i64),
        peak_rss_kib: o.usage.and_then(|u| u.max_rss_kib).map(|k| k as i64),
        user_cpu_us: o.usage.map(|u| u.user_cpu.as_micros() as i64),
        sys_cpu_us: o.usage.map(|u| u.system_cpu.as_micros() as i64),
        ..ExecResult::new(state)
    };
    (result, outcome)
}

pub fn log_result(key: ExecKey, module: &str, r: &ExecResult) {
    let state = r.state.as_str();
    match &r.error {
        None => tracing::info!(
            step = key.step,
            module,
            state,
            duration_ms = r.duration_ms,
            "step finished"
        ),
        Some(error) => tracing::warn!(
            step = key.step,
            module,
            state,
            duration_ms = r.duration_ms,
            error,
            "step finished"
        ),
    }
}
