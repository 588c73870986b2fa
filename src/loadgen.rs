//! The load generator (not yet written).

use std::process::ExitCode;

/// Options of `loyalty-gateway loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// Number of simulated lanes.
    #[arg(long, default_value_t = 10)]
    pub lanes: usize,
}

/// Runs the load generator.
pub fn main(_args: LoadgenArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not written yet")
}
