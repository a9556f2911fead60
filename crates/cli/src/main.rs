//! `scheduler`: the command line. Thin: parse arguments, set up logging,
//! dispatch to one file per command under `commands/`.

mod cli;
mod commands;
mod connect;
mod logging;
mod output;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    logging::init(&cli.global);
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
            std::process::ExitCode::from(2)
        }
    }
}
