//! Logs: `tracing` to standard error, filtered by `RUST_LOG` (default
//! `info`), as text or JSON lines. Standard error, so that `tidings token`
//! can print its token alone on standard output.

use tracing_subscriber::{EnvFilter, fmt};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people at a terminal.
    Text,
    /// One JSON object a line, for log pipelines.
    Json,
}

/// Installs the global subscriber; later calls do nothing (tests build many apps).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init(),
    };
}
