//! Logging to stderr: `RUST_LOG` filters (default `info`), `--log-format
//! json` for log shippers.

use crate::cli::Global;
use tracing_subscriber::EnvFilter;

pub fn init(global: &Global) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if global.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
