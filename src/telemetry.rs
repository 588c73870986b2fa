//! Logging and metrics: every log line and metric name lives here.

/// Sets up tracing: human-readable on a terminal, journald-friendly under systemd.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOYALTY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
