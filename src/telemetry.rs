//! Logs with `tracing`: pretty locally, JSON in production. Request bodies
//! and ID numbers are never logged.

use tracing_subscriber::{fmt, EnvFilter};

use crate::configuration::TelemetrySettings;

/// Installs the global subscriber once; later calls (tests) are ignored.
pub fn init(settings: &TelemetrySettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if settings.format == "json" {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    } else {
        builder.pretty().try_init()
    };
}
