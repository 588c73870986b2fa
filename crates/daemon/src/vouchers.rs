//! The voucher shell: the store's signing key file ([`keyfile`]), voucher settings built from the
//! configuration ([`settings`]), and the `keys` / `voucher` subcommands ([`cli`]). The pure
//! format, checks and issuing rules are `loyalty_core::voucher`.

mod cli;
pub mod keyfile;
pub mod settings;

pub use settings::{RedeemOn, VoucherSettings, VoucherSettingsExt};

use std::process::ExitCode;

/// `loyalty-gateway keys ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Write a new store signing key pair: the private key file (mode 0600) and `PATH.pub`.
    Generate {
        /// Private key file to write (mode 0600); refused if it exists.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Print the public key of an existing private key file (for `rewards.trusted_keys`).
    Public {
        /// Private key file.
        #[arg(long)]
        key: std::path::PathBuf,
    },
}

/// `loyalty-gateway voucher ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum VoucherCommand {
    /// Issue a staff goodwill voucher (at most `rewards.goodwill_max_value`), recorded in the
    /// store's database and announced to the CRM like any other.
    Goodwill {
        /// Configuration file.
        #[arg(long, default_value = "/etc/loyalty-gateway/gateway.toml")]
        config: std::path::PathBuf,
        /// Value, e.g. 5.00.
        #[arg(long)]
        value: String,
        /// Bind it to this customer id.
        #[arg(long)]
        customer: Option<String>,
        /// Days it stays valid (default `rewards.goodwill_validity_days`).
        #[arg(long)]
        days: Option<u32>,
        /// Write the voucher as a PNG image here.
        #[arg(long)]
        png: Option<std::path::PathBuf>,
        /// Write ESC/POS bytes (to send to a receipt printer) here.
        #[arg(long)]
        escpos: Option<std::path::PathBuf>,
    },
    /// Decode a voucher text and show what it contains (no signature check against the store).
    Show {
        /// The voucher text (`LGV1:...`).
        text: String,
    },
}

/// Runs `keys`.
pub fn keys_main(command: KeysCommand) -> anyhow::Result<ExitCode> {
    cli::keys_main(command)
}

/// Runs `voucher`.
pub fn voucher_main(command: VoucherCommand) -> anyhow::Result<ExitCode> {
    cli::voucher_main(command)
}
