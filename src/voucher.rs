//! QR reward vouchers: format, signing, verification (not yet written).

use std::process::ExitCode;

/// `loyalty-gateway keys ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Write a new store signing key pair.
    Generate {
        /// Private key file to write (mode 0600).
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// `loyalty-gateway voucher ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum VoucherCommand {
    /// Issue a staff goodwill voucher.
    Goodwill {
        /// Configuration file.
        #[arg(long, default_value = "/etc/loyalty-gateway/gateway.toml")]
        config: std::path::PathBuf,
        /// Value, e.g. 5.00.
        #[arg(long)]
        value: String,
    },
}

/// Runs `keys`.
pub fn keys_main(_command: KeysCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not written yet")
}

/// Runs `voucher`.
pub fn voucher_main(_command: VoucherCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not written yet")
}
