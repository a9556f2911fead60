//! `scheduler`: the command line. Thin: parse arguments, set up logging,
//! dispatch to one file per command under `commands/`.

mod cli;
mod commands;
mod connect;
mod logging;
mod mode;
mod output;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let default_level = match cli.command {
        cli::Command::Bench(_)
        | cli::Command::BenchUi { .. }
        | cli::Command::BenchPrune { .. }
        | cli::Command::BenchFlood { .. } => "warn",
        _ => "info",
    };
    logging::init(&cli.global, default_level);
    // The keeper is single-threaded and blocks until its worker is gone.
    if let cli::Command::Keeper {
        worker_id,
        grace_ms,
        freeze_ms,
    } = &cli.command
    {
        let ms = std::time::Duration::from_millis;
        let stopped = scheduler_executor::keeper::keep(worker_id, ms(*grace_ms), ms(*freeze_ms));
        if stopped > 0 {
            tracing::warn!(
                worker_id,
                stopped,
                "keeper: the worker died; stopped its running modules"
            );
        }
        commands::keeper::report_death(&cli.global, worker_id);
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: what we were
            // doing, then why it failed.
            eprintln!("error: {e:#}");
            if let Some(hint) = storage_hint(&e) {
                eprintln!("{hint}");
            }
            std::process::ExitCode::from(exit_code(&e))
        }
    }
}

/// What to do when `e` came from the embedded store's file or disk (the
/// disk full), whatever the command was doing.
fn storage_hint(e: &anyhow::Error) -> Option<&'static str> {
    e.chain().find_map(|cause| {
        let sql = match cause.downcast_ref::<scheduler_tracker::TrackerError>() {
            Some(scheduler_tracker::TrackerError::Sql(s)) => s,
            _ => cause.downcast_ref::<sqlx::Error>()?,
        };
        scheduler_tracker::sqlite::explain_storage(sql)
    })
}

/// The exit code of a command that failed with `e`: 3 when PostgreSQL or
/// RabbitMQ could not be reached, or the store cannot be used (the
/// embedded file, its disk full, or a database of either kind migrated by
/// a newer version), 2 for everything else (usage, definitions).
fn exit_code(e: &anyhow::Error) -> u8 {
    if storage_hint(e).is_some() {
        return 3;
    }
    let unavailable = e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<scheduler_tracker::TrackerError>(),
            Some(
                scheduler_tracker::TrackerError::Connect { .. }
                    | scheduler_tracker::TrackerError::Embedded { .. }
                    | scheduler_tracker::TrackerError::NewerSchema { .. }
            )
        ) || matches!(
            cause.downcast_ref::<scheduler_broker::BrokerError>(),
            Some(scheduler_broker::BrokerError::Connect { .. })
        ) || matches!(
            cause.downcast_ref::<scheduler_tracker::TrackerError>(),
            Some(scheduler_tracker::TrackerError::Sql(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)
            ))
        ) || matches!(
            cause.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_))
        )
    });
    if unavailable { 3 } else { 2 }
}
