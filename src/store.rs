//! Storage in sled (not yet written).

use crate::config::Config;
use std::process::ExitCode;

/// `loyalty-gateway verify`: replays the ledger and checks balances and the hash chain.
pub fn verify_command(_config: Config) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not written yet")
}
