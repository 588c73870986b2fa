//! `loyalty-gateway demo`: a whole simulated store on this machine (being written).

pub mod broker;

use std::process::ExitCode;

/// Demo options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds instead of waiting for Ctrl-C.
    #[arg(long)]
    pub duration_secs: Option<u64>,
}

/// Runs the demo.
pub fn main(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the demo is not written yet")
}
