//! The daemon: wires configuration, storage and the edges together (not yet written).

use crate::config::Config;
use std::process::ExitCode;

/// Runs the daemon until SIGTERM.
pub fn run_daemon(_config: Config) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not written yet")
}
