//! Logs: `tracing` to standard error, filtered by `RUST_LOG` (default
//! `info`). Standard error, so that `tidings token` can print its token
//! alone on standard output.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber; later calls do nothing (tests build many apps).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let _ = fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
