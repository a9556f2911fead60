//! Logging to stderr: `RUST_LOG` filters (default `info`; `warn` for the
//! benchmarks, whose thousands of run lines would bury the figures), `--log-format
//! json` for log shippers. Colors only on a terminal: a log file or a
//! journal gets plain text.

use crate::cli::Global;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init(global: &Global, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    if global.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
