//! The reference CRM receiver (not yet written).

use std::process::ExitCode;

/// Options of `loyalty-gateway reference-crm`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReferenceCrmArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
}

/// Runs the receiver.
pub fn main(_args: ReferenceCrmArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not written yet")
}
