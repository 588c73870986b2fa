//! The `keys` and `voucher` subcommands (shell side of `voucher`): key generation, showing a
//! voucher, staff goodwill vouchers.

use super::{keyfile, KeysCommand, VoucherCommand};
use crate::config::Built;
use crate::vouchers::VoucherSettingsExt;
use anyhow::Context;
use jiff::Timestamp;
use loyalty_core::money::Money;
use loyalty_core::voucher::VoucherSettings;
use loyalty_store::vouchers::{IssueError, IssuedVoucher, Vouchers};
use loyalty_store::Store;
use std::process::ExitCode;

pub(super) fn keys_main(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Generate { out } => {
            let key = keyfile::generate(&out)?;
            let public = loyalty_core::voucher::keys::public_key_base64(&key.verifying_key());
            println!("wrote private key {} (mode 0600)", out.display());
            println!("wrote public key  {}", keyfile::public_path(&out).display());
            println!("public key: {public}");
            println!(
                "set rewards.signing_key_file = \"{}\" in the configuration; the gateway \
                 announces the public key to the CRM, which distributes it to the other stores",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Public { key } => {
            let key = keyfile::load(&key)?;
            println!(
                "{}",
                loyalty_core::voucher::keys::public_key_base64(&key.verifying_key())
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) fn voucher_main(command: VoucherCommand) -> anyhow::Result<ExitCode> {
    match command {
        VoucherCommand::Show { text } => {
            let signed = loyalty_core::voucher::format::decode(text.trim())?;
            let v = &signed.voucher;
            println!("id:          {}", v.id);
            println!("key id:      {}", v.key_id);
            for line in crate::render::slip_lines(v, &jiff::tz::TimeZone::UTC) {
                println!("             {line}");
            }
            println!("valid from:  {}", v.valid_from);
            println!("valid until: {}", v.valid_until);
            if v.customer.is_some() {
                println!("customer:    bound (personal voucher)");
            }
            Ok(ExitCode::SUCCESS)
        }
        VoucherCommand::Goodwill {
            config,
            value,
            customer,
            days,
            png,
            escpos,
        } => {
            let built = match crate::config::load_built(&config) {
                Ok(built) => built,
                Err(errors) => {
                    eprintln!(
                        "{}: {} configuration error(s):",
                        config.display(),
                        errors.len()
                    );
                    for error in errors {
                        eprintln!("  {error}");
                    }
                    return Ok(ExitCode::from(2));
                }
            };
            let issued = goodwill_command(&built, &value, customer.as_deref(), days)?;
            println!("{}", issued.text);
            println!("voucher {} issued", issued.voucher.id);
            print!("{}", crate::render::terminal(&issued.text, true)?);
            let tz = built.raw.store.time_zone();
            if let Some(path) = png {
                std::fs::write(&path, crate::render::png(&issued.text, 8)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("PNG written to {}", path.display());
            }
            if let Some(path) = escpos {
                let options = crate::render::SlipOptions {
                    time_zone: tz,
                    ..Default::default()
                };
                let bytes = crate::render::escpos_slip(&issued.voucher, &issued.text, &options)?;
                std::fs::write(&path, bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("ESC/POS written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `loyalty-gateway voucher goodwill`: opens the store (the daemon must not be running: sled
/// holds an exclusive lock), issues the voucher, returns it.
fn goodwill_command(
    built: &Built,
    value: &str,
    customer_id: Option<&str>,
    days: Option<u32>,
) -> anyhow::Result<IssuedVoucher> {
    use anyhow::Context;
    let config = &built.raw;
    let settings = VoucherSettings::from_config(built)?;
    if settings.store_key.is_none() {
        return Err(IssueError::NoSigningKey.into());
    }
    // Refuse before opening the database: nothing is written for a refused value.
    let decimals = loyalty_core::money::currency_decimals(&settings.currency);
    if let Ok(amount) = Money::parse(value, decimals) {
        if amount > settings.goodwill_max {
            return Err(IssueError::AboveGoodwillMax {
                value: amount.format(decimals),
                max: settings.goodwill_max.format(decimals),
            }
            .into());
        }
    }
    let keys = settings.trusted_keys(built)?;
    let store = Store::open(&config.storage, &config.store.id).context(
        "opening the store's database (stop the gateway first: only one process may open it)",
    )?;
    let vouchers = Vouchers::open(&store, settings, keys)?;
    Ok(vouchers.issue_goodwill(value, customer_id, days, Timestamp::now())?)
}
