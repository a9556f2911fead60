//! One file per command; `dispatch` picks it.

mod actions;
pub mod alerts;
mod backfill;
pub mod beat;
pub mod bench;
mod bench_flood;
mod completions;
mod health;
mod import_crontab;
mod inspect;
pub mod keeper;
mod logs;
pub mod prune;
mod schedules;
mod start;
mod ui;
mod validate;
mod worker;

use crate::cli::{Cli, Command};
use std::process::ExitCode;

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Start {
            sequence,
            trigger,
            logical_date,
        } => start::start(&g, &sequence, trigger, logical_date).await,
        Command::Worker(args) => worker::worker(&g, &args).await,
        Command::Backfill { schedule, from, to } => backfill::backfill(&g, &schedule, &from, &to).await,
        Command::Schedules { action, json } => schedules::schedules(&g, action, json).await,
        Command::ImportCrontab { file, write, timezone } => import_crontab::import_crontab(&g, &file, write, timezone),
        Command::Beat {
            tick_ms,
            on_time_secs,
            late_after_secs,
        } => beat::beat(&g, (tick_ms, on_time_secs, late_after_secs)).await,
        Command::Run {
            sequence,
            worker,
            wait_timeout,
        } => worker::run(&g, &sequence, &worker, wait_timeout).await,
        Command::Runs {
            limit,
            sequence,
            schedule,
            state,
            json,
        } => inspect::runs(&g, limit, sequence, schedule, state, json).await,
        Command::Show { run_id, json } => inspect::show(&g, &run_id, json).await,
        Command::Logs {
            run_id,
            step,
            attempt,
            follow,
            stream,
        } => {
            let args = logs::LogsArgs {
                run_id,
                step,
                attempt,
                follow,
                stream,
            };
            logs::logs(&g, args).await
        }
        Command::Prune(args) => prune::prune(&g, &args).await,
        Command::Health { file, max_age } => health::health(&file, max_age),
        Command::Completions { shell } => completions::completions(shell),
        Command::Man => completions::man(),
        Command::Retry { run_id, json } => actions::act(&g, actions::Action::Retry, &run_id, json).await,
        Command::Cancel { run_id, json } => actions::act(&g, actions::Action::Cancel, &run_id, json).await,
        Command::Alerts(args) => alerts::alerts(&g, &args).await,
        Command::Validate => validate::validate(&g),
        Command::Migrate => {
            crate::connect::store(&g, 1).await?;
            println!("database is up to date");
            Ok(ExitCode::SUCCESS)
        }
        Command::Ui { bind, token } => ui::ui(&g, bind, token).await,
        Command::Bench(args) => bench::bench(&g, &args).await,
        // `main` runs the keeper before any runtime starts; never here.
        Command::Keeper { .. } => anyhow::bail!("the keeper cannot run inside the async runtime"),
        Command::BenchPrune {
            runs,
            steps_per_run,
            baseline_secs,
            bench_database_url,
        } => {
            let args = scheduler_bench::prune::BenchPruneArgs {
                runs,
                steps_per_run,
                baseline: std::time::Duration::from_secs(baseline_secs),
                database_url: bench_database_url,
                amqp_url: g
                    .amqp_url
                    .clone()
                    .unwrap_or_else(|| crate::mode::DEFAULT_AMQP_URL.into()),
                program: std::env::current_exe()
                    .map_err(|e| anyhow::anyhow!("finding this program's path, to run its worker and prune: {e}"))?,
            };
            scheduler_bench::prune::bench(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchFlood {
            reps,
            bytes,
            bench_database_url,
        } => bench_flood::bench_flood(&g, reps, bytes, bench_database_url).await,
        Command::BenchUi {
            runs,
            steps_per_run,
            samples,
            bench_database_url,
        } => {
            let args = scheduler_bench::ui::BenchUiArgs {
                runs,
                steps_per_run,
                samples,
                database_url: bench_database_url,
                amqp_url: g
                    .amqp_url
                    .clone()
                    .unwrap_or_else(|| crate::mode::DEFAULT_AMQP_URL.into()),
            };
            scheduler_bench::ui::bench(args).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
